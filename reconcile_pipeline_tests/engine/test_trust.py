"""Issue 11 (trust on every failure path), engine level: real PostgreSQL, the real pyairtable
client over HTTP to the emulator. Each test names the issue item it proves."""

import datetime as dt
import json
import threading
import time
import uuid

import pytest
from sqlalchemy import text

from reconcile_pipeline.engine import invariants
from reconcile_pipeline.engine.context import RunContext
from reconcile_pipeline.engine.push import push_dirty
from reconcile_pipeline.engine.retry import ReconcileDatabaseError
from reconcile_pipeline.engine.stages import pull_window, push_window
from reconcile_pipeline.engine.sweep import apply_deletions
from reconcile_pipeline_tests.engine.conftest import BASE, TABLE
from reconcile_pipeline_tests.engine.test_end_to_end import (
    airtable_fields,
    lead_value,
    portal_write,
    seed,
)

OVERLAP = dt.timedelta(minutes=5)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def run_window(repo, client, start, end, *, fail_with=None, emulator=None):
    """One reconcile of [start, end) as the Dagster job runs it; returns (run, pull, push)."""
    run = RunContext(run_id=f"w-{uuid.uuid4().hex[:8]}", window_start=start, window_end=end)
    _, pull = pull_window(repo, client, run, OVERLAP)
    push = push_window(repo, client, run, lock_name="test")
    return run, pull, push


