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


def test_every_request_is_counted_and_the_budget_check_warns_at_80_percent(
    emulator, run, database_url
):
    emulator.seed_records(BASE, LEADS, [lead(1)])
    result, counts = run()
    assert result.success
    engine = create_engine(database_url)
    with engine.connect() as conn:
        counted = conn.execute(
            text("SELECT sum(requests) FROM reconcile.api_usage WHERE client = 'demo'")
        ).scalar_one()
    assert counted == counts["meta"] + counts["list"]  # every request the base answered
    [budget] = [
        e for e in result.get_asset_check_evaluations() if e.check_name == "airtable_api_budget"
    ]
    assert budget.passed

    # 80,000 of the Team plan's 100,000 calls spent this month: the check warns.
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO reconcile.api_usage (client, base_id, day, requests) "
                "VALUES ('demo', :b, (now() AT TIME ZONE 'UTC')::date - 0, 80000) "
                "ON CONFLICT (client, base_id, day) DO UPDATE SET requests = 80000"
            ),
            {"b": BASE},
        )
    engine.dispose()
    result, _ = run()
    [budget] = [
        e for e in result.get_asset_check_evaluations() if e.check_name == "airtable_api_budget"
    ]
    assert result.success  # a WARN: the sync goes on
    assert not budget.passed
    assert budget.severity == dg.AssetCheckSeverity.WARN
    assert "80," in budget.description and "100,000" in budget.description


def test_the_schedule_slows_down_instead_of_blowing_the_quota(database_url, monkeypatch):
    from reconcile_pipeline.defs.jobs import client_jobs

    schedule = client_jobs["demo"].schedules[0]
    monkeypatch.setenv("DATABASE_URL", database_url)

    def evaluate(tick: dt.datetime):
        context = dg.build_schedule_context(
            scheduled_execution_time=tick, repository_def=defs.get_repository_def()
        )
        return schedule.evaluate_tick(context)

    quarter_past = dt.datetime.now(dt.UTC).replace(minute=15, second=0, microsecond=0)
    assert len(evaluate(quarter_past).run_requests) == 1  # within budget: every tick

    # Three times the plan projected for the month: every hour, each run covering the hour.
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO reconcile.api_usage (client, base_id, day, requests) "
                "VALUES ('demo', :b, (now() AT TIME ZONE 'UTC')::date, 10000000)"
            ),
            {"b": BASE},
        )
    engine.dispose()
    skipped = evaluate(quarter_past)
    assert skipped.run_requests == [] and "every 60 minutes" in skipped.skip_message
    on_the_hour = quarter_past.replace(minute=0)
    [request] = evaluate(on_the_hour).run_requests  # the hour's one run (its pull starts at
    assert request.partition_key == partition_key_for(on_the_hour)  # the high-water mark)
