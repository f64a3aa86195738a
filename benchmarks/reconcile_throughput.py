"""Benchmark: pull + push against the emulator at Airtable's real 5 requests/s.

Seeds the emulator directly (not measured), edits 10k records in Airtable and 1k portal fields,
then runs stage 1 (pull + merge) and stage 2 (push) exactly as a reconcile run does, and prints
requests vs the floor ⌈pulled/100⌉ + ⌈pushed/10⌉ (+ re-reads), wall time vs floor/5 s, stage 1
PostgreSQL rows/s and its share of wall time (next to this machine's floor for stage 1, measured
in the same run), and peak RSS. The seeds' algorithm (one GET and one
PATCH per pushed record, one SELECT + UPDATE per pulled record) runs on a smaller slice, its
figures scaled linearly to the same workload (said so in the output).

Run: .venv/bin/python benchmarks/reconcile_throughput.py [--records 10000 --portal-edits 1000]
"""

import argparse
import datetime as dt
import json
import math
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, event, text

from reconcile_pipeline.airtable.client import AirtableClient
from reconcile_pipeline.config.load import DEMO_FILE, load
from reconcile_pipeline.db.embedded import EmbeddedPostgres
from reconcile_pipeline.db.migrate import upgrade
from reconcile_pipeline.demo.seed_data import demo_leads
from reconcile_pipeline.emulator.server import run_emulator
from reconcile_pipeline.engine.context import RunContext
from reconcile_pipeline.engine.pull import apply_records
from reconcile_pipeline.engine.repository import Repository
from reconcile_pipeline.engine.stages import fetch_window, merge_snapshot, push_window

BASE, TABLE = "appDemoLeads00001", "Leads"
# The demo project file's Leads table: fields addressed by Airtable field id.
LEADS_MAPPING = next(m for m in load(DEMO_FILE).mappings() if m.name == "leads")
RATE = 5.0
TARGET_REQUESTS, TARGET_WALL, TARGET_ROWS = 1.05, 1.10, 50_000


class StatementTimer:
    """Time spent inside PostgreSQL statements (client round trip included), per statement
    kind (its first words), and the rows the writes affected."""

    def __init__(self, engine) -> None:
        self.seconds = 0.0
        self.enabled = False
        self.by_kind: dict[str, float] = {}
        self.rows_written = 0
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn, cursor, statement, parameters, context, executemany):
        conn.info["bench_started"] = time.perf_counter()

    def _after(self, conn, cursor, statement, parameters, context, executemany):
        if not self.enabled:
            return
        spent = time.perf_counter() - conn.info.pop("bench_started")
        self.seconds += spent
        words = statement.split()
        kind = " ".join(words[:3] if words[0] in ("INSERT", "UPDATE") else words[:1])
        self.by_kind[kind] = self.by_kind.get(kind, 0.0) + spent
        if words[0] in ("INSERT", "UPDATE") and cursor.rowcount > 0:
            self.rows_written += cursor.rowcount


def mandatory_writes_floor(engine, record_ids: list[str]) -> float:
    """Seconds this machine's PostgreSQL takes for the three writes stage 1 cannot skip when
    Airtable changed every record: each lead, its sync-state clock and one history row, as bare
    set-based statements over the same rows (no staging, no join, no locks), then rolled back.
    A stage 1 that keeps the audit and the stale guard, written this way, pays at least this."""
    ids = json.dumps(record_ids)
    with engine.connect() as conn:
        transaction = conn.begin()
        conn.execute(text("SET LOCAL reconcile.origin = 'reconciler'"))
        started = time.perf_counter()
        conn.execute(
            text(
                "UPDATE leads SET sms_sent_count = coalesce(sms_sent_count, 0) + 1 "
                "WHERE airtable_record_id IN "
                "(SELECT jsonb_array_elements_text(CAST(:ids AS jsonb)))"
            ),
            {"ids": ids},
        )
        conn.execute(
            text(
                "UPDATE reconcile.sync_state SET airtable_modified_at = now() "
                "WHERE table_key = 'leads' AND airtable_record_id IN "
                "(SELECT jsonb_array_elements_text(CAST(:ids AS jsonb)))"
            ),
            {"ids": ids},
        )
        conn.execute(
            text(
                "INSERT INTO reconcile.change_history (table_key, airtable_record_id, field, "
                "old_value, new_value, direction, reason, run_id) "
                "SELECT 'leads', r, 'sms_sent_count', '1', '2', 'airtable_to_postgres', "
                "'airtable_owned', 'floor' FROM jsonb_array_elements_text(CAST(:ids AS jsonb)) r"
            ),
            {"ids": ids},
        )
        seconds = time.perf_counter() - started
        transaction.rollback()
    return seconds


