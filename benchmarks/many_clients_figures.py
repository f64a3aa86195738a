"""The figures of the scale run (benchmarks/many_clients.py), computed once its runs ended:
from the emulator's request log, the run records and event logs, and the portal database."""

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text

PER_BASE_RATE = 5.0  # Airtable: requests/s per base
PER_TOKEN_RATE = 50.0  # Airtable: requests/s per token owner, across bases
TOKEN_RUN_LIMIT = 10  # dagster.yaml: runs at once per reconcile/token value


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def max_in_any_second(times: Sequence[float]) -> int:
    """The most timestamps in any half-open one-second interval [t, t + 1)."""
    ordered = sorted(times)
    best, first = 0, 0
    for last, moment in enumerate(ordered):
        while moment - ordered[first] >= 1.0:
            first += 1
        best = max(best, last - first + 1)
    return best


def max_concurrent(intervals: Sequence[tuple[float, float]]) -> int:
    """The most intervals overlapping at one instant (an end before a start at a tie)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = best = 0
    for _, delta in events:
        running += delta
        best = max(best, running)
    return best


def cross_client_writes(
    app_url: str, clients: Sequence
) -> tuple[dict[str, int], dict[str | None, int]]:
    """Rows naming a client other than the one whose base their record comes from, by table:
    portal leads (client_id) and every bookkeeping table keyed by client and record;
    bookkeeping rows without a record (runs, marks, coverage) naming no client of the file.
    Then the portal rows per client_id (completeness)."""
    owners = {rid: c.key for c in clients for rid in c.record_ids}
    keys = [c.key for c in clients]
    engine = create_engine(app_url)
    found: dict[str, int] = {}
    try:
        with engine.begin() as conn:
            conn.execute(
                text("CREATE TEMP TABLE bench_owner (record_id text PRIMARY KEY, client text)")
            )
            conn.execute(
                text(
                    "INSERT INTO bench_owner SELECT key, value "
                    "FROM jsonb_each_text(CAST(:owners AS jsonb))"
                ),
                {"owners": json.dumps(owners)},
            )
            found["public.leads"] = conn.execute(
                text(
                    "SELECT count(*) FROM public.leads l LEFT JOIN bench_owner o "
                    "ON o.record_id = l.airtable_record_id "
                    "WHERE o.client IS DISTINCT FROM l.client_id"
                )
            ).scalar_one()
            columns = conn.execute(
                text(
                    "SELECT table_name, array_agg(column_name::text) "
                    "FROM information_schema.columns WHERE table_schema = 'reconcile' "
                    "GROUP BY table_name ORDER BY table_name"
                )
            ).all()
            quote = engine.dialect.identifier_preparer.quote
            for table, names in columns:
                if "client" not in names:
                    continue
                where = f"reconcile.{quote(table)}"
                if "airtable_record_id" in names:
                    statement = (
                        f"SELECT count(*) FROM {where} b LEFT JOIN bench_owner o "
                        "ON o.record_id = b.airtable_record_id "
                        "WHERE b.airtable_record_id IS NOT NULL "
                        "AND o.client IS DISTINCT FROM b.client"
                    )
                    found[f"reconcile.{table}"] = conn.execute(text(statement)).scalar_one()
                else:
                    statement = f"SELECT count(*) FROM {where} WHERE NOT (client = ANY(:keys))"
                    found[f"reconcile.{table}"] = conn.execute(
                        text(statement), {"keys": keys}
                    ).scalar_one()
            per_client = dict(
                conn.execute(
                    text("SELECT client_id, count(*) FROM public.leads GROUP BY client_id")
                ).all()
            )
    finally:
        engine.dispose()
    return found, per_client


@dataclass
class RunPhases:
    """When a run went through the queue and its process, from its event log (epoch s)."""

    client: str
    enqueued: float | None = None
    starting: float | None = None  # the daemon dequeued it and asked the launcher
    started: float | None = None  # its process reported RUN_START
    ended: float | None = None
    steps: dict[str, float] | None = None  # step (without the client prefix) -> seconds


def run_phases(instance, run_ids: Sequence[str]) -> list[RunPhases]:
    from dagster import DagsterEventType as Kind

    kinds = {
        Kind.RUN_ENQUEUED,
        Kind.RUN_STARTING,
        Kind.RUN_START,
        Kind.RUN_SUCCESS,
        Kind.RUN_FAILURE,
        Kind.STEP_START,
        Kind.STEP_SUCCESS,
        Kind.STEP_FAILURE,
    }
    found = []
    for run_id in run_ids:
        run = instance.get_run_by_id(run_id)
        phases = RunPhases(client=run.tags.get("reconcile/client", "?"), steps={})
        step_started: dict[str, float] = {}
        for record in instance.get_records_for_run(run_id, of_type=kinds).records:
            entry = record.event_log_entry
            kind, moment = entry.dagster_event.event_type, entry.timestamp
            if kind == Kind.RUN_ENQUEUED:
                phases.enqueued = moment
            elif kind == Kind.RUN_STARTING:
                phases.starting = moment
            elif kind == Kind.RUN_START:
                phases.started = moment
            elif kind in (Kind.RUN_SUCCESS, Kind.RUN_FAILURE):
                phases.ended = moment
            elif kind == Kind.STEP_START:
                step_started[entry.step_key] = moment
            elif entry.step_key in step_started:
                name = entry.step_key.removeprefix(f"{phases.client}__")
                phases.steps[name] = moment - step_started[entry.step_key]
        found.append(phases)
    return found


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def print_phases(phases: Sequence[RunPhases], per_base: dict[str, list[float]], clients) -> None:
    """Where each run's time went: waiting in the queue, its process starting, its steps, and
    the part of it Airtable requests spanned."""

    def spans(first: str, last: str) -> list[float]:
        return [
            getattr(p, last) - getattr(p, first)
            for p in phases
            if getattr(p, first) is not None and getattr(p, last) is not None
        ]

    launches = sorted(p.starting for p in phases if p.starting is not None)
    gaps = [b - a for a, b in zip(launches, launches[1:], strict=False)]
    base_of = {c.key: c.base_id for c in clients}
    airtable = [
        max(ts) - min(ts) for p in phases if (ts := per_base.get(base_of.get(p.client, ""), []))
    ]
    print(
        "per run, median: "
        f"queued {median(spans('enqueued', 'starting')):.1f} s, "
        f"process start-up (launch to RUN_START) {median(spans('starting', 'started')):.1f} s, "
        f"execution {median(spans('started', 'ended')):.1f} s "
        f"(Airtable requests first to last {median(airtable):.1f} s); "
        f"the daemon launched a run every {median(gaps):.1f} s (median gap)"
    )
    steps: dict[str, list[float]] = {}
    for p in phases:
        for name, seconds in (p.steps or {}).items():
            steps.setdefault(name, []).append(seconds)
    # A check's step is named after its asset's step: `<asset step>_<check>`.
    checks = {n for n in steps if any(n != m and n.startswith(f"{m}_") for m in steps)}
    if steps:
        per_run_checks = [sum((p.steps or {}).get(n, 0.0) for n in checks) for p in phases]
        print(
            "  steps, median: "
            + ", ".join(
                f"{name} {median(v):.1f} s"
                for name, v in sorted(steps.items())
                if name not in checks
            )
            + f"; its {len(checks)} asset checks together {median(per_run_checks):.1f} s"
        )


def run_errors(instance, run_id: str) -> list[str]:
    """What a failed run's event log says, in order: engine events carrying an error (who
    failed it from outside: the launcher, the code server, the monitor), step and run
    failures; one line each (the message, then the error's first line)."""
    from dagster import DagsterEventType as Kind

    kinds = {Kind.ENGINE_EVENT, Kind.STEP_FAILURE, Kind.RUN_FAILURE}
    messages = []
    for record in instance.get_records_for_run(run_id, of_type=kinds).records:
        entry = record.event_log_entry
        data = entry.dagster_event.event_specific_data if entry.dagster_event else None
        error = getattr(data, "error", None)
        kind = entry.dagster_event.event_type
        if kind == Kind.ENGINE_EVENT and error is None:
            continue  # progress, not a cause
        line = (entry.message or "").strip().splitlines()[:1]
        if error is not None:
            line += error.message.strip().splitlines()[:1]
        messages.append(f"{kind.value}: " + " / ".join(line))
    return messages


@dataclass
class Outcome:
    """What the scale run leaves to report."""

    clients: Sequence  # many_clients.Client
    leads: int  # per client
    records: Sequence  # dagster RunRecord, one per submitted run
    finished: bool
    submitted: float  # epoch s
    load: tuple[float, float]  # 1-minute load average at submission and at the end
    request_log: dict  # the emulator's, with entries
    phases: Sequence[RunPhases]
    crossed: dict[str, int]  # table -> rows written for the wrong client
    rows_per_client: dict[str | None, int]
    failures: dict[str, list[str]]  # run id -> its error lines
    daemon_log: Path


def report(outcome: Outcome) -> int:
    """Print the figures; 0 when no 429, no cross-client write, every run succeeded and every
    client's leads reached the portal."""
    import dagster as dg

    clients, records = outcome.clients, outcome.records
    entries = [e for e in outcome.request_log["entries"] if e["base"] is not None]
    times = [e["time"] for e in entries]
    total = len(entries)
    rate_limited = sum(1 for e in entries if e["status"] == 429)
    per_base: dict[str, list[float]] = {}
    for entry in entries:
        per_base.setdefault(entry["base"], []).append(entry["time"])
    floor = min(len(clients) * PER_BASE_RATE, PER_TOKEN_RATE)
    busy = (max(times) - min(times)) if len(times) > 1 else 0.0
    aggregate = total / busy if busy > 0 else 0.0
    base_peaks = {base: max_in_any_second(ts) for base, ts in per_base.items()}
    succeeded = sum(1 for r in records if r.dagster_run.status == dg.DagsterRunStatus.SUCCESS)
    failed = sum(1 for r in records if r.dagster_run.status == dg.DagsterRunStatus.FAILURE)
    spans = [(r.start_time, r.end_time) for r in records if r.start_time and r.end_time]
    ends = [r.end_time for r in records if r.end_time]
    wall = (max(ends) - outcome.submitted) if ends else float("nan")
    crossed = sum(outcome.crossed.values())

    print()
    print(
        f"workload: {len(clients)} clients × {outcome.leads} leads, one token owner, "
        f"{len(records)} reconcile runs through the queue (dagster-daemon, DefaultRunLauncher)"
    )
    print(
        f"host: {os.cpu_count()} CPUs; load average {outcome.load[0]:.1f} at submission, "
        f"{outcome.load[1]:.1f} at the end (other processes on this host move the figures)"
    )
    print(
        f"aggregate Airtable rate during the busy period: {aggregate:.1f} req/s "
        f"({total} requests in {busy:.1f} s, first to last request)"
    )
    print(
        f"floor: min({len(clients)} × {PER_BASE_RATE:g}, {PER_TOKEN_RATE:g}) = {floor:g} req/s"
        f"  ratio: {aggregate / floor:.3f}"
    )
    print(f"total requests: {total}  429 responses: {rate_limited}")
    for entry in [e for e in entries if e["status"] == 429][:10]:
        moment, base = entry["time"], entry["base"]
        before = sum(1 for t in per_base.get(base, []) if moment - 1.0 < t <= moment)
        print(
            f"  429 at +{moment - min(times):.2f} s on {base} (limit: {entry['limit']}): "
            f"{before} of its requests arrived in the second up to it"
        )
    print(
        f"most requests in any second: per base {max(base_peaks.values(), default=0)} "
        f"(limit {PER_BASE_RATE:g}; bases reaching it: "
        f"{sum(1 for p in base_peaks.values() if p >= PER_BASE_RATE)}/{len(base_peaks)}), "
        f"token owner {max_in_any_second(times)} (limit {PER_TOKEN_RATE:g})"
    )
    print(
        f"runs: {succeeded} succeeded, {failed} failed, "
        f"{len(records) - succeeded - failed} unfinished; wall time {wall:.1f} s "
        "(submission to the last run's end)"
    )
    print(
        f"most runs running at once: {max_concurrent(spans)} "
        f"(token limit {TOKEN_RUN_LIMIT}; from the run records' start and end times)"
    )
    print_phases(outcome.phases, per_base, clients)
    counts = sorted(set(outcome.rows_per_client.values()))
    print(
        f"portal rows per client: {'/'.join(map(str, counts)) or 'none'} "
        f"({len(outcome.rows_per_client)} clients; expected {outcome.leads} each)"
    )
    print(
        f"cross-client writes: {crossed} ("
        + ", ".join(f"{table} {n}" for table, n in outcome.crossed.items())
        + ")"
    )
    for run_id, messages in outcome.failures.items():
        print(f"  run {run_id}:")
        for message in messages or ["no failure event"]:
            print(f"    {message}")
    if not outcome.finished:
        print(f"  runs still unfinished; daemon log tail:\n{tail(outcome.daemon_log)}")

    complete = len(outcome.rows_per_client) == len(clients) and counts == [outcome.leads]
    ok = outcome.finished and rate_limited == 0 and crossed == 0 and failed == 0 and complete
    print("OK" if ok else "FAILED")
    return 0 if ok else 1
