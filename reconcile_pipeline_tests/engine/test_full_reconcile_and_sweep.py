"""The non-destructive full reconcile reports drift per field and repairs it through the normal
paths; the delete sweep soft-deletes and restores; a mapping that does not match PostgreSQL
fails with one message naming every problem."""

import dataclasses

import pytest
from sqlalchemy import text

from reconcile_pipeline.engine.context import RunContext
from reconcile_pipeline.engine.full_reconcile import full_reconcile
from reconcile_pipeline.engine.mapping import FieldKind, FieldSpec
from reconcile_pipeline.engine.repository import Repository
from reconcile_pipeline.engine.sweep import apply_deletions
from reconcile_pipeline.engine.validate import MappingError, validate_postgres
from reconcile_pipeline_tests.engine.conftest import BASE, TABLE
from reconcile_pipeline_tests.mappings import LEADS_MAPPING


def test_full_reconcile_reports_drift_per_field_and_repairs_it(
    emulator, engine, repo, client, reconcile
):
    ids = emulator.seed_records(
        BASE,
        TABLE,
        [
            {"Email": f"d{i}@example.com", "Status": "New", "Processing Status": "Active"}
            for i in range(4)
        ],
    )
    reconcile()
    with engine.begin() as conn:  # drift the old wipe-and-replace could not see: a tagged write
        conn.execute(text("SET LOCAL reconcile.origin = 'reconciler'"))
        conn.execute(
            text("UPDATE leads SET status = 'Customer' WHERE airtable_record_id = ANY(:i)"),
            {"i": ids[:2]},
        )
        conn.execute(text("UPDATE leads SET portal_priority = 9"))
        conn.execute(text("DELETE FROM leads WHERE airtable_record_id = :i"), {"i": ids[3]})

    result = full_reconcile(repo, client, RunContext(run_id="full"), lock_name="test")

    assert result.drift.drift_by_field == {"status": 2}
    assert result.drift.missing_in_postgres == 1
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT airtable_record_id, status, portal_priority FROM leads "
                "ORDER BY airtable_record_id"
            )
        ).all()
    assert {r.airtable_record_id for r in rows} == set(ids)
    assert {r.status for r in rows} == {"New"}
    assert {r.portal_priority for r in rows if r.airtable_record_id != ids[3]} == {9}


def test_sweep_soft_deletes_then_restores_and_never_deletes_rows(emulator, engine, repo, reconcile):
    ids = emulator.seed_records(BASE, TABLE, [{"Email": f"s{i}@example.com"} for i in range(3)])
    reconcile()

    gone = apply_deletions(repo, ids[:2], RunContext(run_id="sweep-1"))
    back = apply_deletions(repo, ids, RunContext(run_id="sweep-2"))

    assert (gone.soft_deleted, back.restored) == (1, 1)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM leads")).scalar_one() == 3
        assert (
            conn.execute(
                text("SELECT count(*) FROM reconcile.sync_state WHERE deleted_at IS NOT NULL")
            ).scalar_one()
            == 0
        )


def test_sweep_refuses_when_airtable_lists_nothing(emulator, repo, reconcile):
    from reconcile_pipeline.engine.sweep import SuspiciousSweep

    emulator.seed_records(BASE, TABLE, [{"Email": "only@example.com"}])
    reconcile()

    with pytest.raises(SuspiciousSweep, match="AIRTABLE_TABLE"):
        apply_deletions(repo, [], RunContext(run_id="sweep"))


def test_mapping_that_does_not_match_postgres_names_every_problem(engine):
    broken = dataclasses.replace(
        LEADS_MAPPING,
        fields=LEADS_MAPPING.fields
        + (
            FieldSpec("Region", "region", FieldKind.TEXT),
            FieldSpec("Renamed", "booked_on", FieldKind.DATE),
        ),
    )
    broken = dataclasses.replace(
        broken,
        fields=tuple(
            dataclasses.replace(f, kind=FieldKind.INTEGER) if f.column == "company" else f
            for f in broken.fields
        ),
    )

    with pytest.raises(MappingError) as raised:
        validate_postgres(Repository(engine, broken))

    message = str(raised.value)
    assert "column region is missing" in message
    assert "column booked_on is missing" in message
    assert "column company is text, not compatible with integer" in message
