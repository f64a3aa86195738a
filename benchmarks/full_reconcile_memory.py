"""Benchmark (issue 15, goal 6): the full reconcile's peak memory by base size.

For each base size (default 10k, 50k, 100k records; `--sizes`, `--quick`), a fresh portal
database and a fresh emulator base seeded with that many demo leads, then two full reconciles
(the engine's `full_reconcile`, as the Dagster op calls it), each in a child process of its
own that runs nothing else:

  first    onto an empty portal: every record inserted
  drifted  the portal in sync, then 1% of leads drifted on an Airtable-owned column, 0.1% of
           lead rows deleted and 0.1% of leads added that Airtable does not have (soft-deleted)

The figure is the child's peak resident set (its ru_maxrss, read with wait4 by a small launcher
process started first: Linux carries a parent's high-water mark into a child's ru_maxrss through
vfork and exec, so children of this process, grown by seeding the base, would report its peak),
next to a baseline child that only imports the engine, connects to PostgreSQL and reads the
Airtable schema: the difference is what the reconcile itself costs. Growth per 10k records is
the slope from the previous size (from the baseline for the first), and a least-squares line
over all sizes says how the peak grows with the base. Issue 15's target (≤ 256 MiB at 100k
records) is marked met / NOT met; the figure before streaming (465 MiB) is printed for reference
only, not re-measured. A missed target does not fail the script (it exits non-zero on errors).

The emulator runs in a process of its own (`_emulator_process.py`) with its rate limit OFF:
memory, not pacing, is measured, so the wall seconds are not the API-paced duration (at
Airtable's 5 requests/s a 100k listing alone takes 200 s). Everything lives in a temporary
RECONCILE_HOME (embedded PostgreSQL): the user's data is never touched.

Run:   .venv/bin/python benchmarks/full_reconcile_memory.py            (10k, 50k, 100k; ~3 min)
       .venv/bin/python benchmarks/full_reconcile_memory.py --quick    (2k, 5k, 10k; ~30 s)
       .venv/bin/python benchmarks/full_reconcile_memory.py --sizes 20000 200000
"""

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# Constants only (the child imports this file too: it must stay light).
from reconcile_throughput import BASE, CLIENT, TABLE_NAME, TOKEN_ENV  # noqa: E402

TARGET_MIB = 256
TARGET_RECORDS = 100_000
BEFORE_STREAMING_MIB = 465  # issue 15: the listing, every lead and every record held at once
DEFAULT_SIZES = (10_000, 50_000, 100_000)
QUICK_SIZES = (2_000, 5_000, 10_000)
PER = 10_000  # growth is quoted per this many records
DRIFT_EVERY = 100  # one lead in this many drifts on an Airtable-owned column
GONE_EVERY = 1000  # one lead row in this many is deleted; as many leads Airtable lacks are added


@dataclass(frozen=True)
class Measured:
    records: int
    run: str
    peak_mib: float
    wall: float
    figures: dict


# ----- the child: one full reconcile and nothing else ------------------------------------------


def child(mode: str) -> int:
    """Build the engine's Repository and client from the environment, as the Dagster op does;
    `reconcile` then runs one full reconcile, `baseline` stops there. Prints one JSON line."""
    from sqlalchemy import create_engine, text

    from reconcile_pipeline.airtable.client import AirtableClient
    from reconcile_pipeline.config.load import load
    from reconcile_pipeline.engine.context import RunContext
    from reconcile_pipeline.engine.full_reconcile import full_reconcile
    from reconcile_pipeline.engine.repository import Repository
    from reconcile_pipeline.engine.validate import resolve_mapping

    (mapping,) = load(os.environ["RECONCILE_CONFIG"]).mappings(CLIENT)
    engine = create_engine(os.environ["DATABASE_URL"])
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    client = AirtableClient(
        os.environ[TOKEN_ENV],
        BASE,
        mapping.airtable_table,
        endpoint_url=os.environ["AIRTABLE_ENDPOINT_URL"],
        requests_per_second=0,
        fields_by_id=mapping.fields_by_id,
    )
    repo = Repository(engine, resolve_mapping(mapping, client.table_schema()))
    figures: dict = {}
    if mode == "reconcile":
        started = time.perf_counter()
        result = full_reconcile(
            repo, client, RunContext(run_id=f"bench-memory-{os.getpid()}"), lock_name=BASE
        )
        figures = {
            "wall": time.perf_counter() - started,
            "compared": result.drift.records_compared,
            "drifted": result.drift.drifted_records,
            "missing_in_postgres": result.drift.missing_in_postgres,
            "missing_in_airtable": result.drift.missing_in_airtable,
            "inserted": result.pull.inserted,
            "updated": result.pull.updated,
            "soft_deleted": result.sweep.soft_deleted,
            "requests": result.requests,
        }
    client.close()
    engine.dispose()
    print(json.dumps(figures))
    return 0


