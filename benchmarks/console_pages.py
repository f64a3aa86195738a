"""Benchmark: every page of the review console on a busy database, against the 1 s budget.

Starts a fresh embedded PostgreSQL (a temporary home), migrates it, and fills it with set-based
inserts (generate_series, not measured): 10k portal leads of the demo client with their sync
state, 10k open conflicts spread over 30 days and five fields, 100k change-history rows (95k
over the 10k leads, 5k on one record), 1k quarantine holds, a pull and a push per 20-minute
window for 30 days. Then serves the console (uvicorn on a free loopback port, the operator
signed in, so every write form is rendered too) and times each page over HTTP: the median and
the slowest of --repeat requests, and the page's size.

Run: .venv/bin/python benchmarks/console_pages.py [--conflicts 10000 --history 100000 --repeat 5]
Exit status 1 when a page's slowest request is over the budget.
"""

import argparse
import datetime as dt
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests
from sqlalchemy import create_engine, text

from reconcile_pipeline.config.load import DEMO_FILE, load
from reconcile_pipeline.console import create_app, running_console
from reconcile_pipeline.db.embedded import EmbeddedPostgres
from reconcile_pipeline.db.migrate import upgrade
from reconcile_pipeline.demo.portal_schema import ensure_demo_portal
from reconcile_pipeline.engine.repository import Repository

BUDGET_S = 1.0
TOKEN = "benchmark-console-token-0123456789"
CLIENT, TABLE = "demo", "leads"
HOT = "rec" + "9" * 14  # the record with 5k changes


def rid(sql_number: str) -> str:
    """SQL for a record id from a number: rec + 14 digits."""
    return f"'rec' || lpad(({sql_number})::text, 14, '0')"


def fill(engine, leads: int, conflicts: int, history: int, holds: int) -> None:
    project = load(DEMO_FILE)
    for mapping in project.all_mappings():
        Repository(engine, mapping).register_tracked_columns()
    hot = min(5_000, history // 20)
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL reconcile.origin = 'reconciler'"))
        conn.execute(
            text(
                "INSERT INTO public.leads (airtable_record_id, email, phone, first_name, "
                "claimed_by, notes, client_id) SELECT "
                f"{rid('g')}, 'lead' || g || '@example.com', '+1 555 ' || lpad(g::text, 7, '0'), "
                "'Lead' || g, 'agent' || (g % 17), repeat('note line ' || g || E'\\n', 3), 'demo' "
                "FROM generate_series(1, :n) g"
            ),
            {"n": leads},
        )
        conn.execute(
            text(
                "INSERT INTO reconcile.sync_state (client, table_key, airtable_record_id, "
                "base_values, portal_change_counter, pushed_counter, airtable_modified_at, "
                f"airtable_created_at) SELECT :c, :t, {rid('g')}, '{{}}', "
                "CASE WHEN g % 50 = 0 THEN 2 ELSE 1 END, 1, now() - interval '1 day', "
                "now() - interval '30 days' FROM generate_series(1, :n) g"
            ),
            {"c": CLIENT, "t": TABLE, "n": leads},
        )
        conn.execute(
            text(
                "INSERT INTO reconcile.conflicts (client, table_key, airtable_record_id, field, "
                "base_value, airtable_value, portal_value, decided_value, policy, decision, "
                "recommendation, detected_at, run_id, window_start, window_end) SELECT :c, :t, "
                f"{rid('1 + g % :leads')}, "
                "(ARRAY['claimed_by','notes','processing_status','campaign_id','claimed_at'])"
                "[1 + g % 5], to_jsonb('base ' || g), to_jsonb('airtable ' || g), "
                "to_jsonb('portal ' || g), to_jsonb('airtable ' || g), 'airtable_wins', "
                "'airtable_wins', 'Airtable''s value was kept; resolve with the portal''s value "
                "if it was right', now() - make_interval(mins => g * 4), 'run-' || (g % 500), "
                "now() - make_interval(mins => g * 4 + 20), now() - make_interval(mins => g * 4) "
                "FROM generate_series(1, :n) g"
            ),
            {"c": CLIENT, "t": TABLE, "n": conflicts, "leads": leads},
        )
        conn.execute(
            text(
                "INSERT INTO reconcile.change_history (client, table_key, airtable_record_id, "
                "field, old_value, new_value, direction, reason, run_id, window_start, "
                "window_end, changed_at) SELECT :c, :t, "
                f"CASE WHEN g <= :hot THEN '{HOT}' ELSE {rid('1 + g % :leads')} END, "
                "(ARRAY['status','sms_sent_count','notes','claimed_by'])[1 + g % 4], "
                "to_jsonb(g), to_jsonb(g + 1), "
                "(ARRAY['airtable_to_postgres','postgres_to_airtable'])[1 + g % 2], NULL, "
                "'run-' || (g % 2000), now() - make_interval(secs => g * 25 + 1200), "
                "now() - make_interval(secs => g * 25), now() - make_interval(secs => g * 25) "
                "FROM generate_series(1, :n) g"
            ),
            {"c": CLIENT, "t": TABLE, "n": history, "hot": hot, "leads": leads},
        )
        conn.execute(
            text(
                "INSERT INTO reconcile.quarantine (client, table_key, airtable_record_id, "
                "direction, reason, field, raw_value, first_seen_at, last_seen_at, run_id) "
                f"SELECT :c, :t, {rid('g')}, 'pull', 'Company: 320 characters, longer than 255', "
                "'company', to_jsonb(repeat('Initech ', 40)), now() - make_interval(hours => g), "
                "now(), 'run-1' FROM generate_series(1, :n) g"
            ),
            {"c": CLIENT, "t": TABLE, "n": holds},
        )
        conn.execute(
            text(
                "INSERT INTO reconcile.runs (client, table_key, stage, run_id, window_start, "
                "window_end, stats, started_at, finished_at) SELECT :c, t.key, s.stage, "
                "'run-' || g, now() - make_interval(mins => g * 20 + 20), "
                "now() - make_interval(mins => g * 20), '{}', "
                "now() - make_interval(mins => g * 20), now() - make_interval(mins => g * 20) "
                "FROM generate_series(1, 2160) g, "
                "(VALUES ('leads'), ('campaigns')) t(key), (VALUES ('fetch'), ('pull'), ('push')) "
                "s(stage)"
            ),
            {"c": CLIENT},
        )
        conn.execute(
            text(
                "INSERT INTO reconcile.high_water_marks (client, table_key, mark) VALUES "
                "(:c, 'leads', now()), (:c, 'campaigns', now())"
            ),
            {"c": CLIENT},
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))  # what autovacuum does soon after a load like this