def scalar(engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


# -- A1: the high-water mark ------------------------------------------------------------------


def test_a1_first_pull_is_full_and_a_failed_window_is_covered_by_the_next_run(
    emulator, engine, client, repo
):
    old = seed(emulator, Email="old@example.com")
    # Created three days ago and never edited: outside any recent window.
    emulator.update_record_fields(BASE, TABLE, old, {}, modified_time=now() - dt.timedelta(days=3))
    t0 = now()

    # No high-water mark yet: the first run is a full pull and brings every existing record.
    run_window(repo, client, t0 - dt.timedelta(hours=3), t0 - dt.timedelta(hours=2, minutes=40))
    assert lead_value(engine, old, "email") == "old@example.com"
    mark = repo.high_water_mark()
    assert mark is not None and mark <= t0 - dt.timedelta(hours=2, minutes=40)

    # 20 Airtable edits stamped in the window [t0-100min, t0-80min), whose run fails (503).
    edited = [seed(emulator, Email=f"e{i}@example.com") for i in range(20)]
    for rid in edited:
        emulator.update_record_fields(
            BASE, TABLE, rid, {"Status": "Qualified"}, modified_time=t0 - dt.timedelta(minutes=90)
        )
    emulator.set_faults(fail_next=50, fail_status=503)
    with pytest.raises(Exception):  # noqa: B017 — any failure: the run fails
        run_window(repo, client, t0 - dt.timedelta(minutes=100), t0 - dt.timedelta(minutes=80))
    emulator.clear_faults()
    assert repo.high_water_mark() == mark  # a failed pull never moves the mark

    # The schedule then runs its own, later window: it starts at the mark and covers the gap.
    run, pull, _ = run_window(repo, client, t0 - dt.timedelta(minutes=20), now())

    assert all(lead_value(engine, rid, "status") == "Qualified" for rid in edited)
    assert pull.inserted == 20
    assert repo.high_water_mark() > mark
    continuity = invariants.pull_continuity(
        repo, max_lag=dt.timedelta(minutes=45), horizon=dt.timedelta(days=7)
    )
    assert continuity.passed, continuity.summary


def test_a1_pull_continuity_reports_time_no_successful_pull_covered(emulator, engine, client, repo):
    seed(emulator)
    t0 = now()
    run_window(repo, client, t0 - dt.timedelta(minutes=20), t0)
    # As if the scheduler had been down for a day: the mark is a day old.
    with engine.begin() as conn:
        conn.execute(text("UPDATE reconcile.high_water_marks SET mark = now() - interval '1 day'"))

    finding = invariants.pull_continuity(
        repo, max_lag=dt.timedelta(minutes=45), horizon=dt.timedelta(days=7)
    )

    assert not finding.passed and finding.count == 1
    assert finding.examples[0]["minutes"] >= 24 * 60 - 1
    assert finding.figures["lag_minutes"] >= 24 * 60 - 1

    # The next run of the current window pulls from the mark (one query) and closes the gap.
    run = RunContext(
        run_id="catch-up", window_start=t0 - dt.timedelta(minutes=20), window_end=now()
    )
    fetched, _ = pull_window(repo, client, run, OVERLAP)
    assert fetched.pull_start is not None
    assert fetched.pull_start <= now() - dt.timedelta(days=1) - OVERLAP + dt.timedelta(minutes=1)
    assert invariants.pull_continuity(
        repo, max_lag=dt.timedelta(minutes=45), horizon=dt.timedelta(days=7)
    ).passed


# -- A2: never overwrite what we could not read -------------------------------------------


@pytest.mark.parametrize(
    ("airtable_field", "unreadable"),
    [
        ("Processing Status", "Archived"),  # a new select option
        ("Claimed At", 12345),  # a number in a date-time
        ("Notes", "x" * 200_000),  # longer than the mapping's limit
    ],
)
def test_a2_push_never_overwrites_an_airtable_value_it_could_not_read(
    emulator, engine, reconcile, airtable_field, unreadable
):
    rid = seed(emulator)
    reconcile()
    emulator.put_raw_fields(BASE, TABLE, rid, {airtable_field: unreadable})
    reconcile()  # the unreadable field is held in quarantine; the lead stays clean
    portal_write(engine, rid, claimed_by="ana")  # the portal edits another field

    reconcile()

    fields = airtable_fields(emulator, rid)
    assert fields[airtable_field] == unreadable  # Airtable's value survived
    if airtable_field != "Claimed By":
        assert fields["Claimed By"] == "ana"  # the portal's own change went out


def test_a2_a_portal_edit_of_a_field_airtable_holds_unreadable_is_a_conflict_airtable_wins(
    emulator, engine, reconcile
):
    rid = seed(emulator)
    reconcile()
    emulator.put_raw_fields(BASE, TABLE, rid, {"Processing Status": "Archived"})
    portal_write(engine, rid, processing_status="Paused")

    _, push = reconcile()

    assert airtable_fields(emulator, rid)["Processing Status"] == "Archived"
    assert push.conflicts == 1
    with engine.connect() as conn:
        conflict = conn.execute(
            text(
                "SELECT field, airtable_value #>> '{}', portal_value #>> '{}', decision, "
                "recommendation FROM reconcile.conflicts"
            )
        ).one()
    assert conflict[:4] == ("processing_status", "Archived", "Paused", "airtable_wins")
    assert "cannot read" in conflict[4]
    assert (
        scalar(
            engine,
            "SELECT count(*) FROM reconcile.sync_state WHERE "
            "portal_change_counter > pushed_counter",
        )
        == 0
    )


# -- A3: re-read before write -----------------------------------------------------------------


def test_a3_an_airtable_edit_landing_after_the_pull_is_never_overwritten(
    emulator, engine, reconcile
):
    rid = seed(emulator, Notes="line 1")
    reconcile()
    portal_write(engine, rid, claimed_by="ana", notes="line 1\nportal line")

    def airtable_edits_right_after_the_pull():
        emulator.update_record_fields(
            BASE, TABLE, rid, {"Claimed By": "bo", "Notes": "line 1\nairtable line"}
        )
        emulator.reset_request_log()

    _, push = reconcile(after_pull=airtable_edits_right_after_the_pull)

    fields = airtable_fields(emulator, rid)
    assert fields["Claimed By"] == "bo"  # Airtable wins the true conflict…
    assert lead_value(engine, rid, "claimed_by") == "bo"
    # …and merge_lines keeps Airtable's appended line together with the portal's.
    assert fields["Notes"].splitlines() == ["line 1", "airtable line", "portal line"]
    with engine.connect() as conn:
        conflicts = dict(
            conn.execute(text("SELECT field, portal_value #>> '{}' FROM reconcile.conflicts")).all()
        )
    assert conflicts["claimed_by"] == "ana"  # the portal's value kept for review
    # The value the decision used was read right before the write: the re-read and the PATCH
    # are consecutive requests (at most 10 PATCHes follow one re-read of 100 ids).
    entries = emulator.request_log()["entries"]
    methods = [e["method"] for e in entries]
    assert methods == ["POST", "PATCH"]
    gap = entries[1]["monotonic"] - entries[0]["monotonic"]
    print(f"re-read → PATCH gap: {gap * 1000:.1f} ms")


# -- A4: poison records -----------------------------------------------------------------------

POISON = [
    ("First Name", "nul\x00byte"),
    ("Last Name", "lone \ud800 surrogate"),
    ("ICP Score", float("nan")),
    ("SMS Last Sent At", "9999-12-31T23:59:59-14:00"),
    ("Booked At", "0001-01-01T00:00:00+14:00"),
]


def test_a4_poison_values_are_held_per_field_and_the_batch_proceeds(emulator, engine, client, repo):
    good = seed(emulator, Email="good@example.com")
    poisoned = [seed(emulator, Email=f"p{i}@example.com", Status="New") for i in range(5)]
    for rid, (name, value) in zip(poisoned, POISON, strict=True):
        emulator.put_raw_fields(BASE, TABLE, rid, {name: value, "Status": "Engaged"})

    for _ in range(2):  # every run, not only the first
        t0 = now()
        run, pull, _ = run_window(repo, client, t0 - dt.timedelta(minutes=20), t0)
        assert pull.quarantined == 5

    assert lead_value(engine, good, "email") == "good@example.com"
    assert all(lead_value(engine, rid, "status") == "Engaged" for rid in poisoned)
    with engine.connect() as conn:
        held = conn.execute(
            text(
                "SELECT airtable_record_id, field FROM reconcile.quarantine "
                "WHERE released_at IS NULL ORDER BY 1"
            )
        ).all()
        raw = conn.execute(
            text(
                "SELECT airtable_record_id, raw_record FROM reconcile.airtable_snapshots "
                "WHERE run_id = :run AND raw_record IS NOT NULL"
            ),
            {"run": run.run_id},
        ).all()
    assert sorted(rid for rid, _ in held) == sorted(poisoned)
    # Losslessly stored: what jsonb refuses is kept as text and reads back exactly.
    stored = {rid: json.loads(text_) for rid, text_ in raw}
    assert stored[poisoned[0]]["fields"]["First Name"] == "nul\x00byte"
    assert stored[poisoned[1]]["fields"]["Last Name"] == "lone \ud800 surrogate"
    nan = stored[poisoned[2]]["fields"]["ICP Score"]
    assert nan != nan  # NaN


# -- C7: deadlocks with portal transactions ---------------------------------------------------


def test_c7_a_portal_transaction_locking_leads_in_reverse_order_is_never_the_victim(
    emulator, engine, client, repo
):
    rids = sorted(seed(emulator, Email=f"d{i}@example.com") for i in range(6))
    t0 = now()
    run_window(repo, client, t0 - dt.timedelta(minutes=20), t0)
    for rid in rids:
        emulator.update_record_fields(BASE, TABLE, rid, {"Status": "Qualified"})
    portal_error: list[BaseException] = []
    merge_waiting = threading.Event()

    def portal_transaction() -> None:
        try:
            with engine.begin() as conn:
                # Locks the last lead first, then, once the merge waits on it, the first.
                conn.execute(
                    text("UPDATE leads SET notes = 'portal' WHERE airtable_record_id = :r"),
                    {"r": rids[-1]},
                )
                merge_waiting.wait(timeout=10)
                conn.execute(
                    text("UPDATE leads SET notes = 'portal' WHERE airtable_record_id = :r"),
                    {"r": rids[0]},
                )
        except BaseException as error:  # noqa: BLE001
            portal_error.append(error)

    def watch_for_merge_wait() -> None:
        for _ in range(200):
            waiting = scalar(
                engine,
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()",
            )
            if waiting:
                merge_waiting.set()
                return
            time.sleep(0.02)
        merge_waiting.set()

    portal = threading.Thread(target=portal_transaction)
    watcher = threading.Thread(target=watch_for_merge_wait)
    portal.start()
    time.sleep(0.2)
    watcher.start()
    run = RunContext(
        run_id="c7",
        window_start=t0 - dt.timedelta(minutes=20),
        window_end=now() + dt.timedelta(minutes=20),
    )
    _, pull = pull_window(repo, client, run, OVERLAP)  # must not raise
    portal.join(timeout=30)
    watcher.join(timeout=30)

    assert portal_error == []  # the portal's transaction went through
    assert pull.updated == len(rids)
    assert all(lead_value(engine, rid, "status") == "Qualified" for rid in rids)
    assert lead_value(engine, rids[0], "notes") == "portal"


# -- C8: no false loop alarm -----------------------------------------------------------------


def test_c8_a_genuine_portal_edit_racing_the_merge_is_not_an_echo(emulator, engine, client, repo):
    rid = seed(emulator)
    t0 = now()
    run_window(repo, client, t0 - dt.timedelta(minutes=20), t0)
    emulator.update_record_fields(BASE, TABLE, rid, {"Claimed By": "bo"})
    locked = threading.Event()

    def portal_claims_while_the_merge_waits() -> None:
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE leads SET claimed_by = 'ana' WHERE airtable_record_id = :r"),
                {"r": rid},
            )
            locked.set()
            time.sleep(0.3)  # the merge waits on this row lock (shorter than its lock timeout)

    portal = threading.Thread(target=portal_claims_while_the_merge_waits)
    portal.start()
    locked.wait(timeout=10)
    run = RunContext(
        run_id="c8",
        window_start=t0 - dt.timedelta(minutes=20),
        window_end=now() + dt.timedelta(minutes=20),
    )
    _, pull = pull_window(repo, client, run, OVERLAP)
    portal.join()

    assert pull.conflicts == 1  # both changed claimed_by: Airtable won, recorded
    assert repo.count_dirty() == 1  # the portal's genuine edit is dirty…
    finding = invariants.echoes_marked_dirty(repo, run.run_id)
    assert finding.passed, finding.summary  # …and not mistaken for an echo


