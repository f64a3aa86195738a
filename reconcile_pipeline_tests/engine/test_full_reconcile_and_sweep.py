"""The non-destructive full reconcile reports drift per field and repairs it through the normal
paths, streaming the listing batch by batch; the delete sweep soft-deletes and restores; a mapping
that does not match PostgreSQL fails with one message naming every problem."""

import dataclasses
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from reconcile_pipeline.engine import full_reconcile as full_reconcile_module
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


# ----- the streamed listing ----------------------------------------------------------------------


class ListingBroke(RuntimeError):
    """Airtable stopped answering in the middle of the listing."""


class RepagedClient:
    """The real client with its listing cut into pages of `size` records (the emulator serves
    100 a page); after `fail_after` pages the listing raises. Records which ids it served."""

    def __init__(self, client, size: int, fail_after: int | None = None) -> None:
        self.client, self.size, self.fail_after = client, size, fail_after
        self.served: list[str] = []

    def __getattr__(self, name: str):
        return getattr(self.client, name)

    def iter_all(self, fields: list[str] | None = None) -> Iterator[list[dict]]:
        pages = 0
        for page in self.client.iter_all(fields=fields):
            for start in range(0, len(page), self.size):
                if self.fail_after is not None and pages >= self.fail_after:
                    raise ListingBroke("the listing failed halfway")
                chunk = page[start : start + self.size]
                self.served.extend(r["id"] for r in chunk)
                pages += 1
                yield chunk


def tagged(engine, statement: str, **params) -> None:
    """A write the capture trigger ignores: drift only a full reconcile can see."""
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL reconcile.origin = 'reconciler'"))
        conn.execute(text(statement), params)


def insert_unlisted_lead(engine, record_id: str, client_id: str | None = None) -> None:
    """A linked lead whose record Airtable does not list."""
    tagged(
        engine,
        "INSERT INTO leads (airtable_record_id, email, client_id) VALUES (:r, :e, :c)",
        r=record_id,
        e=f"{record_id}@example.com",
        c=client_id,
    )


def column(engine, statement: str, **params) -> list:
    with engine.connect() as conn:
        return list(conn.execute(text(statement), params).scalars())


def test_streamed_batches_report_and_repair_as_one_batch_would(
    emulator, engine, repo, client, reconcile, monkeypatch
):
    ids = emulator.seed_records(
        BASE, TABLE, [{"Email": f"b{i}@example.com", "Status": "New"} for i in range(12)]
    )
    reconcile()
    drifted = [ids[1], ids[6], ids[11]]  # one in each batch of 4
    tagged(
        engine, "UPDATE leads SET status = 'Customer' WHERE airtable_record_id = ANY(:i)", i=drifted
    )
    tagged(engine, "DELETE FROM leads WHERE airtable_record_id = ANY(:i)", i=[ids[2], ids[9]])
    insert_unlisted_lead(engine, "recAlreadyGone0001")
    apply_deletions(repo, [*ids, "recGoneNow00000001"], RunContext(run_id="sweep"))
    insert_unlisted_lead(engine, "recGoneNow00000001")
    # One batch (what the listing held in memory whole before streaming), in a dry run: the
    # reference, measured on the same state the streamed run then repairs.
    one_batch = full_reconcile(
        repo, RepagedClient(client, 4), RunContext(run_id="one", dry_run=True), lock_name="test"
    )
    monkeypatch.setattr(full_reconcile_module, "BATCH_RECORDS", 4)
    compared: list[int] = []
    leads_of = repo.leads_of
    monkeypatch.setattr(
        repo, "leads_of", lambda conn, rids: compared.append(len(rids)) or leads_of(conn, rids)
    )

    streamed = full_reconcile(
        repo, RepagedClient(client, 4), RunContext(run_id="streamed"), lock_name="test"
    )

    assert compared == [4, 4, 4]  # each batch read its own leads, never the whole table
    assert len(streamed.pull.transaction_ids) == 3
    assert streamed.drift == one_batch.drift
    assert streamed.drift.drift_by_field == {"status": 3}
    assert [e["record_id"] for e in streamed.drift.examples] == drifted
    assert (
        streamed.drift.records_compared,
        streamed.drift.missing_in_postgres,
        streamed.drift.missing_in_airtable,
    ) == (12, 2, 1)
    assert streamed.pull.counts() == one_batch.pull.counts()
    assert (streamed.pull.inserted, streamed.pull.updated, streamed.pull.unchanged) == (2, 3, 7)
    # (Its linked leads differ: the dry run's inserts were rolled back before its sweep.)
    assert (streamed.sweep.soft_deleted, streamed.sweep.restored) == (1, 0)
    assert (one_batch.sweep.soft_deleted, one_batch.sweep.restored) == (1, 0)
    assert set(
        column(engine, "SELECT status FROM leads WHERE airtable_record_id = ANY(:i)", i=ids)
    ) == {"New"}
    assert column(
        engine, "SELECT airtable_record_id FROM leads WHERE NOT is_active ORDER BY 1"
    ) == ["recAlreadyGone0001", "recGoneNow00000001"]