def run_child(mode: str, logs: Path, env: dict[str, str]) -> tuple[float, dict]:
    """(peak RSS in MiB, the child's figures) of one child process, from its own rusage."""
    logs.mkdir(parents=True)
    out, err = logs / "stdout", logs / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", mode],
            stdout=stdout,
            stderr=stderr,
            env=env,
        )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = err.read_text(errors="replace").strip().splitlines()[-15:]
        raise RuntimeError(f"the {mode} child failed ({process.returncode}):\n" + "\n".join(tail))
    return usage.ru_maxrss / 1024, json.loads(out.read_text().strip().splitlines()[-1])


# ----- the launcher: starts the children from a process that stays small ------------------------


def serve_launcher() -> int:
    """Run the children asked for on stdin (one JSON line each), answering on stdout.

    Linux carries the address space's high-water mark through exec into the new program's
    ru_maxrss, and Python's subprocess starts children with vfork: a child started by the
    parent (grown by seeding the base) would report the parent's peak. This process only
    imports the standard library, so its own small peak is below every child's."""
    for line in sys.stdin:
        request = json.loads(line)
        try:
            peak, figures = run_child(request["mode"], Path(request["logs"]), request["env"])
            answer = {"peak_mib": peak, "figures": figures}
        except Exception as exc:  # reported by the parent
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)
    return 0


class Launcher:
    """The parent's handle on the launcher process."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--launcher"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, mode: str, logs: Path) -> tuple[float, dict]:
        """One child in the current environment: (peak RSS in MiB, its figures)."""
        request = {"mode": mode, "logs": str(logs), "env": dict(os.environ)}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline() or '{"error": "the launcher died"}')
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer["peak_mib"], answer["figures"]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(30)


# ----- the parent: bases, databases, children ------------------------------------------------

STARTED = time.perf_counter()


def progress(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:6.1f} s] {message}", flush=True)


def fresh_database(admin_url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        admin_url.replace("postgresql+psycopg", "postgresql", 1), autocommit=True
    ) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


@contextlib.contextmanager
def portal_and_base(server, home: Path, config: Path, records: int) -> Iterator[str]:
    """A fresh migrated portal database and a fresh emulator (rate limit off) whose base holds
    `records` demo leads; the children's environment points at both. Yields the database URL."""
    from _emulator_process import emulator_process
    from many_clients import prepare_database
    from reconcile_throughput import environment

    from reconcile_pipeline.demo.seed_data import demo_leads

    database = f"bench_memory_{records}"
    fresh_database(server.admin_url, database)
    app_url = server.database_url(database, "psycopg")
    prepare_database(app_url, config)
    with emulator_process(0) as emulator:
        if records:
            fields, created, modified = demo_leads(records, dt.datetime.now(dt.UTC))
            emulator.seed_records(
                BASE, TABLE_NAME, fields, created_time=created, modified_time=modified
            )
        env = {
            "DATABASE_URL": app_url,
            "RECONCILE_HOME": str(home),
            "RECONCILE_CONFIG": str(config),
            TOKEN_ENV: emulator.token,
            "AIRTABLE_ENDPOINT_URL": emulator.url,
        }
        with environment(env):
            yield app_url