def origin_blind_trigger_sql() -> str:
    """The capture trigger of migration 0005 as a broken deployment might have it: blind to the
    reconciler's origin tag (no WHEN condition, no check in the body)."""
    from reconcile_pipeline.db.migrate import MIGRATIONS_DIR

    source = (MIGRATIONS_DIR / "versions" / "0005_clients.py").read_text()
    body = source[source.index("CREATE OR REPLACE FUNCTION reconcile.capture_portal_change") :]
    body = body[: body.index("$fn$;") + len("$fn$;")]
    check = body[body.index("    IF current_setting") : body.index("END IF;") + len("END IF;")]
    body = body.replace(check, "").replace(
        "reconcile.capture_portal_change()", "reconcile.capture_blind()"
    )
    return (
        body
        + " DROP TRIGGER reconcile_capture_portal_change ON public.leads;"
        + " CREATE TRIGGER reconcile_capture_portal_change AFTER UPDATE ON public.leads"
        + " FOR EACH ROW EXECUTE FUNCTION reconcile.capture_blind('demo', 'leads', "
        + "'airtable_record_id');"
    )


def test_c8_an_echo_really_bumped_by_our_own_write_is_reported(emulator, engine, client, repo):
    rid = seed(emulator)
    t0 = now()
    run_window(repo, client, t0 - dt.timedelta(minutes=20), t0)
    with engine.begin() as conn:
        conn.exec_driver_sql(origin_blind_trigger_sql())
    emulator.update_record_fields(BASE, TABLE, rid, {"Claimed By": "bo"})
    run = RunContext(
        run_id="c8-echo",
        window_start=t0 - dt.timedelta(minutes=20),
        window_end=now() + dt.timedelta(minutes=20),
    )
    pull_window(repo, client, run, OVERLAP)

    finding = invariants.echoes_marked_dirty(repo, run.run_id)
    assert not finding.passed
    assert [e["record_id"] for e in finding.examples] == [rid]


