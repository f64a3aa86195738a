"""Every asset check seen failing (DESIGN §3.9: a check that can never be seen failing in a
test is not a check), through real Dagster runs of the reconcile assets against the emulator
over HTTP and a per-test PostgreSQL database: the evaluation (passed, severity, blocking), the
metadata a person acts on (count, offending record ids, figures), and where cheap that the
check passes again once the cause is gone. Blocking ERROR checks must also stop the push.
"""

import datetime as dt

import dagster as dg
import pytest
from sqlalchemy import text

from reconcile_pipeline.emulator.server import run_emulator
from reconcile_pipeline_tests.dagster.conftest_checks import (
    BASE,
    OVERLAP,
    TABLE,
    PushWriteFaults,
    RacingPortalEdit,
    airtable_fields,
    asset_metadata,
    capture_trigger_ignoring_origin,
    check_metadata,
    evaluation,
    high_water_mark,
    key_for,
    lead,
    lead_fields,
    materialize,
    materialized,
    offenders,
    passed_checks,
    portal_write,
    reconcile_resources,
    seed,
    sync_state,
)

ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN


@pytest.fixture
def emulator():
    with run_emulator(rate_limit=0) as served:
        yield served


@pytest.fixture
def resources(emulator, database_url):
    return reconcile_resources(emulator, database_url)


def failed(result, check_name: str, severity: dg.AssetCheckSeverity) -> dict:
    """Assert the run evaluated `check_name` as failed with `severity`; its metadata."""
    found = evaluation(result, check_name)
    assert found.passed is False, check_metadata(found)
    assert found.severity == severity
    return check_metadata(found)


def passed(result, check_name: str) -> dict:
    found = evaluation(result, check_name)
    assert found.passed is True, check_metadata(found)
    return check_metadata(found)


def ids_of(rows: list[dict]) -> set[str]:
    return {row["record_id"] for row in rows}


