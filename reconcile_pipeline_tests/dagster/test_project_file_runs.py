"""The project file through real Dagster runs against the emulator (issue 12): fields are
addressed by Airtable id, so renames change nothing; a deleted or retyped field fails the run
with one message naming it; select options come from Airtable's schema at run time."""

import datetime as dt

import pytest
from sqlalchemy import create_engine, text

from reconcile_pipeline.airtable.resource import AirtableResource
from reconcile_pipeline.defs.partitions import partition_key_for
from reconcile_pipeline.defs.resources import PostgresResource
from reconcile_pipeline.emulator.admin_client import EmulatorAdmin
from reconcile_pipeline.emulator.server import run_emulator
from reconcile_pipeline_tests.dagster.test_reconcile_assets import (
    AIRTABLE,
    BASE,
    TABLE,
    lead_fields,
    materialize,
    materialized,
    metadata,
    portal_write,
)

STATUS_ID = "fldbae7d5be70820e"  # the demo file's Status (Airtable-owned)
CLAIMED_BY_ID = "fld476b90e65f5408"  # Claimed By (portal-owned)
CLAIMED_AT_ID = "flddd890f84393d78"  # Claimed At (portal-owned)


@pytest.fixture
def emulator():
    with run_emulator(rate_limit=0) as emulator:
        yield emulator


@pytest.fixture
def resources(emulator, database_url):
    return {
        AIRTABLE: AirtableResource(
            api_key=emulator.token, base_id=BASE, endpoint_url=emulator.url, requests_per_second=0
        ),
        "postgres": PostgresResource(database_url=database_url),
    }


def now_key() -> str:
    return partition_key_for(dt.datetime.now(dt.UTC))


def column(database_url: str, record_id: str, name: str):
    engine = create_engine(database_url)
    with engine.connect() as conn:
        value = conn.execute(
            text(f"SELECT {name} FROM leads WHERE airtable_record_id = :r"), {"r": record_id}
        ).scalar_one()
    engine.dispose()
    return value


def step_failure_text(result) -> str:
    """Every step failure's message and its causes."""
    texts = []
    for event in result.all_events:
        if event.is_step_failure and event.event_specific_data.error is not None:
            error = event.event_specific_data.error
            while error is not None:
                texts.append(error.message)
                error = error.cause
    return "\n".join(texts)


def test_renaming_fields_and_the_table_in_airtable_changes_nothing(
    emulator, resources, database_url
):
    [rid] = emulator.seed_records(BASE, TABLE, [lead_fields(1)])
    assert materialize(resources, partition_key=now_key()).success

    # The business renames fields (one it owns, one the portal owns) and the table itself.
    emulator.rename_field(BASE, TABLE, STATUS_ID, "Lead Status")
    emulator.rename_field(BASE, TABLE, CLAIMED_BY_ID, "Owner Rep")
    emulator.rename_table(BASE, TABLE, "Prospects")
    emulator.update_record_fields(BASE, "Prospects", rid, {"Lead Status": "Qualified"})
    portal_write(database_url, rid, claimed_by="ana")

    result = materialize(resources, partition_key=now_key())

    assert result.success, step_failure_text(result)
    assert column(database_url, rid, "status") == "Qualified"  # pulled under its new name
    fields = next(r for r in emulator.all_records(BASE, "Prospects") if r["id"] == rid)["fields"]
    assert fields["Owner Rep"] == "ana"  # pushed under its new name
    assert metadata(result, "postgres_leads")["quarantined"] == 0


def test_a_deleted_mapped_field_fails_the_run_naming_it(emulator, resources, database_url):
    emulator.seed_records(BASE, TABLE, [lead_fields(1)])
    emulator.delete_field(BASE, TABLE, CLAIMED_AT_ID)

    result = materialize(resources, partition_key=now_key())

    assert not result.success
    message = step_failure_text(result)
    assert f"Claimed At ({CLAIMED_AT_ID}) is not in the table" in message
    assert "remove it from the project file" in message
    assert "airtable_push_results" not in materialized(result)  # nothing synced wrong