# -- C9, C11: deletes --------------------------------------------------------------------------


def test_c9_a_record_deleted_in_airtable_with_an_unpushed_edit_is_soft_deleted_at_once(
    emulator, engine, reconcile, repo
):
    rid = seed(emulator)
    reconcile()
    portal_write(engine, rid, claimed_by="ana")
    emulator.delete_record(BASE, TABLE, rid)

    _, push = reconcile()

    assert (push.failed, push.deleted) == (0, 1)
    assert lead_value(engine, rid, "is_active") is False  # the portal sees the delete
    assert repo.count_dirty() == 0
    with engine.connect() as conn:
        outcomes = conn.execute(text("SELECT outcome FROM reconcile.push_results")).scalars().all()
    assert outcomes == ["deleted"]
    _, again = reconcile()
    assert again.dirty == 0  # no failure on every tick


def test_c11_the_sweep_shows_deletes_in_the_soft_delete_column_and_restores_them(
    emulator, engine, reconcile, repo
):
    kept, gone = seed(emulator, Email="k@example.com"), seed(emulator, Email="g@example.com")
    reconcile()

    apply_deletions(repo, [kept], RunContext(run_id="sweep-1"))
    assert lead_value(engine, gone, "is_active") is False
    assert lead_value(engine, kept, "is_active") is True

    apply_deletions(repo, [kept, gone], RunContext(run_id="sweep-2"))
    assert lead_value(engine, gone, "is_active") is True
    assert scalar(engine, "SELECT count(*) FROM leads") == 2  # never a hard delete


