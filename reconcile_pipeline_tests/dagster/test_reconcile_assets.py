"""The reconcile assets through real Dagster runs, the real engine, real PostgreSQL and the
emulator: one window, a 72-window range as one run with one Airtable query, metadata a person
can read, and blocking checks that stop the push when a loop or a duplicate is seeded."""

import datetime as dt
import math

import dagster as dg
import pytest
from sqlalchemy import text

from reconcile_pipeline.airtable.resource import AirtableResource
from reconcile_pipeline.defs.assets import reconcile_assets
from reconcile_pipeline.defs.checks import reconcile_checks
from reconcile_pipeline.defs.naming import airtable_resource_key
from reconcile_pipeline.defs.partitions import partition_key_for
from reconcile_pipeline.defs.resources import PostgresResource
from reconcile_pipeline.emulator.server import run_emulator

BASE, TABLE = "appDemoLeads00001", "Leads"
CLIENT = "demo"  # the demo project's client: its assets are keyed demo/<table>/…
AIRTABLE = airtable_resource_key(CLIENT)


@pytest.fixture
def emulator():
    with run_emulator(rate_limit=0) as emulator:
        yield emulator


@pytest.fixture
def resources(emulator, database_url):
    return {
        AIRTABLE: AirtableResource(
            api_key=emulator.token,
            base_id=BASE,
            table=TABLE,
            endpoint_url=emulator.url,
            requests_per_second=0,
        ),
        "postgres": PostgresResource(database_url=database_url),
    }


def lead_fields(i: int, **overrides) -> dict:
    return {
        "Email": f"lead{i}@example.com",
        "First Name": f"Lead{i}",
        "Status": "New",
        "Processing Status": "Active",
        "Campaign ID": "cmp-1",
        **overrides,
    }


def materialize(resources, partition_key=None, tags=None, instance=None):
    return dg.materialize(
        [*reconcile_assets, *reconcile_checks],
        resources=resources,
        partition_key=partition_key,
        tags=tags,
        instance=instance,
        raise_on_error=False,
    )


def metadata(result, asset: str) -> dict:
    # A range run records one materialization per window, all with the same metadata.
    event = next(
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey([CLIENT, "leads", asset])
    )
    return {k: v.value for k, v in event.materialization.metadata.items()}


def check_results(result) -> dict[str, bool]:
    """Every check of every table (the demo's only client's): `table/check` → passed."""
    return {
        f"{e.asset_key.path[1]}/{e.check_name}": e.passed
        for e in result.get_asset_check_evaluations()
    }


def materialized(result) -> set[str]:
    """The leads table's materialized asset names (without the `demo/leads/` prefix)."""
    return {
        e.asset_key.path[-1]
        for e in result.get_asset_materialization_events()
        if e.asset_key.path[:2] == [CLIENT, "leads"]
    }


def portal_write(database_url, record_id: str, **values) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(database_url)
    with engine.begin() as conn:
        assignments = ", ".join(f"{c} = :{c}" for c in values)
        conn.execute(
            text(f"UPDATE leads SET {assignments} WHERE airtable_record_id = :rid"),
            {"rid": record_id, **values},
        )
    engine.dispose()


def test_one_window_pulls_merges_and_pushes_with_readable_metadata(
    emulator, resources, database_url
):
    ids = emulator.seed_records(BASE, TABLE, [lead_fields(i) for i in range(25)])
    now_key = partition_key_for(dt.datetime.now(dt.UTC))

    first = materialize(resources, partition_key=now_key)

    assert first.success
    assert metadata(first, "airtable_leads")["pulled"] == 25
    merged = metadata(first, "postgres_leads")
    assert (merged["inserted"], merged["updated"], merged["quarantined"]) == (25, 0, 0)
    assert all(check_results(first).values()), check_results(first)

    portal_write(database_url, ids[0], claimed_by="ana")
    emulator.update_record_fields(BASE, TABLE, ids[1], {"Status": "Qualified"})
    second = materialize(resources, partition_key=now_key)

    assert metadata(second, "postgres_dirty_leads")["dirty"] == 1
    pushed = metadata(second, "airtable_push_results")
    assert (pushed["pushed"], pushed["failed"]) == (1, 0)
    assert metadata(second, "postgres_leads")["updated"] == 1
    assert ids[0] in str(metadata(second, "airtable_push_results")["preview"])
    window = metadata(second, "airtable_leads")["window"]
    assert "UTC" in window


