"""The drift check's verdicts on one real pull: what it counts and what it must leave out.

The check compares the window's records as the run pulled them with the portal's rows after
the run. It reads only a brief view of the sync state (deleted, dirty, the Airtable version
applied), so each exclusion is pinned here against the values it reads back from PostgreSQL.
"""

import dataclasses
import datetime as dt

from sqlalchemy import create_engine, text

from reconcile_pipeline.engine import invariants
from reconcile_pipeline.engine.repository import Repository
from reconcile_pipeline_tests.engine.test_end_to_end import portal_write, seed
from reconcile_pipeline_tests.engine.test_trust import now, run_window


def _pulled(pull, record_id):
    return next(r for r in pull.records if r.record_id == record_id)


def _as_airtable_says(record, **values):
    """The pulled record, as if Airtable had answered `values` (the portal's row still holds
    the values the merge wrote)."""
    return dataclasses.replace(record, values={**record.values, **values})


def test_drift_counts_what_differs_and_leaves_out_deleted_newer_held_and_pending_portal_edits(
    emulator, engine, client, repo
):
    ids = [seed(emulator, Email=f"drift{i}@example.com", Status="New") for i in range(6)]
    plain, deleted, newer, pending, held, untouched = ids
    t0 = now()
    run, pull, _ = run_window(repo, client, t0 - dt.timedelta(minutes=20), t0)
    assert pull.pulled == 6
    portal_write(engine, pending, claimed_by="ana")  # waits to be pushed
    with engine.begin() as conn:
        # A value held back from the portal (a link waiting for its record, bad input).
        hold = {"record_id": held, "field": "status", "reason": "held", "raw": "Engaged"}
        repo.quarantine(conn, [hold], "pull", run)
        conn.execute(
            text(
                "UPDATE reconcile.sync_state SET deleted_at = now() WHERE airtable_record_id = :r"
            ),
            {"r": deleted},
        )
        # A later run applied a newer Airtable version of this record.
        conn.execute(
            text(
                "UPDATE reconcile.sync_state SET airtable_modified_at = :t "
                "WHERE airtable_record_id = :r"
            ),
            {"r": newer, "t": t0 + dt.timedelta(minutes=1)},
        )
    # Airtable's answer, as this run knows it, differs from the portal's row for each record:
    pulled = [
        # Not pending: the portal's own field differs too, and counts.
        _as_airtable_says(_pulled(pull, plain), status="Engaged", claimed_by="bob"),
        _as_airtable_says(_pulled(pull, deleted), status="Engaged"),
        # This run's copy is older than the version applied since.
        dataclasses.replace(_as_airtable_says(_pulled(pull, newer), status="Engaged"), modified=t0),
        # The portal's own field waits to be pushed (not drift); Airtable's field differs (drift).
        _as_airtable_says(_pulled(pull, pending), claimed_by="bob", company="Elsewhere Inc"),
        _as_airtable_says(_pulled(pull, held), status="Engaged"),
        _pulled(pull, untouched),
    ]

    finding = invariants.window_drift(repo, run.run_id, pulled)

    assert not finding.passed
    assert finding.count == 3
    assert finding.summary == "3 field values differ between the sides"
    assert {e["record_id"]: e["fields"] for e in finding.examples} == {
        plain: "status, claimed_by",
        pending: "company",
    }
    assert finding.figures == {
        "drift_by_field": {"status": 1, "claimed_by": 1, "company": 1},
        "records": 6,
    }
    agreeing = invariants.window_drift(repo, run.run_id, [_pulled(pull, untouched)])
    assert (agreeing.passed, agreeing.count) == (True, 0)
    assert agreeing.summary == "the window's records agree on every mapped field"


def test_drift_counts_a_pulled_record_whose_lead_is_gone_and_goes_on(
    emulator, engine, client, repo
):
    gone = [seed(emulator, Email=f"gone{i}.lead@example.com") for i in range(2)]
    other = seed(emulator, Email="other.lead@example.com", Status="New")
    t0 = now()
    run, pull, _ = run_window(repo, client, t0 - dt.timedelta(minutes=20), t0)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM leads WHERE airtable_record_id = ANY(:r)"), {"r": gone})
    pulled = [
        *(_pulled(pull, rid) for rid in gone),
        _as_airtable_says(_pulled(pull, other), status="Engaged"),
    ]

    finding = invariants.window_drift(repo, run.run_id, pulled)

    assert (finding.passed, finding.count) == (False, 3)
    assert finding.figures["drift_by_field"] == {"(missing lead)": 2, "status": 1}