# -- C10: portal writes to Airtable-owned columns ---------------------------------------------


def test_c10_a_portal_write_to_an_airtable_owned_column_is_reverted_and_counted(
    emulator, engine, reconcile, repo
):
    rid = seed(emulator, Status="New")
    reconcile()
    portal_write(engine, rid, status="Customer")  # a portal bug: status is Airtable's

    pull, push = reconcile()

    assert lead_value(engine, rid, "status") == "New"
    assert pull.reverted + push.reverted == 1
    assert airtable_fields(emulator, rid)["Status"] == "New"  # never pushed
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT field, old_value #>> '{}', new_value #>> '{}', run_id "
                "FROM reconcile.change_history WHERE reason = 'reverted_portal_write'"
            )
        ).one()
    assert row[:3] == ("status", "Customer", "New")
    finding = invariants.portal_writes_to_airtable_fields(repo, row[3])
    assert not finding.passed and finding.examples[0]["record_id"] == rid
    _, quiet = reconcile()
    assert (quiet.dirty, quiet.reverted) == (0, 0)


# -- D15, D16, D17, D19 ------------------------------------------------------------------------


def test_d15_a_failed_batch_is_recorded_once_per_lead(emulator, engine, reconcile, repo):
    rids = [seed(emulator, Email=f"x{i}@example.com") for i in range(10)]
    reconcile()
    for rid in rids:
        portal_write(engine, rid, claimed_by="ana")

    def airtable_goes_down(plans):
        emulator.set_faults(fail_next=100, fail_status=503)

    try:
        _, push = reconcile(after_read=airtable_goes_down)
    finally:
        emulator.clear_faults()

    assert push.failed == 10
    assert (
        scalar(engine, "SELECT count(*) FROM reconcile.push_results WHERE outcome = 'failed'") == 10
    )
    assert repo.count_dirty() == 10  # left dirty, nothing lost