def test_a_run_converts_each_pulled_record_once_and_never_reads_its_snapshot_back(
    emulator, resources, monkeypatch
):
    """Issue 15, goal 7: the pull converts each record as it streams in; the merge, the frame
    in the metadata and the window's drift check use those typed records (the snapshot is
    written for the record, never read back by the run that wrote it)."""
    from reconcile_pipeline.engine.convert import conversions
    from reconcile_pipeline.engine.repository import Repository

    emulator.seed_records(BASE, TABLE, [lead_fields(i) for i in range(40)])
    reads = []
    read_snapshot = Repository.snapshot_records
    monkeypatch.setattr(
        Repository,
        "snapshot_records",
        lambda *a, **k: reads.append(1) or read_snapshot(*a, **k),
    )
    before = conversions.value

    result = materialize(resources, partition_key=partition_key_for(dt.datetime.now(dt.UTC)))

    assert result.success
    assert check_results(result)["leads/no_drift_in_window"] is True
    assert metadata(result, "airtable_leads")["pulled"] == 40
    assert conversions.value - before == 40  # the demo's campaigns table is empty
    assert reads == []


def test_a_dry_run_writes_nothing_and_its_drift_check_reports_what_it_left(
    emulator, resources, database_url
):
    """`dry_run: true` (the launchpad's plan): Airtable edits are planned, not written; the
    mark stays; the window's drift check reports the planned fields as the drift they still
    are (from the run's converted records, as a snapshot read would)."""
    from sqlalchemy import create_engine

    from reconcile_pipeline.defs.assets import client_tables

    ids = emulator.seed_records(BASE, TABLE, [lead_fields(i) for i in range(10)])
    key = partition_key_for(dt.datetime.now(dt.UTC))
    assert materialize(resources, partition_key=key).success
    for rid in ids[:3]:
        emulator.update_record_fields(BASE, TABLE, rid, {"Status": "Qualified"})

    planned = dg.materialize(
        [*reconcile_assets, *reconcile_checks],
        resources=resources,
        partition_key=key,
        run_config={
            "ops": {
                asset.op.name: {"config": {"dry_run": True}}
                for table in client_tables[CLIENT]
                for asset in (table.pulled, table.pushed)
            }
        },
        raise_on_error=False,
    )

    assert planned.success
    merged = metadata(planned, "postgres_leads")
    assert (merged["updated"], merged["dry_run"]) == (3, True)
    assert merged["high_water_mark"] == "not advanced"
    [drift] = [
        e
        for e in planned.get_asset_check_evaluations()
        if e.check_name == "no_drift_in_window" and e.asset_key.path[1] == "leads"
    ]
    assert drift.passed is False
    assert drift.metadata["count"].value == 3  # the three planned Status changes
    engine = create_engine(database_url)
    with engine.connect() as conn:
        statuses = conn.execute(
            text("SELECT DISTINCT status FROM leads WHERE airtable_record_id = ANY(:ids)"),
            {"ids": ids[:3]},
        ).scalars().all()
    engine.dispose()
    assert statuses == ["New"]  # nothing written