def test_drift_names_at_most_ten_records(emulator, engine, client, repo):
    ids = [seed(emulator, Email=f"many{i}@example.com", Status="New") for i in range(11)]
    t0 = now()
    run, pull, _ = run_window(repo, client, t0 - dt.timedelta(minutes=20), t0)
    pulled = [_as_airtable_says(_pulled(pull, rid), status="Engaged") for rid in ids]

    finding = invariants.window_drift(repo, run.run_id, pulled)

    assert finding.count == 11
    assert len(finding.examples) == invariants.EXAMPLES == 10


def test_drift_compares_a_record_without_sync_state_or_with_a_column_missing_field_by_field(
    emulator, engine, client, repo
):
    """Most records agree on every column and are passed over whole; these two are not: one
    has lost its sync state (its lead still counts), one's pulled copy lacks a mapped column
    (the others are still compared)."""
    stateless, partial = (
        seed(emulator, Email=f"{name}@example.com", Status="New") for name in ("gone", "partial")
    )
    t0 = now()
    run, pull, _ = run_window(repo, client, t0 - dt.timedelta(minutes=20), t0)
    with engine.begin() as conn:
        conn.execute(
            text("DELETE FROM reconcile.sync_state WHERE airtable_record_id = :r"), {"r": stateless}
        )
    lacking = _as_airtable_says(_pulled(pull, partial), status="Engaged")
    lacking = dataclasses.replace(
        lacking, values={c: v for c, v in lacking.values.items() if c != "company"}
    )
    pulled = [_as_airtable_says(_pulled(pull, stateless), status="Engaged"), lacking]

    finding = invariants.window_drift(repo, run.run_id, pulled)

    assert finding.figures["drift_by_field"] == {"status": 2}
    assert [e["record_id"] for e in finding.examples] == [stateless, partial]


def test_drift_of_a_table_mapping_one_field(emulator, engine, client, repo):
    """A mapping of a single field compares that field (field by field: no tuple to compare)."""
    differs, agrees = (
        seed(emulator, Email=f"{name}@example.com", Status="New") for name in ("one", "same")
    )
    t0 = now()
    run, pull, _ = run_window(repo, client, t0 - dt.timedelta(minutes=20), t0)
    status = repo.mapping.by_column()["status"]
    only_status = Repository(engine, dataclasses.replace(repo.mapping, fields=(status,)))
    pulled = [
        dataclasses.replace(_pulled(pull, differs), values={"status": "Engaged"}),
        dataclasses.replace(_pulled(pull, agrees), values={"status": "New"}),
    ]

    finding = invariants.window_drift(only_status, run.run_id, pulled)

    assert finding.figures["drift_by_field"] == {"status": 1}
    assert finding.examples == [{"record_id": differs, "fields": "status"}]


def test_the_drift_check_never_waits_on_a_portal_transaction(emulator, engine, client, repo):
    """A read-only check: a portal transaction holding a lead's row (a long form save) does not
    block it (with a lock, it would wait here until PostgreSQL's lock timeout)."""
    rid = seed(emulator, Email="busy.lead@example.com")
    t0 = now()
    run, pull, _ = run_window(repo, client, t0 - dt.timedelta(minutes=20), t0)
    impatient = create_engine(
        engine.url.render_as_string(hide_password=False),
        connect_args={"options": "-c lock_timeout=2000"},
    )
    try:
        with engine.connect() as portal:
            portal.execute(
                text("SELECT 1 FROM leads WHERE airtable_record_id = :r FOR UPDATE"), {"r": rid}
            )
            finding = invariants.window_drift(
                Repository(impatient, repo.mapping), run.run_id, pull.records
            )
            portal.rollback()
    finally:
        impatient.dispose()

    assert (finding.passed, finding.count) == (True, 0)