def test_d16_no_drift_is_reported_after_a_successful_push(emulator, engine, client, repo):
    rids = [seed(emulator, Email=f"y{i}@example.com") for i in range(3)]
    t0 = now()
    run_window(repo, client, t0 - dt.timedelta(minutes=20), t0)
    for rid in rids:
        portal_write(engine, rid, claimed_by="ana")
        emulator.update_record_fields(BASE, TABLE, rid, {"Status": "Engaged"})

    run, _, push = run_window(
        repo, client, t0 - dt.timedelta(minutes=20), now() + dt.timedelta(minutes=20)
    )

    assert push.updated == 3
    finding = invariants.window_drift(repo, run.run_id)
    assert finding.passed, finding.summary
    assert finding.figures["records"] == 3


def test_d17_a_lead_deleted_from_the_portal_is_not_dirty_forever(emulator, engine, client, repo):
    an_hour_ago = now() - dt.timedelta(hours=1)
    [rid] = emulator.seed_records(
        BASE, TABLE, [{"Email": "gone@example.com"}], created_time=an_hour_ago
    )
    run_window(repo, client, now() - dt.timedelta(minutes=20), now())  # full pull
    portal_write(engine, rid, claimed_by="ana")
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM leads WHERE airtable_record_id = :r"), {"r": rid})

    # The record is not in this window's pull (not edited in Airtable): nothing re-inserts it.
    _, pull, push = run_window(
        repo, client, now() - dt.timedelta(minutes=20), now() + dt.timedelta(minutes=20)
    )

    assert (pull.pulled, push.orphans_settled) == (0, 1)
    dirty_states = scalar(
        engine,
        "SELECT count(*) FROM reconcile.sync_state WHERE portal_change_counter > pushed_counter",
    )
    assert dirty_states == 0


def test_d19_a_database_failure_names_no_record_contents(emulator, engine, client, repo):
    rid = seed(emulator, **{"Email": "secret.person@example.com", "First Name": "Mallory"})
    with engine.begin() as conn:
        conn.execute(
            text("ALTER TABLE leads ADD CONSTRAINT no_mallory CHECK (first_name <> 'Mallory')")
        )
    t0 = now()
    run = RunContext(run_id="d19", window_start=t0 - dt.timedelta(minutes=20), window_end=t0)

    # The listing succeeds and its batch is stored; the merge of that batch is what fails.
    with pytest.raises(ReconcileDatabaseError) as raised:
        pull_window(repo, client, run, OVERLAP)

    message = str(raised.value)
    assert "23514" in message  # the SQLSTATE (check violation)
    assert "Mallory" not in message and "secret.person" not in message
    assert raised.value.__cause__ is None and raised.value.__context__ is None
    # The record stays in the snapshot for the next run (stored before its merge failed).
    assert (
        scalar(
            engine,
            "SELECT count(*) FROM reconcile.airtable_snapshots "
            "WHERE run_id = 'd19' AND airtable_record_id = :r",
            r=rid,
        )
        == 1
    )


def test_push_window_marks_nothing_pushed_on_a_dry_run(emulator, engine, client, repo):
    rid = seed(emulator)
    t0 = now()
    run_window(repo, client, t0 - dt.timedelta(minutes=20), t0)
    portal_write(engine, rid, claimed_by="ana")

    push = push_dirty(repo, client, RunContext(run_id="dry", dry_run=True), lock_name="t")

    assert push.updated == 1 and repo.count_dirty() == 1
    assert "Claimed By" not in airtable_fields(emulator, rid)