def pages(conflict_id: int, last_conflicts: int, last_holds: int) -> list[tuple[str, str]]:
    record = "rec" + "1".zfill(14)
    today = dt.datetime.now(dt.UTC).date()
    week_ago = today - dt.timedelta(days=7)
    return [
        ("overview", "/"),
        ("conflicts, first page", "/conflicts"),
        ("conflicts, last page", f"/conflicts?page={last_conflicts}"),
        ("conflicts, one field", "/conflicts?field=notes"),
        ("conflicts, one field, a week", f"/conflicts?field=notes&since={week_ago}&until={today}"),
        ("conflicts, client+table", f"/conflicts?client={CLIENT}&table={TABLE}"),
        ("conflicts, one record", f"/conflicts?record={record}&status=all"),
        ("conflicts, all statuses", "/conflicts?status=all&page=100"),
        ("one conflict", f"/conflicts/{conflict_id}"),
        ("quarantine", "/quarantine"),
        ("quarantine, last page", f"/quarantine?page={last_holds}"),
        ("find by e-mail (redirect)", "/history?q=lead5000@example.com"),
        ("find by phone (redirect)", "/history?q=555-0005000"),
        ("history, located by id", f"/history/{record}"),
        ("history, scoped", f"/history/{record}?client={CLIENT}&table={TABLE}"),
        ("history, 5k changes p.1", f"/history/{HOT}?client={CLIENT}&table={TABLE}"),
        ("history, 5k changes p.50", f"/history/{HOT}?client={CLIENT}&table={TABLE}&page=50"),
        ("history, 5k changes unscoped", f"/history/{HOT}"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=10_000)
    parser.add_argument("--conflicts", type=int, default=10_000)
    parser.add_argument("--history", type=int, default=100_000)
    parser.add_argument("--holds", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="rp-console-bench-"))
    try:
        return measure(home, args)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def measure(home: Path, args: argparse.Namespace) -> int:
    with EmbeddedPostgres(home).running() as server:
        url = server.database_url("reconcile")
        upgrade(url)
        engine = create_engine(url)
        ensure_demo_portal(engine)
        started = time.perf_counter()
        fill(engine, args.leads, args.conflicts, args.history, args.holds)
        print(
            f"Filled {args.leads:,} leads, {args.conflicts:,} open conflicts, "
            f"{args.history:,} history rows, {args.holds:,} holds in "
            f"{time.perf_counter() - started:.1f} s (not measured)."
        )
        with engine.connect() as conn:
            conflict_id = conn.execute(text("SELECT max(id) FROM reconcile.conflicts")).scalar()
        app = create_app(engine, load(DEMO_FILE), TOKEN, "http://127.0.0.1:3000")
        slow = []
        with running_console(app, port=0) as served:
            http = requests.Session()
            http.trust_env = False
            sign_in = http.get(served.url + "/signin", timeout=30).text
            csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', sign_in).group(1)
            signed = http.post(
                served.url + "/signin",
                data={"csrf": csrf, "token": TOKEN},
                allow_redirects=False,
                timeout=30,
            )
            assert signed.status_code == 303, signed.text
            last_conflicts = -(-args.conflicts // 50)
            last_holds = -(-args.holds // 50)
            print(f"\n{'page':<32} {'median':>9} {'slowest':>9} {'size':>8}  budget {BUDGET_S} s")
            for name, path in pages(conflict_id, last_conflicts, last_holds):
                times, size = [], 0
                for _ in range(args.repeat + 1):  # the first request warms the pool up
                    began = time.perf_counter()
                    response = http.get(served.url + path, allow_redirects=True, timeout=60)
                    times.append(time.perf_counter() - began)
                    assert response.status_code == 200, (path, response.status_code)
                    size = len(response.content)
                times = times[1:]
                worst = max(times)
                verdict = "ok" if worst <= BUDGET_S else "OVER"
                if worst > BUDGET_S:
                    slow.append(name)
                print(
                    f"{name:<32} {statistics.median(times) * 1000:7.1f}ms "
                    f"{worst * 1000:7.1f}ms {size / 1024:6.0f}KB  {verdict}"
                )
        engine.dispose()
    if slow:
        print(f"\nOver the {BUDGET_S} s budget: {', '.join(slow)}")
        return 1
    print(f"\nEvery page within the {BUDGET_S} s budget.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