def reverted_portal_writes(engine, run_id: str) -> list[tuple[str, str]]:
    """(record, field) of the run's change history audited as reverted portal writes."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT airtable_record_id, field FROM reconcile.change_history "
                "WHERE reason = 'reverted_portal_write' AND run_id = :run"
            ),
            {"run": run_id},
        ).all()
    return sorted(tuple(row) for row in rows)


# -- postgres_leads: blocking ERROR checks ---------------------------------------------------


def test_no_echo_marked_dirty_fails_when_the_capture_trigger_ignores_the_origin_tag(
    emulator, resources, engine
):
    ids = seed(emulator, 3)
    assert materialize(resources).success
    with capture_trigger_ignoring_origin(engine):
        # An Airtable edit of a portal-owned field: the merge writes it into PostgreSQL, and
        # the broken trigger counts that write as a portal edit, inside the merge's transaction.
        emulator.update_record_fields(BASE, TABLE, ids[0], {"Claimed By": "airtable-bo"})
        result = materialize(resources)

    metadata = failed(result, "no_echo_marked_dirty", ERROR)
    assert evaluation(result, "no_echo_marked_dirty").blocking is True
    assert result.success is False  # a failed blocking check fails the run (and alerts)
    assert metadata["count"] == 1
    assert evaluation(result, "no_echo_marked_dirty").description == (
        "1 leads were marked dirty by the reconciler's own writes (loop)"
    )
    (row,) = offenders(metadata)
    assert row["record_id"] == ids[0]
    with engine.connect() as conn:
        merge_transactions = conn.execute(
            text(
                "SELECT transaction_ids FROM reconcile.runs WHERE run_id = :run "
                "AND stage = 'pull' AND table_key = 'leads'"
            ),
            {"run": result.run_id},
        ).scalar_one()
    assert row["transaction"] in merge_transactions
    # Blocking: nothing downstream of the merge ran, so the echo was not pushed back.
    assert "postgres_leads" in materialized(result)
    assert "postgres_dirty_leads" not in materialized(result)
    assert "airtable_push_results" not in materialized(result)

    # The trigger repaired: the next run's merge marks nothing, the check passes, the push runs.
    again = materialize(resources)
    passed(again, "no_echo_marked_dirty")
    assert evaluation(again, "no_echo_marked_dirty").description == (
        "no pulled echo marked a lead dirty"
    )
    assert "airtable_push_results" in materialized(again)
    assert all(passed_checks(again).values()), passed_checks(again)


def test_a_genuine_portal_edit_racing_the_merge_is_not_an_echo(emulator, resources, engine):
    ids = seed(emulator, 3)
    assert materialize(resources).success
    # Airtable changes the record, so the merge writes (and locks) the lead the portal edits.
    emulator.update_record_fields(BASE, TABLE, ids[0], {"Status": "Contacted"})
    portal = RacingPortalEdit(engine, ids[0], claimed_by="ana")
    portal.start()
    assert portal.locked.wait(10)

    result = materialize(resources)
    portal.join(30)

    assert portal.error is None, portal.error
    assert portal.waiter_seen, "the run never waited on the portal's row lock: no race"
    passed(result, "no_echo_marked_dirty")
    assert result.success
    assert asset_metadata(result, "airtable_push_results")["pushed"] == 1
    assert lead(engine, ids[0])["status"] == "Contacted"
    assert airtable_fields(emulator, ids[0])["Claimed By"] == "ana"
    assert all(passed_checks(result).values()), passed_checks(result)


def test_one_lead_per_airtable_record_fails_on_a_duplicated_lead(emulator, resources, engine):
    ids = seed(emulator, 3)
    assert materialize(resources).success
    with engine.begin() as conn:  # a portal table without the unique constraint, duplicated
        conn.execute(text("ALTER TABLE leads DROP CONSTRAINT leads_airtable_record_id_key"))
        copy_id = conn.execute(
            text(
                "INSERT INTO leads (airtable_record_id, email) "
                "VALUES (:r, 'copy@example.com') RETURNING id"
            ),
            {"r": ids[1]},
        ).scalar_one()

    result = materialize(resources)

    metadata = failed(result, "one_lead_per_airtable_record", ERROR)
    assert evaluation(result, "one_lead_per_airtable_record").blocking is True
    assert result.success is False
    assert metadata["count"] == 1
    assert offenders(metadata) == [{"record_id": ids[1], "leads": "2"}]
    assert "airtable_push_results" not in materialized(result)

    with engine.begin() as conn:
        conn.execute(text("DELETE FROM leads WHERE id = :id"), {"id": copy_id})
    again = materialize(resources)
    passed(again, "one_lead_per_airtable_record")
    assert "airtable_push_results" in materialized(again)


# -- postgres_leads: WARN and non-blocking checks -------------------------------------------


def test_no_duplicate_contacts_fails_on_shared_email_and_phone(emulator, resources):
    ids = emulator.seed_records(
        BASE,
        TABLE,
        [
            lead_fields(0, Email="Shared@Example.com"),
            lead_fields(1, Email="shared@example.com"),
            lead_fields(2, Phone="+1 (555) 010-0000"),
            lead_fields(3, Phone="+15550100000"),
            lead_fields(4),
        ],
    )

    result = materialize(resources)

    metadata = failed(result, "no_duplicate_contacts", WARN)
    assert evaluation(result, "no_duplicate_contacts").blocking is False
    assert metadata["count"] == 2
    rows = {row["kind"]: row for row in offenders(metadata)}
    assert rows["email"]["value"] == "shared@example.com"
    assert rows["email"]["ids"] == ", ".join(sorted(ids[:2]))
    assert rows["phone"]["value"] == "+15550100000"
    assert rows["phone"]["ids"] == ", ".join(sorted(ids[2:4]))
    assert "airtable_push_results" in materialized(result)  # WARN never blocks

    emulator.update_record_fields(BASE, TABLE, ids[1], {"Email": "other@example.com"})
    emulator.update_record_fields(BASE, TABLE, ids[3], {"Phone": "+15550100099"})
    passed(materialize(resources), "no_duplicate_contacts")


def test_a_check_that_cannot_run_fails_alone_and_its_step_s_other_checks_are_evaluated(
    emulator, resources, monkeypatch
):
    """Checks share a step (one for the pull's, one for the push's: issue 15, fixed cost): one
    whose query raises fails with the error named (ERROR, so it alerts), and the rest of its
    step are still evaluated; a non-blocking one never stops the push."""
    from reconcile_pipeline.engine import invariants

    def broken(repo):
        raise RuntimeError("relation leads_contacts does not exist")

    monkeypatch.setattr(invariants, "duplicate_contacts", broken)
    emulator.seed_records(BASE, TABLE, [lead_fields(i) for i in range(3)])

    result = materialize(resources)

    broke = evaluation(result, "no_duplicate_contacts")
    assert broke.passed is False
    assert broke.severity == dg.AssetCheckSeverity.ERROR
    assert "RuntimeError: relation leads_contacts does not exist" in broke.description
    for name in ("no_echo_marked_dirty", "one_lead_per_airtable_record", "no_new_quarantine"):
        passed(result, name)  # the same step's other checks
    assert "airtable_push_results" in materialized(result)


def test_no_new_quarantine_fails_on_an_unknown_select_option(emulator, resources, engine):
    ids = seed(emulator, 3)
    assert materialize(resources).success
    # Stored verbatim (no typecast: the option is not added to the schema), with a valid edit
    # of another field of the same record.
    emulator.put_raw_fields(BASE, TABLE, ids[2], {"Status": "Archived", "First Name": "Renamed"})

    result = materialize(resources)

    metadata = failed(result, "no_new_quarantine", WARN)
    assert evaluation(result, "no_new_quarantine").blocking is False
    assert metadata["count"] == 1
    assert metadata["held_in_total"] == 1
    (row,) = offenders(metadata)
    assert (row["record_id"], row["field"], row["direction"]) == (ids[2], "status", "pull")
    assert "Archived" in row["reason"]
    held = lead(engine, ids[2])
    assert (held["status"], held["first_name"]) == ("New", "Renamed")  # only the field is held
    assert "airtable_push_results" in materialized(result)

    # Still bad on the next pull: held again, but that is not growth.
    retried = materialize(resources)
    assert check_metadata(evaluation(retried, "no_new_quarantine"))["held_in_total"] == 1
    passed(retried, "no_new_quarantine")

    emulator.update_record_fields(BASE, TABLE, ids[2], {"Status": "Qualified"})
    fixed = materialize(resources)
    assert passed(fixed, "no_new_quarantine")["held_in_total"] == 0
    assert lead(engine, ids[2])["status"] == "Qualified"


def test_pull_continuity_fails_while_the_mark_lags_and_the_next_run_covers_the_gap(
    emulator, resources, engine
):
    seed(emulator, 3)
    assert materialize(resources).success
    with engine.begin() as conn:  # as if the scheduler had been down for a day
        conn.execute(text("UPDATE reconcile.high_water_marks SET mark = now() - interval '1 day'"))
    mark = high_water_mark(engine)

    # A backfill of an old window: it succeeds, but does not advance the mark.
    old = materialize(resources, key_for(dt.datetime.now(dt.UTC) - dt.timedelta(days=2)))

    metadata = failed(old, "pull_continuity", ERROR)
    assert evaluation(old, "pull_continuity").blocking is False
    assert metadata["count"] == 1
    (gap,) = offenders(metadata)
    assert gap["from"] == f"{mark.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC"
    assert 1439 <= float(gap["minutes"]) <= 1445
    assert dt.datetime.fromisoformat(metadata["high_water_mark"]) == mark
    assert 1439 <= metadata["lag_minutes"] <= 1445
    assert "airtable_push_results" in materialized(old)  # not blocking
    assert high_water_mark(engine) == mark

    current = materialize(resources)

    pulled = asset_metadata(current, "airtable_leads")
    assert pulled["pull_from"] == pytest.approx((mark - OVERLAP).timestamp())
    passed(current, "pull_continuity")
    assert high_water_mark(engine) > dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)


def test_edits_made_while_a_run_failed_are_pulled_by_the_next_successful_later_window(
    emulator, resources, engine
):
    """DESIGN §3.6 end to end: a window whose run failed is covered by the next successful
    run, even a run of a later window whose own range does not reach back that far."""
    now = dt.datetime.now(dt.UTC)
    long_ago = now - dt.timedelta(hours=3)
    ids = seed(emulator, 3, created_time=long_ago, modified_time=long_ago)
    first = materialize(resources, key_for(now - dt.timedelta(hours=2)))  # the first, full pull
    assert first.success
    mark = high_water_mark(engine)
    assert mark < now - dt.timedelta(minutes=90)

    # Airtable edits stamped an hour ago, while the run of that window failed (503 throughout).
    an_hour_ago = now - dt.timedelta(hours=1)
    emulator.update_record_fields(
        BASE, TABLE, ids[0], {"Status": "Qualified"}, modified_time=an_hour_ago
    )
    (new_id,) = emulator.seed_records(
        BASE, TABLE, [lead_fields(9)], created_time=an_hour_ago, modified_time=an_hour_ago
    )
    emulator.set_faults(fail_next=10_000, fail_status=503)
    try:
        broken = materialize(resources, key_for(an_hour_ago))
    finally:
        emulator.clear_faults()
    assert broken.success is False
    assert "airtable_leads" not in materialized(broken)
    assert high_water_mark(engine) == mark

    later_key = key_for(dt.datetime.now(dt.UTC))
    later = materialize(resources, later_key)

    assert later.success
    window_start = dt.datetime.strptime(later_key, "%Y-%m-%d-%H:%M").replace(tzinfo=dt.UTC)
    assert an_hour_ago < window_start - OVERLAP  # its own range would not have reached them
    assert asset_metadata(later, "airtable_leads")["pull_from"] == pytest.approx(
        (mark - OVERLAP).timestamp()
    )
    assert lead(engine, ids[0])["status"] == "Qualified"
    assert lead(engine, new_id)["first_name"] == "Lead9"
    passed(later, "pull_continuity")


# -- airtable_leads ---------------------------------------------------------------------------


def test_no_record_twice_in_pull_fails_when_the_listing_shifts_under_pagination(
    emulator, resources, engine
):
    ids = seed(emulator, 101)  # two pages
    # The second page starts one record early: the last record of page one comes again.
    emulator.set_faults(repeat_on_next_page=1)
    try:
        result = materialize(resources)
    finally:
        emulator.clear_faults()

    pulled = asset_metadata(result, "airtable_leads")
    assert (pulled["pages"], pulled["pulled"], pulled["repeated_in_pull"]) == (2, 101, 1)
    metadata = failed(result, "no_record_twice_in_pull", WARN)
    assert evaluation(result, "no_record_twice_in_pull").blocking is False
    assert metadata["count"] == 1
    (row,) = offenders(metadata)
    assert row["record_id"] in ids
    assert "airtable_push_results" in materialized(result)
    assert asset_metadata(result, "postgres_leads")["inserted"] == 101  # deduplicated
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM leads")).scalar_one() == 101

    passed(materialize(resources), "no_record_twice_in_pull")


# -- airtable_push_results ------------------------------------------------------------------


def test_no_repeated_push_is_not_fooled_by_a_lost_mark_alone(emulator, resources, engine):
    """Losing the pushed counter alone sends nothing twice: the fresh re-read shows Airtable
    already holds the portal's value, so there is nothing to send (no false alarm)."""
    ids = seed(emulator, 2)
    assert materialize(resources).success
    portal_write(engine, ids[0], claimed_by="ana")
    assert asset_metadata(materialize(resources), "airtable_push_results")["pushed"] == 1
    with engine.begin() as conn:  # a lost compare-and-set: the counter sent is not marked
        conn.execute(
            text(
                "UPDATE reconcile.sync_state SET pushed_counter = pushed_counter - 1 "
                "WHERE airtable_record_id = :r"
            ),
            {"r": ids[0]},
        )

    result = materialize(resources)

    passed(result, "no_repeated_push")
    assert asset_metadata(result, "airtable_push_results")["pushed"] == 0
    assert sync_state(engine, ids[0])["pushed_counter"] == 1