def test_e_a_listing_that_repeats_records_across_pages_is_reported(emulator, engine, client, repo):
    """no_record_twice_in_pull can fail: the listing shifts under pagination (emulator fault),
    the client drops the repeats and the check names them."""
    emulator.seed_records(BASE, TABLE, [{"Email": f"r{i}@example.com"} for i in range(150)])
    emulator.set_faults(repeat_on_next_page=3)
    t0 = now()
    run = RunContext(run_id="repeats", window_start=t0 - dt.timedelta(minutes=20), window_end=t0)

    fetched, pull = pull_window(repo, client, run, OVERLAP)

    assert fetched.repeated_in_pull == 3
    assert pull.inserted == 150  # each record once
    finding = invariants.records_repeated_in_pull(repo, run.run_id)
    assert not finding.passed and finding.count == 3
    first_page_tail = [r["id"] for r in fetched.records[97:100]]
    assert sorted(e["record_id"] for e in finding.examples) == sorted(first_page_tail)


def test_a_record_stored_twice_in_one_run_s_snapshot_is_reported_with_its_count(engine, repo):
    """The other source of the check: a record the snapshot holds twice for the run (kept by
    the listing), counted by one aggregate over the run's rows."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO reconcile.airtable_snapshots (client, table_key, airtable_record_id, "
                "fields, run_id) VALUES ('demo', 'leads', 'recTwice000000001', '{}', 'twice'), "
                "('demo', 'leads', 'recTwice000000001', '{}', 'twice'), "
                "('demo', 'leads', 'recOnce0000000001', '{}', 'twice'), "
                "('demo', 'leads', 'recOnce0000000001', '{}', 'another-run')"
            )
        )

    finding = invariants.records_repeated_in_pull(repo, "twice")

    assert not finding.passed and finding.count == 1
    assert finding.examples == [{"record_id": "recTwice000000001", "times": 2}]


# -- E: rules that no test noticed -------------------------------------------------------------


def test_e_the_pull_reaches_back_the_overlap_before_the_high_water_mark(
    emulator, engine, client, repo
):
    """A change stamped just before the mark (a skewed clock, a commit that landed while the
    previous listing ran) is still pulled: the overlap is applied to the mark too."""
    t0 = now()
    run_window(repo, client, t0 - dt.timedelta(hours=2), t0 - dt.timedelta(hours=1, minutes=40))
    mark = t0 - dt.timedelta(minutes=30)
    with engine.begin() as conn:
        conn.execute(text("UPDATE reconcile.high_water_marks SET mark = :m"), {"m": mark})
    [late] = emulator.seed_records(
        BASE,
        TABLE,
        [{"Email": "late@example.com"}],
        created_time=mark - dt.timedelta(minutes=3),
    )

    _, pull, _ = run_window(repo, client, t0 - dt.timedelta(minutes=20), now())

    assert pull.inserted == 1
    assert lead_value(engine, late, "email") == "late@example.com"


def test_e_a_closed_window_pushes_every_lead_dirty_as_of_its_end_and_no_later_edit(
    emulator, engine, client, repo
):
    """Dirty is state, not an event (DESIGN §2): a run of a closed window pushes the edits made
    before the window (a failed push is never stranded) but not those made after its end."""
    before, after = seed(emulator, Email="b@example.com"), seed(emulator, Email="a@example.com")
    t0 = now()
    run_window(repo, client, t0 - dt.timedelta(minutes=20), t0)
    portal_write(engine, before, claimed_by="early")
    portal_write(engine, after, claimed_by="late")
    with engine.begin() as conn:  # the first edit 3 hours ago, long before the window
        conn.execute(
            text(
                "UPDATE reconcile.sync_state SET portal_changed_at = now() - interval '3 hours' "
                "WHERE airtable_record_id = :r"
            ),
            {"r": before},
        )

    # A backfill of the window that closed an hour ago.
    _, _, push = run_window(
        repo, client, t0 - dt.timedelta(minutes=80), t0 - dt.timedelta(minutes=60)
    )

    assert push.updated == 1
    assert airtable_fields(emulator, before)["Claimed By"] == "early"
    assert "Claimed By" not in airtable_fields(emulator, after)
    assert repo.count_dirty() == 1  # the later edit waits for a window that contains it


# -- found in review ---------------------------------------------------------------------------


def open_holds(engine, direction: str) -> list:
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT airtable_record_id, field FROM reconcile.quarantine "
                "WHERE released_at IS NULL AND direction = :d"
            ),
            {"d": direction},
        ).all()


def test_a_record_airtable_rejected_is_released_once_the_portal_settles_it(
    emulator, engine, client
):
    import dataclasses

    from reconcile_pipeline.engine.repository import Repository
    from reconcile_pipeline_tests.engine.conftest import Reconciler
    from reconcile_pipeline_tests.mappings import LEADS_MAPPING

    permissive = dataclasses.replace(
        LEADS_MAPPING,
        fields=tuple(
            dataclasses.replace(f, choices=None) if f.column == "processing_status" else f
            for f in LEADS_MAPPING.fields
        ),
    )
    repo = Repository(engine, permissive)
    repo.register_tracked_columns()
    reconcile = Reconciler(repo, client)
    rid = seed(emulator)
    reconcile()
    portal_write(engine, rid, processing_status="Not An Option")  # Airtable answers 422
    reconcile()
    assert open_holds(engine, "push") == [(rid, "*")]

    portal_write(engine, rid, processing_status="Active")  # the portal puts it back
    reconcile()

    assert open_holds(engine, "push") == []


def test_a_stale_snapshot_neither_holds_nor_releases(engine, repo):
    from reconcile_pipeline.engine.pull import apply_records
    from reconcile_pipeline_tests.engine.builders import airtable_record, record_id

    held_rid, clean_rid = record_id(300), record_id(301)
    t = dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC)
    run = RunContext(run_id="stale")
    apply_records(repo, [airtable_record(held_rid, ICP_Score="high", modified=t)], run)
    apply_records(repo, [airtable_record(clean_rid, ICP_Score=80, modified=t)], run)
    assert open_holds(engine, "pull") == [(held_rid, "icp_score")]

    # Older snapshots, listed earlier and merged later: skipped, and they change no hold.
    older = t - dt.timedelta(minutes=5)
    result = apply_records(
        repo,
        [
            airtable_record(held_rid, ICP_Score=50, modified=older),
            airtable_record(clean_rid, ICP_Score="bad", modified=older),
        ],
        run,
    )

    assert (result.stale_skipped, result.released, result.quarantined) == (2, 0, 0)
    assert open_holds(engine, "pull") == [(held_rid, "icp_score")]


def test_pull_continuity_reports_a_hole_between_committed_pulls(engine, repo):
    now_ = now()
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO reconcile.pull_coverage (client, table_key, run_id, pull_start, "
                "pull_end, committed_at) VALUES ('demo', 'leads', 'a', :s1, :e1, now()), "
                "('demo', 'leads', 'b', :s2, :e2, now())"
            ),
            {
                "s1": now_ - dt.timedelta(hours=3),
                "e1": now_ - dt.timedelta(hours=2),
                "s2": now_ - dt.timedelta(hours=1),
                "e2": now_,
            },
        )
        conn.execute(
            text(
                "INSERT INTO reconcile.high_water_marks (client, table_key, mark) "
                "VALUES ('demo', 'leads', :m)"
            ),
            {"m": now_},
        )

    finding = invariants.pull_continuity(
        repo, max_lag=dt.timedelta(minutes=45), horizon=dt.timedelta(days=7)
    )

    assert not finding.passed and finding.count == 1
    assert finding.examples[0]["minutes"] == 60.0
