"""The API budget (issue 15): an idle run costs its listings alone: the Airtable schema is read
at most once a day, or again at once when a run meets a field, option or value shape the cached
schema does not know. Through real runs of the demo client's job against the emulator."""

import datetime as dt

import dagster as dg
import pytest
from sqlalchemy import create_engine, text

from reconcile_pipeline.airtable.resource import AirtableResource
from reconcile_pipeline.definitions import defs
from reconcile_pipeline.defs.partitions import partition_key_for
from reconcile_pipeline.defs.resources import PostgresResource
from reconcile_pipeline.emulator.server import run_emulator
from reconcile_pipeline_tests.mappings import STATUS_CHOICES

BASE, LEADS = "appDemoLeads00001", "Leads"
STATUS_ID = "fldbae7d5be70820e"  # the demo file's Status (a single select, Airtable-owned)


@pytest.fixture
def emulator():
    with run_emulator(rate_limit=0) as emulator:
        yield emulator


@pytest.fixture
def run(emulator, database_url):
    resources = {
        "airtable_demo": AirtableResource(
            api_key=emulator.token, base_id=BASE, endpoint_url=emulator.url, requests_per_second=0
        ),
        "postgres": PostgresResource(database_url=database_url),
    }
    instance = dg.DagsterInstance.ephemeral()

    def run_once() -> tuple[dg.ExecuteInProcessResult, dict[str, int]]:
        emulator.reset_request_log()
        result = defs.resolve_job_def("reconcile_demo").execute_in_process(
            instance=instance,
            resources=resources,
            partition_key=partition_key_for(dt.datetime.now(dt.UTC)),
            raise_on_error=False,
        )
        counts = {"meta": 0, "list": 0}
        for key, n in emulator.request_log()["counts"].items():
            counts["meta" if "/meta/" in key else "list"] += n
        return result, counts

    return run_once


def lead(i: int, **fields) -> dict:
    return {"Email": f"lead{i}@example.com", "Status": "New", **fields}


def quarantined(database_url: str) -> int:
    engine = create_engine(database_url)
    with engine.connect() as conn:
        count = conn.execute(
            text("SELECT count(*) FROM reconcile.quarantine WHERE released_at IS NULL")
        ).scalar_one()
    engine.dispose()
    return count


def test_an_idle_run_makes_no_metadata_call_once_the_schema_is_cached(emulator, run):
    emulator.seed_records(BASE, LEADS, [lead(1)])
    first, first_counts = run()
    idle, idle_counts = run()

    assert first.success and idle.success
    assert first_counts["meta"] >= 1  # the first run reads the schema (and caches it)
    # The idle run: one listing per synced table (leads, campaigns), nothing else.
    assert idle_counts == {"meta": 0, "list": 2}


def test_a_new_select_option_is_read_at_once_and_its_value_accepted(emulator, run, database_url):
    emulator.seed_records(BASE, LEADS, [lead(1)])
    assert run()[0].success  # the schema is cached without "Dormant"

    # Airtable's Status gains an option (a schema change the cached schema does not know).
    names = [*sorted(STATUS_CHOICES), "Dormant"]
    emulator.retype_field(
        BASE, LEADS, STATUS_ID, "singleSelect", options={"choices": [{"name": n} for n in names]}
    )
    emulator.seed_records(BASE, LEADS, [lead(2, Status="Dormant")])
    result, counts = run()

    assert result.success
    assert counts["meta"] >= 1  # re-read because the pull met an option it did not know
    assert quarantined(database_url) == 0  # the new option is valid: nothing held


def test_a_schema_older_than_a_day_is_read_again(emulator, run, database_url):
    emulator.seed_records(BASE, LEADS, [lead(1)])
    assert run()[0].success
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE reconcile.airtable_schemas SET fetched_at = now() - interval '25 hours'")
        )
    engine.dispose()

    result, counts = run()

    assert result.success
    assert counts["meta"] >= 1