def test_no_repeated_push_fails_when_the_same_counter_is_sent_again(emulator, resources, engine):
    ids = seed(emulator, 2)
    assert materialize(resources).success
    portal_write(engine, ids[0], claimed_by="ana")
    first_push = materialize(resources)
    assert asset_metadata(first_push, "airtable_push_results")["pushed"] == 1
    passed(first_push, "no_repeated_push")
    # A lost compare-and-set: the transaction recording the push did not commit (counter and
    # base as before it), and an Airtable automation has since cleared the field again. The
    # portal has not changed the lead since.
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE reconcile.sync_state SET pushed_counter = pushed_counter - 1, "
                "base_values = base_values || '{\"claimed_by\": null}' "
                "WHERE airtable_record_id = :r"
            ),
            {"r": ids[0]},
        )
    emulator.update_record_fields(BASE, TABLE, ids[0], {"Claimed By": None})
    counter = sync_state(engine, ids[0])["portal_change_counter"]

    result = materialize(resources)

    metadata = failed(result, "no_repeated_push", ERROR)
    assert metadata["count"] == 1
    assert offenders(metadata) == [{"record_id": ids[0], "counter": str(counter), "times": "1"}]
    assert airtable_fields(emulator, ids[0])["Claimed By"] == "ana"

    passed(materialize(resources), "no_repeated_push")


