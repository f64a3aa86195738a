"""Benchmark (issue 15, goal 2 by base size): an idle tick's wall time beyond its request, as the
base grows.

For each base size (default 20k, 50k, 100k records; `--sizes`, `--quick`), a fresh deployment in
steady state, prepared as `reconcile_throughput.py` prepares it (the base seeded in the emulator,
every record synced into embedded PostgreSQL, the tables vacuumed and analyzed), then one cold
Dagster run (not counted) and `--runs` warm idle runs of the client's job, at Airtable's real
5 requests/s. Printed per size, medians of the warm runs:

  wall          the run, submitted to finished
  in request    the idle tick's one listing, from send to answer: the emulator filters every
                record of the base with the window's formula, so this grows with the base (on
                Airtable it is Airtable's time, which goal 2 leaves out)
  beyond        wall − in request, against goal 2's ≤ 1 s (marked met / NOT met)
  whole-table   the checks that read every lead on every run (`one_lead_per_airtable_record`,
                `no_duplicate_contacts`): an idle run's only work that grows with the table

and a least-squares line of `beyond` over the sizes: its growth per 10k records.

Run:   .venv/bin/python benchmarks/idle_by_base_size.py            (20k, 50k, 100k; ~3 min)
       .venv/bin/python benchmarks/idle_by_base_size.py --quick    (2k, 5k, 10k; ~1 min)
       .venv/bin/python benchmarks/idle_by_base_size.py --sizes 10000 200000
"""

import argparse
import datetime as dt
import statistics
import sys
import time
import types
import warnings
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reconcile_throughput as throughput  # noqa: E402
from full_reconcile_memory import least_squares  # noqa: E402

DEFAULT_SIZES = (20_000, 50_000, 100_000)
QUICK_SIZES = (2_000, 5_000, 10_000)
PER = 10_000  # growth is quoted per this many records
WHOLE_TABLE_CHECKS = ("duplicate_leads", "duplicate_contacts")


@dataclass
class IdleFigures:
    records: int
    walls: list[float]
    in_request: float
    whole_table: float
    requests: int

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def beyond(self) -> float:
        return self.wall - self.in_request


class WholeTableClock:
    """Seconds spent in the whole-table invariants (the Dagster checks look them up in
    `invariants` at call time). Installed once per process, after a set-up has exported its
    deployment's project (importing the code location earlier would load another): a function
    wrapped twice would count twice."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(WHOLE_TABLE_CHECKS, 0.0)
        self.installed = False

    def install(self) -> None:
        if self.installed:
            return
        from reconcile_pipeline.engine import invariants

        throughput.instrument()
        for name in WHOLE_TABLE_CHECKS:
            original = getattr(invariants, name)

            def timed(*args, _original=original, _name=name, **kwargs):
                started = time.perf_counter()
                try:
                    return _original(*args, **kwargs)
                finally:
                    self.seconds[_name] += time.perf_counter() - started

            setattr(invariants, name, timed)
        self.installed = True

    def reset(self) -> None:
        self.seconds = dict.fromkeys(WHOLE_TABLE_CHECKS, 0.0)


def measure_size(records: int, runs: int, clock: WholeTableClock) -> IdleFigures:
    """Idle runs through Dagster on a fresh deployment of `records` records."""
    found: list[IdleFigures] = []

    def idle_runs(args, scenarios, bench) -> None:
        clock.install()
        bench.dagster_run(bench.tick_keys(dt.datetime.now(dt.UTC)))  # cold: not counted
        measured, whole_table = [], []
        for _ in range(runs):
            clock.reset()
            measured.append(bench.dagster_run(bench.tick_keys(dt.datetime.now(dt.UTC))))
            whole_table.append(sum(clock.seconds.values()))
        found.append(
            IdleFigures(
                records=records,
                walls=[m.wall for m in measured],
                in_request=statistics.median(
                    m.stages.get("airtable requests", 0.0) for m in measured
                ),
                whole_table=statistics.median(whole_table),
                requests=max(m.total_requests for m in measured),
            )
        )

    args = types.SimpleNamespace(
        records=min(records, 1000),  # not pulled here; the set-up only checks it
        portal_edits=0,
        backfill_hours=6,
        backfill_records=records,
        idle_runs=runs,
        deployment_days=30,
        seeds_slice_pull=0,
        profile=False,
    )
    # Each size gets its own home, database and emulator; the code location is loaded once per
    # process, from the first size's project file (the same file for every size).
    throughput.run(args, measure_with=idle_runs)
    return found[0]


def print_results(results: list[IdleFigures], runs: int) -> None:
    target = throughput.IDLE_BEYOND_TARGET
    print(
        f"\nIdle tick by base size, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, through Dagster, "
        f"medians of {runs} warm runs each; emulator at {throughput.RATE:g} req/s per base"
    )
    header = (
        "records",
        "requests",
        "wall",
        "in request",
        f"beyond (≤ {target:g} s)",
        "whole-table checks",
    )
    rows = [
        (
            f"{r.records:,}",
            str(r.requests),
            f"{r.wall:.2f} s ({', '.join(f'{w:.2f}' for w in r.walls)})",
            f"{r.in_request:.2f} s",
            f"{r.beyond:.2f} s: {throughput.mark(r.beyond <= target)}",
            f"{r.whole_table:.3f} s",
        )
        for r in results
    ]
    throughput.print_table(rows, header)
    if len(results) > 1:
        intercept, slope = least_squares([(r.records, r.beyond) for r in results])
        _, checks = least_squares([(r.records, r.whole_table) for r in results])
        print(
            f"\nbeyond the request: {intercept:.2f} s + {slope * PER:.3f} s per {PER:,} records "
            f"(least squares), of which the whole-table checks {checks * PER:.3f} s per {PER:,}"
        )


def main() -> int:
    warnings.filterwarnings("ignore", message=".*is currently in (beta|preview).*")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2k, 5k and 10k records")
    parser.add_argument("--sizes", type=int, nargs="+", help="base sizes in records")
    parser.add_argument("--runs", type=int, default=3, help="warm idle runs per size [3]")
    args = parser.parse_args()
    sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)
    clock = WholeTableClock()
    results = []
    for records in sizes:
        throughput.progress(f"base of {records:,} records")
        results.append(measure_size(records, args.runs, clock))
    print_results(results, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
