"""Change capture (DESIGN §3.2): the database itself records portal edits of portal-owned columns
in `reconcile.sync_state.portal_change_counter`, whatever code path wrote them, and ignores the
reconciler's own writes (transactions tagged with SET LOCAL reconcile.origin = 'reconciler')."""

import pytest
from sqlalchemy import text

RECORD_ID = "recLEAD0000000001"


def _insert_lead(conn, **overrides) -> None:
    values = {"airtable_record_id": RECORD_ID, "email": "lead@example.com", "status": "New"}
    values.update(overrides)
    columns = ", ".join(values)
    params = ", ".join(f":{name}" for name in values)
    conn.execute(text(f"INSERT INTO leads ({columns}) VALUES ({params})"), values)


def _counter(conn) -> int:
    value = conn.execute(
        text(
            "SELECT portal_change_counter FROM reconcile.sync_state "
            "WHERE table_key = 'leads' AND airtable_record_id = :rid"
        ),
        {"rid": RECORD_ID},
    ).scalar()
    return value or 0


@pytest.fixture
def lead(engine):
    """One linked lead inserted by the reconciler (so it starts with no portal change)."""
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL reconcile.origin = 'reconciler'"))
        _insert_lead(conn)
    return RECORD_ID


def test_portal_update_of_claimed_by_bumps_the_counter(engine, lead):
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE leads SET claimed_by = 'ana' WHERE airtable_record_id = :r"), {"r": lead}
        )
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE leads SET notes = 'called' WHERE airtable_record_id = :r"), {"r": lead}
        )
    with engine.connect() as conn:
        assert _counter(conn) == 2


def test_update_of_a_column_the_portal_does_not_own_is_not_captured(engine, lead):
    with engine.begin() as conn:
        # `status` is Airtable-owned, `portal_priority` local-only: neither is the portal's to push.
        conn.execute(
            text(
                "UPDATE leads SET status = 'Engaged', portal_priority = 3 "
                "WHERE airtable_record_id = :r"
            ),
            {"r": lead},
        )
    with engine.connect() as conn:
        assert _counter(conn) == 0


def test_reconciler_tagged_transaction_is_not_captured(engine, lead):
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL reconcile.origin = 'reconciler'"))
        conn.execute(
            text("UPDATE leads SET claimed_by = 'ana' WHERE airtable_record_id = :r"), {"r": lead}
        )
    # SET LOCAL ends with its transaction: the next portal write is captured again.
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE leads SET claimed_by = 'bo' WHERE airtable_record_id = :r"), {"r": lead}
        )
    with engine.connect() as conn:
        assert _counter(conn) == 1


def test_no_op_update_is_not_captured(engine, lead):
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE leads SET claimed_by = 'ana' WHERE airtable_record_id = :r"), {"r": lead}
        )
    with engine.begin() as conn:
        # Same value again, and a touch of updated_at like the old API routes did.
        conn.execute(
            text(
                "UPDATE leads SET claimed_by = 'ana', updated_at = now() "
                "WHERE airtable_record_id = :r"
            ),
            {"r": lead},
        )
    with engine.connect() as conn:
        assert _counter(conn) == 1


def test_tracked_columns_come_from_configuration(engine, lead):
    """Making `title` portal-owned is a row in reconcile.tracked_columns, not a trigger change."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO reconcile.tracked_columns VALUES ('leads', 'title', 'portal', "
                "'demo')"
            )
        )
        conn.execute(
            text("UPDATE leads SET title = 'CTO' WHERE airtable_record_id = :r"), {"r": lead}
        )
    with engine.connect() as conn:
        assert _counter(conn) == 1


def test_portal_insert_of_a_linked_lead_with_portal_values_is_captured(engine):
    with engine.begin() as conn:
        _insert_lead(conn, claimed_by="ana")
    with engine.connect() as conn:
        assert _counter(conn) == 1


def test_unlinked_lead_is_not_tracked(engine):
    with engine.begin() as conn:
        _insert_lead(conn, airtable_record_id=None, claimed_by="ana")
        rows = conn.execute(text("SELECT count(*) FROM reconcile.sync_state")).scalar_one()
    assert rows == 0