def test_push_error_rate_fails_when_airtable_rejects_every_patch(emulator, resources, engine):
    ids = seed(emulator, 4)
    assert materialize(resources).success
    faults = PushWriteFaults(emulator)
    passed(faults.calibrate(resources), "push_error_rate")
    for i, rid in enumerate(ids[:3]):
        portal_write(engine, rid, claimed_by=f"rep{i}")

    with faults.failing(503):
        result = materialize(resources)
    faults.verify(503)

    metadata = failed(result, "push_error_rate", ERROR)
    assert metadata["count"] == 3
    assert metadata["attempted"] == 3
    assert metadata["error_rate"] == pytest.approx(1.0)
    rows = offenders(metadata)
    assert ids_of(rows) == set(ids[:3])
    assert {row["outcome"] for row in rows} == {"failed"}
    assert all("503" in row["error"] for row in rows), rows
    assert asset_metadata(result, "airtable_push_results")["failed"] == 3
    assert all(sync_state(engine, rid)["pushed_counter"] == 0 for rid in ids[:3])

    again = materialize(resources)
    metadata = passed(again, "push_error_rate")
    assert (metadata["attempted"], metadata["error_rate"]) == (3, 0.0)
    assert airtable_fields(emulator, ids[2])["Claimed By"] == "rep2"