def test_a_72_window_range_is_one_run_with_one_airtable_query(emulator, resources):
    now = dt.datetime.now(dt.UTC)
    count = 450
    modified = [now - dt.timedelta(minutes=3 * i + 1) for i in range(count)]  # last 22.5 hours
    emulator.seed_records(
        BASE,
        TABLE,
        [lead_fields(i) for i in range(count)],
        created_time=[m - dt.timedelta(days=3) for m in modified],
        modified_time=modified,
    )
    last_key = partition_key_for(now)
    first_key = partition_key_for(now - dt.timedelta(minutes=20 * 71))
    emulator.reset_request_log()

    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize(
            resources,
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": first_key,
                "dagster/asset_partition_range_end": last_key,
            },
        )
        runs = instance.get_runs()
        windows = {
            e.partition
            for e in result.get_asset_materialization_events()
            if e.asset_key == dg.AssetKey([CLIENT, "leads", "airtable_leads"])
        }

    assert result.success
    assert len(windows) == 72
    assert len(runs) == 1
    # A range run's numbers are its totals, in one `range_totals` entry (not one per window).
    pulled = metadata(result, "airtable_leads")["range_totals"]
    assert pulled["pulled"] == count
    list_requests = sum(
        n for key, n in emulator.request_log()["counts"].items() if "/meta/" not in key
    )
    # One filtered listing per table: ⌈450/100⌉ pages of leads and one (full, first) pull of
    # the demo's empty campaigns table; the only other calls read the tables' metadata.
    assert list_requests == math.ceil(count / 100) + 1
    assert pulled["airtable_requests"] == math.ceil(count / 100)
    assert metadata(result, "postgres_leads")["range_totals"]["inserted"] == count
    # Nothing the UI plots per partition: the range's totals drawn on all 72 windows would read
    # as 72 times the work.
    plotted = {
        key
        for e in result.get_asset_materialization_events()
        for key, value in e.materialization.metadata.items()
        if isinstance(value, dg.IntMetadataValue | dg.FloatMetadataValue)
    }
    assert plotted == set()


def test_a_seeded_loop_fails_the_blocking_check_and_stops_the_push(
    emulator, resources, database_url, engine
):
    ids = emulator.seed_records(BASE, TABLE, [lead_fields(i) for i in range(3)])
    key = partition_key_for(dt.datetime.now(dt.UTC))
    assert materialize(resources, partition_key=key).success
    # Break origin tagging: the trigger now takes the reconciler's own writes for portal edits
    # (neither its WHEN condition nor its body looks at the tag any more).
    with engine.begin() as conn:
        conn.execute(
            text(
                "DROP TRIGGER reconcile_capture_portal_change ON leads; "
                "CREATE TRIGGER reconcile_capture_portal_change AFTER INSERT OR UPDATE ON leads "
                "FOR EACH ROW EXECUTE FUNCTION "
                "reconcile.capture_portal_change('demo', 'leads', 'airtable_record_id')"
            )
        )
        definition = conn.execute(
            text("SELECT pg_get_functiondef('reconcile.capture_portal_change'::regproc)")
        ).scalar_one()
        conn.execute(
            text(
                definition.replace(
                    "current_setting('reconcile.origin', true) = 'reconciler'", "false"
                )
            )
        )
    emulator.update_record_fields(BASE, TABLE, ids[0], {"Claimed By": "airtable-bo"})

    result = materialize(resources, partition_key=key)

    checks = check_results(result)
    assert checks["leads/no_echo_marked_dirty"] is False
    assert "airtable_push_results" not in materialized(result)


def test_a_seeded_duplicate_fails_the_blocking_check_and_stops_the_push(
    emulator, resources, engine
):
    ids = emulator.seed_records(BASE, TABLE, [lead_fields(i) for i in range(3)])
    key = partition_key_for(dt.datetime.now(dt.UTC))
    assert materialize(resources, partition_key=key).success
    with engine.begin() as conn:  # a portal table without the unique constraint, duplicated
        conn.execute(text("ALTER TABLE leads DROP CONSTRAINT leads_airtable_record_id_key"))
        conn.execute(
            text("INSERT INTO leads (airtable_record_id, email) VALUES (:r, 'x@y.z')"),
            {"r": ids[1]},
        )

    result = materialize(resources, partition_key=key)

    checks = check_results(result)
    assert checks["leads/one_lead_per_airtable_record"] is False
    assert "airtable_push_results" not in materialized(result)


