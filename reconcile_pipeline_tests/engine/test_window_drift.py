"""The drift check's verdicts on one real pull: what it counts and what it must leave out.

The check compares the window's records as the run pulled them with the portal's rows after
the run. It reads only a brief view of the sync state (deleted, dirty, the Airtable version
applied), so each exclusion is pinned here against the values it reads back from PostgreSQL.
"""

import dataclasses
import datetime as dt

from sqlalchemy import text

from reconcile_pipeline.engine import invariants
from reconcile_pipeline_tests.engine.test_end_to_end import portal_write, seed
from reconcile_pipeline_tests.engine.test_trust import now, run_window


def _pulled(pull, record_id):
    return next(r for r in pull.records if r.record_id == record_id)


def _as_airtable_says(record, **values):
    """The pulled record, as if Airtable had answered `values` (the portal's row still holds
    the values the merge wrote)."""
    return dataclasses.replace(record, values={**record.values, **values})


def test_drift_counts_what_differs_and_leaves_out_deleted_newer_and_pending_portal_edits(
    emulator, engine, client, repo
):
    ids = [seed(emulator, Email=f"drift{i}@example.com", Status="New") for i in range(5)]
    plain, deleted, newer, pending, untouched = ids
    t0 = now()
    run, pull, _ = run_window(repo, client, t0 - dt.timedelta(minutes=20), t0)
    assert pull.pulled == 5
    portal_write(engine, pending, claimed_by="ana")  # waits to be pushed
    with engine.begin() as conn:
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
        _as_airtable_says(_pulled(pull, plain), status="Engaged"),
        _as_airtable_says(_pulled(pull, deleted), status="Engaged"),
        # This run's copy is older than the version applied since.
        dataclasses.replace(_as_airtable_says(_pulled(pull, newer), status="Engaged"), modified=t0),
        # The portal's own field waits to be pushed (not drift); Airtable's field differs (drift).
        _as_airtable_says(_pulled(pull, pending), claimed_by="bob", company="Elsewhere Inc"),
        _pulled(pull, untouched),
    ]

    finding = invariants.window_drift(repo, run.run_id, pulled)

    assert not finding.passed
    assert finding.count == 2
    assert {e["record_id"]: e["fields"] for e in finding.examples} == {
        plain: "status",
        pending: "company",
    }


def test_drift_counts_a_pulled_record_whose_lead_is_gone(emulator, engine, client, repo):
    rid = seed(emulator, Email="gone.lead@example.com")
    t0 = now()
    run, pull, _ = run_window(repo, client, t0 - dt.timedelta(minutes=20), t0)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM leads WHERE airtable_record_id = :r"), {"r": rid})

    finding = invariants.window_drift(repo, run.run_id, pull.records)

    assert (finding.passed, finding.count) == (False, 1)