def test_no_drift_in_window_fails_when_a_portal_trigger_rewrites_a_pulled_value(
    emulator, resources, engine
):
    ids = seed(emulator, 3)
    assert materialize(resources).success
    with engine.begin() as conn:  # a normalisation trigger a portal might have
        conn.execute(
            text(
                "CREATE FUNCTION public.portal_upper_status() RETURNS trigger LANGUAGE plpgsql "
                "AS $$ BEGIN NEW.status := upper(NEW.status); RETURN NEW; END $$; "
                "CREATE TRIGGER portal_upper_status BEFORE UPDATE ON public.leads "
                "FOR EACH ROW EXECUTE FUNCTION public.portal_upper_status()"
            )
        )
    emulator.update_record_fields(BASE, TABLE, ids[1], {"Status": "Qualified"})

    result = materialize(resources)

    assert lead(engine, ids[1])["status"] == "QUALIFIED"
    metadata = failed(result, "no_drift_in_window", WARN)
    assert evaluation(result, "no_drift_in_window").blocking is False
    assert metadata["count"] == 1
    assert offenders(metadata) == [{"record_id": ids[1], "fields": "status"}]
    assert metadata["drift_by_field"] == {"status": 1}
    assert metadata["records"] == 3

    with engine.begin() as conn:
        conn.execute(text("DROP TRIGGER portal_upper_status ON public.leads"))
    again = materialize(resources)
    passed(again, "no_drift_in_window")
    assert lead(engine, ids[1])["status"] == "Qualified"