def output_metadata(result) -> dict:
    """The metadata a job's op attached to its output, as plain values."""
    return {
        key: entry.value
        for event in result.all_node_events
        if event.event_type_value == "STEP_OUTPUT"
        for key, entry in event.event_specific_data.metadata.items()
    }


def test_sweep_and_full_reconcile_jobs_run_tagged_with_the_base_and_repair_drift(
    emulator, resources, engine
):
    """The two maintenance jobs through real Dagster runs: each run carries the base tag the
    per-base queue limit keys on; the sweep soft-deletes a vanished record and the full
    reconcile reports and repairs a value changed behind the reconciler's back."""
    from reconcile_pipeline.defs.jobs import client_jobs
    from reconcile_pipeline.defs.naming import BASE_TAG
    from reconcile_pipeline.defs.schedules import base_id_from_env

    delete_sweep_job = client_jobs[CLIENT].delete_sweep
    full_reconcile_job = client_jobs[CLIENT].full_reconcile

    ids = emulator.seed_records(BASE, TABLE, [lead_fields(i) for i in range(4)])
    assert materialize(resources, partition_key=partition_key_for(dt.datetime.now(dt.UTC))).success
    emulator.delete_record(BASE, TABLE, ids[0])
    with engine.begin() as conn:  # drift: a write that bypassed both the portal and the sync
        conn.execute(text("ALTER TABLE leads DISABLE TRIGGER USER"))
        conn.execute(
            text("UPDATE leads SET company = 'Drifted' WHERE airtable_record_id = :r"),
            {"r": ids[1]},
        )
        conn.execute(text("ALTER TABLE leads ENABLE TRIGGER USER"))

    sweep = delete_sweep_job.execute_in_process(resources=resources, raise_on_error=False)
    full = full_reconcile_job.execute_in_process(resources=resources, raise_on_error=False)

    assert sweep.success and full.success
    assert sweep.dagster_run.tags[BASE_TAG] == full.dagster_run.tags[BASE_TAG] == base_id_from_env()
    assert output_metadata(sweep)["leads/soft_deleted"] == 1
    assert output_metadata(full)["leads/drifted_records"] == 1
    assert output_metadata(full)["leads/drift_by_field"] == {"company": 1}
    with engine.connect() as conn:
        company = conn.execute(
            text("SELECT company FROM leads WHERE airtable_record_id = :r"), {"r": ids[1]}
        ).scalar_one()
        gone = conn.execute(
            text(
                "SELECT deleted_at IS NOT NULL FROM reconcile.sync_state "
                "WHERE airtable_record_id = :r"
            ),
            {"r": ids[0]},
        ).scalar_one()
    assert gone is True
    assert company != "Drifted"


def test_the_first_run_of_a_process_takes_what_it_loaded_out_of_the_collector_s_walks(
    emulator, resources, monkeypatch
):
    """Issue 15, goal 5 (`worker_gc.py`): the objects a worker holds when its first run sets up
    its resources go to the permanent generation, which full collections skip; what later runs
    create is collected as usual (the process freezes once)."""
    import gc

    from reconcile_pipeline import worker_gc

    def collected(target: object) -> bool:
        """Whether the cycle collector still walks `target` (it is in one of its generations)."""
        return any(tracked is target for tracked in gc.get_objects())

    monkeypatch.setattr(worker_gc, "_frozen", False)  # this test's process as a fresh worker
    emulator.seed_records(BASE, TABLE, [lead_fields(i) for i in range(5)])
    key = partition_key_for(dt.datetime.now(dt.UTC))
    loaded = [{"held": "before the first run"}]
    assert collected(loaded)

    assert materialize(resources, partition_key=key).success
    made_between = [{"held": "after the first run"}]
    assert materialize(resources, partition_key=key).success

    assert not collected(loaded)
    assert collected(made_between)