def mandatory_reads_floor(engine, run_id: str) -> float:
    """Seconds to read what stage 1 merges inside PostgreSQL, nothing sent to the client: each
    mapped field of the run's snapshot rows, joined with their leads and sync state. Even a
    merge written entirely in SQL reads this much on top of the mandatory writes."""
    names = LEADS_MAPPING.airtable_field_names
    extract = " + ".join(f"coalesce(length(s.fields ->> :f{i}), 0)" for i in range(len(names)))
    with engine.connect() as conn:
        started = time.perf_counter()
        conn.execute(
            text(
                f"SELECT count(*), sum({extract}) FROM reconcile.airtable_snapshots s "
                "JOIN leads l ON l.airtable_record_id = s.airtable_record_id "
                "JOIN reconcile.sync_state st ON st.table_key = s.table_key "
                "AND st.airtable_record_id = s.airtable_record_id "
                "WHERE s.table_key = 'leads' AND s.run_id = :run"
            ),
            {"run": run_id, **{f"f{i}": name for i, name in enumerate(names)}},
        ).one()
        return time.perf_counter() - started


def api_requests(emulator) -> int:
    return sum(n for key, n in emulator.request_log()["counts"].items() if "/meta/" not in key)


def baseline(engine, emulator, client, pulled_ids, pushed_ids) -> tuple[int, float]:
    """The seeds' algorithm on a slice: per-record round trips on both sides."""
    emulator.reset_request_log()
    started = time.monotonic()
    records = [r for page in client.iter_all() for r in page if r["id"] in set(pulled_ids)]
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL reconcile.origin = 'reconciler'"))
        for record in records:
            conn.execute(
                text("SELECT * FROM leads WHERE airtable_record_id = :r"), {"r": record["id"]}
            ).all()
            conn.execute(
                text(
                    "UPDATE leads SET sms_sent_count = :n, updated_at = now() "
                    "WHERE airtable_record_id = :r"
                ),
                {"n": record["fields"].get("SMS Sent Count"), "r": record["id"]},
            )
    for rid in pushed_ids:
        client.table.get(rid)
        client.table.update(rid, {"Claimed By": "baseline"})
    return api_requests(emulator), time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--portal-edits", type=int, default=1_000)
    parser.add_argument("--baseline-pull", type=int, default=500)
    parser.add_argument("--baseline-push", type=int, default=25)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="rp-bench-"))
    with EmbeddedPostgres(home).running() as server, run_emulator(rate_limit=RATE) as emulator:
        url = server.database_url("reconcile")
        upgrade(url)
        engine = create_engine(url)
        repo = Repository(engine, LEADS_MAPPING)
        repo.register_tracked_columns()
        now = dt.datetime.now(dt.UTC)
        leads, created, _ = demo_leads(args.records, now)
        ids = emulator.seed_records(
            BASE,
            TABLE,
            leads,
            created_time=[now - dt.timedelta(days=2)] * len(leads),
            modified_time=[now - dt.timedelta(days=1)] * len(leads),
        )
        by_label = {spec.label: spec.airtable_name for spec in LEADS_MAPPING.fields}
        initial = [
            {**r, "fields": {by_label.get(k, k): v for k, v in r["fields"].items()}}
            for r in emulator.all_records(BASE, TABLE)
        ]
        apply_records(repo, initial, RunContext(run_id="initial"))
        with engine.begin() as conn:  # a deployment in steady state: pulls covered up to now
            conn.execute(
                text(
                    "INSERT INTO reconcile.high_water_marks (table_key, mark) VALUES (:t, :mark)"
                ),
                {"t": LEADS_MAPPING.name, "mark": now - dt.timedelta(minutes=20)},
            )
        for n, rid in enumerate(ids):  # 10k Airtable edits (an SMS automation)
            emulator.update_record_fields(BASE, TABLE, rid, {"SMS Sent Count": 10 + n % 7})
        with engine.begin() as conn:  # 1k portal edits (claims), untagged like the portal
            conn.execute(
                text(
                    "UPDATE leads SET claimed_by = 'rep-' || id::text "
                    "WHERE airtable_record_id = ANY(:ids)"
                ),
                {"ids": ids[: args.portal_edits]},
            )
        client = AirtableClient(
            emulator.token,
            BASE,
            LEADS_MAPPING.airtable_table,
            endpoint_url=emulator.url,
            requests_per_second=RATE,
            fields_by_id=True,
        )
        client.table_schema()  # metadata read once at start, outside the measurement
        emulator.reset_request_log()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        run = RunContext(
            run_id=f"bench-{uuid.uuid4().hex[:8]}",
            window_start=now - dt.timedelta(minutes=20),
            window_end=now + dt.timedelta(minutes=20),
        )
        started = time.monotonic()
        fetched = fetch_window(repo, client, run, overlap=dt.timedelta(minutes=5))
        timer = StatementTimer(engine)
        timer.enabled = True
        stage1_started = time.monotonic()
        pulled = merge_snapshot(repo, run)
        stage1_seconds = time.monotonic() - stage1_started
        timer.enabled = False
        pushed = push_window(repo, client, run, lock_name="bench")
        wall = time.monotonic() - started
        requests = api_requests(emulator)
        rate_limited = sum(1 for e in emulator.request_log()["entries"] if e["status"] == 429)

        floor = (
            math.ceil(len(fetched.records) / 100)
            + math.ceil(pushed.updated / 10)
            + pushed.reread_requests
        )
        wall_floor = floor / RATE
        rows_per_second = pulled.pulled / timer.seconds
        stage_rows_per_second = pulled.pulled / stage1_seconds
        print(
            f"workload: {len(fetched.records)} records pulled, {pushed.updated} leads pushed "
            f"({pushed.reread_requests} re-read requests)"
        )
        print(
            f"requests: {requests}  floor: {floor}  ratio: {requests / floor:.3f} "
            f"(target ≤ {TARGET_REQUESTS})"
        )
        print(
            f"wall time: {wall:.1f} s  floor: {wall_floor:.1f} s at {RATE:g} req/s  ratio: "
            f"{wall / wall_floor:.3f} (target ≤ {TARGET_WALL}); 429 responses: {rate_limited}"
        )
        print(
            f"stage 1 PostgreSQL statements: {pulled.pulled} rows in {timer.seconds:.2f} s = "
            f"{rows_per_second:,.0f} rows/s (target ≥ {TARGET_ROWS:,})"
        )
        slowest = sorted(timer.by_kind.items(), key=lambda item: -item[1])[:5]
        print("  of which: " + ", ".join(f"{kind} {seconds:.3f} s" for kind, seconds in slowest))
        print(
            f"  rows those statements wrote (leads, sync state, history, …): "
            f"{timer.rows_written:,} = {timer.rows_written / timer.seconds:,.0f} rows/s"
        )
        floor_seconds = mandatory_writes_floor(engine, ids)
        read_seconds = mandatory_reads_floor(engine, run.run_id)
        print(
            f"  this machine's floor for those records: the three writes stage 1 cannot skip "
            f"(lead, sync-state clock, history row) as bare statements take {floor_seconds:.2f} s "
            f"= {len(ids) / floor_seconds:,.0f} records/s; with reading what it merges "
            "(mapped snapshot fields ⨝ leads ⨝ sync state, inside PostgreSQL) "
            f"{read_seconds:.2f} s more "
            f"= {len(ids) / (floor_seconds + read_seconds):,.0f} records/s; our statements: "
            f"{timer.seconds / (floor_seconds + read_seconds):.2f}× that floor"
        )
        print(
            f"stage 1 whole (PostgreSQL + per-field merge in Python): {stage1_seconds:.2f} s = "
            f"{stage_rows_per_second:,.0f} rows/s; {stage1_seconds / wall:.1%} of wall time"
        )
        print(
            f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB "
            f"(before the run: {rss_before / 1024:.0f} MiB)"
        )

        slice_pull, slice_push = ids[: args.baseline_pull], ids[-args.baseline_push :]
        base_requests, base_wall = baseline(engine, emulator, client, slice_pull, slice_push)
        scale_requests = math.ceil(args.records / 100) + 2 * pushed.updated
        # Per-record cost measured on the slice, scaled linearly to the full workload.
        push_share = 2 * len(slice_push) / RATE
        pull_share = max(base_wall - push_share, 0.0)
        scaled_wall = pull_share * args.records / len(slice_pull) + 2 * pushed.updated / RATE
        print(
            f"seeds' algorithm on a slice ({len(slice_pull)} pulled, {len(slice_push)} "
            f"pushed): {base_requests} requests in {base_wall:.1f} s; scaled linearly to "
            f"this workload: ~{scale_requests} requests, ~{scaled_wall:.0f} s "
            f"({scale_requests / requests:.1f}× our requests, {scaled_wall / wall:.1f}× our "
            "wall time)"
        )
        engine.dispose()
        client.close()
    ok = (
        requests / floor <= TARGET_REQUESTS
        and wall / wall_floor <= TARGET_WALL
        and rows_per_second >= TARGET_ROWS
    )
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