def test_reconcile_is_fresh_fails_when_a_portal_edit_waits_too_long(emulator, resources, engine):
    ids = seed(emulator, 2)
    assert materialize(resources).success
    faults = PushWriteFaults(emulator)
    passed(faults.calibrate(resources), "reconcile_is_fresh")
    portal_write(engine, ids[0], notes="call back on Monday")
    with engine.begin() as conn:  # the edit was made two hours ago and never went out
        conn.execute(
            text(
                "UPDATE reconcile.sync_state SET portal_changed_at = now() - interval '2 hours' "
                "WHERE airtable_record_id = :r"
            ),
            {"r": ids[0]},
        )

    with faults.failing(503):
        result = materialize(resources)
    faults.verify(503)

    metadata = failed(result, "reconcile_is_fresh", WARN)
    assert evaluation(result, "reconcile_is_fresh").blocking is False
    assert 119 <= metadata["oldest_dirty_minutes"] <= 125
    assert metadata["minutes_since_last_push"] < 5

    again = materialize(resources)
    metadata = passed(again, "reconcile_is_fresh")
    assert metadata["oldest_dirty_minutes"] == 0
    assert airtable_fields(emulator, ids[0])["Notes"] == "call back on Monday"


def test_no_portal_writes_to_airtable_fields_fails_and_the_write_is_reverted(
    emulator, resources, engine
):
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    (old,) = emulator.seed_records(
        BASE, TABLE, [lead_fields(0)], created_time=long_ago, modified_time=long_ago
    )
    (recent,) = emulator.seed_records(BASE, TABLE, [lead_fields(1)])
    assert materialize(resources).success
    # `recent` (created within the next pull's range) is reverted by the merge; `old` is not
    # in the next pull: the push step reverts it.
    portal_write(engine, old, status="Customer")
    portal_write(engine, recent, status="Customer")

    result = materialize(resources)

    assert lead(engine, old)["status"] == "New"
    assert lead(engine, recent)["status"] == "New"
    assert asset_metadata(result, "postgres_leads")["reverted"] == 1
    assert asset_metadata(result, "airtable_push_results")["reverted"] == 1
    assert reverted_portal_writes(engine, result.run_id) == sorted(
        [(old, "status"), (recent, "status")]
    )
    metadata = failed(result, "no_portal_writes_to_airtable_fields", WARN)
    assert evaluation(result, "no_portal_writes_to_airtable_fields").blocking is False
    assert metadata["count"] == 2
    rows = offenders(metadata)
    assert ids_of(rows) == {old, recent}
    assert {(r["field"], r["portal_wrote"], r["restored"]) for r in rows} == {
        ("status", '"Customer"', '"New"')
    }
    assert airtable_fields(emulator, old)["Status"] == "New"  # never pushed

    passed(materialize(resources), "no_portal_writes_to_airtable_fields")


def test_no_portal_writes_to_airtable_fields_lists_only_the_columns_the_portal_wrote(
    emulator, resources, engine
):
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    (old,) = emulator.seed_records(
        BASE, TABLE, [lead_fields(0)], created_time=long_ago, modified_time=long_ago
    )
    (recent,) = emulator.seed_records(BASE, TABLE, [lead_fields(1)])
    assert materialize(resources).success
    portal_write(engine, old, status="Customer")
    portal_write(engine, recent, status="Customer")
    # Airtable changes another Airtable-owned field of each: pulled by the merge (`recent`),
    # or, stamped before the pull's range, seen by the push's fresh re-read (`old`).
    emulator.update_record_fields(BASE, TABLE, recent, {"First Name": "Edited"})
    emulator.update_record_fields(
        BASE, TABLE, old, {"First Name": "Edited"}, modified_time=long_ago
    )

    result = materialize(resources)

    assert lead(engine, recent)["first_name"] == "Edited"
    assert lead(engine, old)["first_name"] == "Edited"
    metadata = check_metadata(evaluation(result, "no_portal_writes_to_airtable_fields"))
    assert {(r["record_id"], r["field"]) for r in offenders(metadata)} == {
        (old, "status"),
        (recent, "status"),
    }
    assert reverted_portal_writes(engine, result.run_id) == sorted(
        [(old, "status"), (recent, "status")]
    )