def test_a_retyped_mapped_field_fails_the_run_naming_it(emulator, resources, database_url):
    emulator.seed_records(BASE, TABLE, [lead_fields(1)])
    emulator.retype_field(BASE, TABLE, CLAIMED_AT_ID, "checkbox")

    result = materialize(resources, partition_key=now_key())

    assert not result.success
    message = step_failure_text(result)
    assert f"Claimed At ({CLAIMED_AT_ID}) is now checkbox in Airtable" in message


def test_an_option_added_in_airtable_is_accepted(emulator, resources, database_url):
    """Select options come from Airtable's schema at run time, not from code."""
    [rid] = emulator.seed_records(BASE, TABLE, [lead_fields(1)])
    assert materialize(resources, partition_key=now_key()).success
    emulator.update_record_fields(BASE, TABLE, rid, {"Status": "Nurture"}, typecast=True)

    result = materialize(resources, partition_key=now_key())

    assert result.success
    assert metadata(result, "postgres_leads")["quarantined"] == 0
    assert column(database_url, rid, "status") == "Nurture"

    # A portal value that is no option of Airtable's select is held, never sent.
    portal_write(database_url, rid, processing_status="Not An Option")
    held = materialize(resources, partition_key=now_key())
    assert metadata(held, "airtable_push_results")["held"] == 1


def test_attachments_reach_postgres_without_their_expiring_urls(emulator, resources, database_url):
    [rid] = emulator.seed_records(
        BASE,
        TABLE,
        [lead_fields(1, Attachments=[{"url": "https://example.com/quote.pdf"}])],
    )

    assert materialize(resources, partition_key=now_key()).success

    [stored] = column(database_url, rid, "attachments")
    assert stored["id"].startswith("att") and "url" not in stored
    assert "thumbnails" not in stored


class RenamingMidRun(AirtableResource):
    """The production resource; once a run's listing has been read, the business renames two
    fields and the table in Airtable (the run's cached schema still has the old names)."""

    def table_client(self, mapping):
        client = super().table_client(mapping)
        if mapping.name == "leads" and not getattr(client, "_renames_mid_run", False):
            listing = client.iter_modified

            def iter_modified_then_rename(*args, **kwargs):
                yield from listing(*args, **kwargs)
                admin = EmulatorAdmin(self.endpoint_url)
                admin.rename_field(BASE, mapping.airtable_table, CLAIMED_BY_ID, "Owner Rep")
                admin.rename_field(BASE, mapping.airtable_table, STATUS_ID, "Lead Status")
                admin.rename_table(BASE, mapping.airtable_table, "Prospects")
                admin.close()

            client.iter_modified = iter_modified_then_rename
            client._renames_mid_run = True
        return client


def test_renames_in_the_middle_of_a_run_change_nothing(emulator, database_url):
    [rid] = emulator.seed_records(BASE, TABLE, [lead_fields(1)])
    plain = {
        AIRTABLE: AirtableResource(
            api_key=emulator.token, base_id=BASE, endpoint_url=emulator.url, requests_per_second=0
        ),
        "postgres": PostgresResource(database_url=database_url),
    }
    assert materialize(plain, partition_key=now_key()).success
    emulator.update_record_fields(BASE, TABLE, rid, {"Status": "Qualified"})
    portal_write(database_url, rid, claimed_by="ana")
    renaming = {
        **plain,
        AIRTABLE: RenamingMidRun(
            api_key=emulator.token, base_id=BASE, endpoint_url=emulator.url, requests_per_second=0
        ),
    }

    result = materialize(renaming, partition_key=now_key())

    assert result.success, step_failure_text(result)
    assert column(database_url, rid, "status") == "Qualified"
    fields = next(r for r in emulator.all_records(BASE, "Prospects") if r["id"] == rid)["fields"]
    assert fields["Owner Rep"] == "ana"  # pushed after the rename, by field id