def drift_portal(app_url: str, records: int) -> None:
    """Drift only a full reconcile repairs: writes tagged as the reconciler's (no capture)."""
    from sqlalchemy import create_engine, text

    from reconcile_pipeline.db.schema_names import ORIGIN_RECONCILER, ORIGIN_SETTING

    engine = create_engine(app_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text("SELECT set_config(:name, :value, true)"),
                {"name": ORIGIN_SETTING, "value": ORIGIN_RECONCILER},
            )
            conn.execute(
                text("UPDATE leads SET status = 'Drifted' WHERE id % :every = 0"),
                {"every": DRIFT_EVERY},
            )
            conn.execute(text("DELETE FROM leads WHERE id % :every = 1"), {"every": GONE_EVERY})
            conn.execute(
                text(
                    "INSERT INTO leads (airtable_record_id, email) "
                    "SELECT 'recBenchGone' || lpad(n::text, 6, '0'), "
                    "'gone' || n || '@example.com' FROM generate_series(1, :count) AS n"
                ),
                {"count": max(1, records // GONE_EVERY)},
            )
    finally:
        engine.dispose()


def measure_size(
    launcher: Launcher, server, home: Path, config: Path, records: int
) -> list[Measured]:
    """The two full reconciles of a base of `records` records, each in its own child."""
    measured = []
    with portal_and_base(server, home, config, records) as app_url:
        for run in ("first", "drifted"):
            if run == "drifted":
                drift_portal(app_url, records)
            progress(f"{records:,} records: the {run} full reconcile")
            peak, figures = launcher.run("reconcile", home / "logs" / f"{records}-{run}")
            measured.append(Measured(records, run, peak, figures.pop("wall"), figures))
    return measured


def baseline(launcher: Launcher, server, home: Path, config: Path) -> float:
    """The peak RSS of a child that imports the engine, connects and reads the schema only."""
    with portal_and_base(server, home, config, 0):
        return launcher.run("baseline", home / "logs" / "baseline")[0]


# ----- figures --------------------------------------------------------------------------------


def least_squares(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """(intercept, slope) of the line through `points` (x, y) closest in squares."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else 0.0
    return mean_y - slope * mean_x, slope


def print_results(base_mib: float, results: list[Measured]) -> None:
    print(f"\nbaseline child (imports, PostgreSQL connection, schema read): {base_mib:.1f} MiB")
    print(
        f"\n{'records':>9}  {'run':<8} {'peak RSS MiB':>12} {'above baseline':>14} "
        f"{'growth/10k MiB':>14} {'wall s':>7}   drift report, repairs"
    )
    for run in ("first", "drifted"):
        previous = (0, base_mib)
        for m in (r for r in results if r.run == run):
            growth = (m.peak_mib - previous[1]) / ((m.records - previous[0]) / PER)
            f = m.figures
            print(
                f"{m.records:>9,}  {m.run:<8} {m.peak_mib:>12.1f} {m.peak_mib - base_mib:>14.1f} "
                f"{growth:>14.2f} {m.wall:>7.1f}   compared {f['compared']:,}, drifted "
                f"{f['drifted']:,}, missing in PG {f['missing_in_postgres']:,} / in Airtable "
                f"{f['missing_in_airtable']:,}; inserted {f['inserted']:,}, updated "
                f"{f['updated']:,}, soft-deleted {f['soft_deleted']:,}; {f['requests']:,} requests"
            )
            previous = (m.records, m.peak_mib)
    print()
    for run in ("first", "drifted"):
        points = [(r.records / PER, r.peak_mib) for r in results if r.run == run]
        if len(points) > 1:
            intercept, slope = least_squares(points)
            print(
                f"{run}: peak ≈ {intercept:.0f} MiB + {slope:.2f} MiB per 10k records "
                "(least squares over the sizes)"
            )
    at_target = [r for r in results if r.records == TARGET_RECORDS]
    if at_target:
        peak = max(r.peak_mib for r in at_target)
        verdict = "met" if peak <= TARGET_MIB else "NOT met"
        print(
            f"target: peak ≤ {TARGET_MIB} MiB at {TARGET_RECORDS:,} records: {verdict} "
            f"(highest of the two runs: {peak:.1f} MiB)"
        )
    else:
        print(f"target: peak ≤ {TARGET_MIB} MiB at {TARGET_RECORDS:,} records: not measured")
    print(
        f"before streaming: {BEFORE_STREAMING_MIB} MiB at {TARGET_RECORDS:,} records "
        "(issue 15's figure, for reference only; not re-measured here)"
    )
    print(
        "note: the emulator ran unthrottled (rate limit off): memory, not pacing, is measured; "
        "wall s is not the API-paced duration."
    )


def run(sizes: Sequence[int]) -> None:
    launcher = Launcher()  # first, while this process is small
    from reconcile_throughput import project_file

    from reconcile_pipeline.db.embedded import EmbeddedPostgres

    home = Path(tempfile.mkdtemp(prefix="rp-bench-memory-"))
    progress(f"setting up in {home}; sizes {', '.join(f'{s:,}' for s in sizes)}")
    try:
        config = project_file(home / "reconcile.yaml")
        with EmbeddedPostgres(home).running() as server:
            base_mib = baseline(launcher, server, home, config)
            results = [
                m for size in sizes for m in measure_size(launcher, server, home, config, size)
            ]
        print_results(base_mib, results)
    finally:
        launcher.close()
        shutil.rmtree(home, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", help="records per base [10000 50000 100000]"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (2k, 5k, 10k)")
    parser.add_argument("--child", choices=("baseline", "reconcile"), help=argparse.SUPPRESS)
    parser.add_argument("--launcher", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    if args.launcher:
        return serve_launcher()
    sizes = sorted(set(args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)))
    if any(size < 1 for size in sizes):
        parser.error("sizes are positive numbers of records")
    run(sizes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