def test_a_listing_that_fails_halfway_soft_deletes_nothing_and_a_rerun_completes(
    emulator, engine, repo, client, reconcile, monkeypatch
):
    ids = emulator.seed_records(
        BASE, TABLE, [{"Email": f"f{i}@example.com", "Status": "New"} for i in range(12)]
    )
    reconcile()
    tagged(engine, "UPDATE leads SET status = 'Customer'")
    insert_unlisted_lead(engine, "recGoneNow00000001")
    monkeypatch.setattr(full_reconcile_module, "BATCH_RECORDS", 4)
    broken = RepagedClient(client, 4, fail_after=2)

    with pytest.raises(ListingBroke):
        full_reconcile(repo, broken, RunContext(run_id="broken"), lock_name="test")

    statuses = dict(
        zip(
            column(engine, "SELECT airtable_record_id FROM leads ORDER BY id"),
            column(engine, "SELECT status FROM leads ORDER BY id"),
            strict=True,
        )
    )
    # The two batches merged before the failure are repaired whole, the rest untouched.
    assert len(broken.served) == 8
    assert {rid for rid, status in statuses.items() if status == "New"} == set(broken.served)
    assert column(
        engine, "SELECT count(*) FROM reconcile.sync_state WHERE deleted_at IS NOT NULL"
    ) == [0]
    assert column(engine, "SELECT count(*) FROM leads WHERE NOT is_active") == [0]

    rerun = full_reconcile(
        repo, RepagedClient(client, 4), RunContext(run_id="rerun"), lock_name="test"
    )
    again = full_reconcile(
        repo, RepagedClient(client, 4), RunContext(run_id="again"), lock_name="test"
    )

    assert rerun.drift.drift_by_field == {"status": 4}
    assert (rerun.sweep.soft_deleted, rerun.drift.missing_in_airtable) == (1, 1)
    assert set(
        column(engine, "SELECT status FROM leads WHERE airtable_record_id = ANY(:i)", i=ids)
    ) == {"New"}
    assert (again.drift.drifted_records, again.drift.missing_in_airtable) == (0, 0)
    assert (again.pull.unchanged, again.sweep.soft_deleted) == (12, 0)


def test_another_client_s_leads_on_a_shared_table_are_never_missing(emulator, engine, client):
    scoped = dataclasses.replace(
        LEADS_MAPPING,
        fields=tuple(f for f in LEADS_MAPPING.fields if f.column != "client_id"),
        client_column="client_id",
        client_value="acme",
    )
    repo = Repository(engine, scoped)
    repo.register_tracked_columns()
    emulator.seed_records(BASE, TABLE, [{"Email": f"c{i}@example.com"} for i in range(3)])
    full_reconcile(repo, client, RunContext(run_id="first"), lock_name="test")
    insert_unlisted_lead(engine, "recGlobex000000001", client_id="globex")
    insert_unlisted_lead(engine, "recAcmeGone0000001", client_id="acme")

    result = full_reconcile(repo, client, RunContext(run_id="second"), lock_name="test")

    assert result.drift.missing_in_airtable == 1
    assert result.sweep.soft_deleted == 1
    assert column(engine, "SELECT airtable_record_id FROM leads WHERE NOT is_active") == [
        "recAcmeGone0000001"
    ]
