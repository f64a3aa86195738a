"""A run costs the same however old the deployment (issue 15, goal 3): nothing in it walks
every partition since the first window, a schedule tick's run (one window) or a range run (a
backfill). The checks are partitioned like their assets, so Dagster scopes their inputs to the
run's windows (an unpartitioned check's input maps to every partition of its asset: 1.3 s a
check at 24k partitions).

A range run plans each check per window and evaluates it once, for the range: the project's
storage (reconcile_pipeline/dagster_storage.py) records that result on each window's planned
execution, so none is left planned (the UI's "Skipped"), without an event per window."""

import datetime as dt

import dagster as dg
import pytest
from dagster._core.definitions.partitions.subset.all import AllPartitionsSubset

from reconcile_pipeline.airtable.resource import AirtableResource
from reconcile_pipeline.definitions import defs
from reconcile_pipeline.defs.partitions import partition_key_for
from reconcile_pipeline.defs.resources import PostgresResource
from reconcile_pipeline.emulator.server import run_emulator


@pytest.fixture
def emulator():
    with run_emulator(rate_limit=0) as emulator:
        yield emulator


def run_demo(emulator, database_url, instance=None, token=None, **run) -> dg.ExecuteInProcessResult:
    """One run of the demo client's job against the emulator and the test database."""
    return defs.resolve_job_def("reconcile_demo").execute_in_process(
        instance=instance or dg.DagsterInstance.ephemeral(),
        resources={
            "airtable_demo": AirtableResource(
                api_key=token or emulator.token,
                base_id="appDemoLeads00001",
                endpoint_url=emulator.url,
                requests_per_second=0,
            ),
            "postgres": PostgresResource(database_url=database_url),
        },
        raise_on_error=False,
        **run,
    )


def last(hours: float) -> dict[str, str]:
    """Run tags making a run over the windows of the last `hours` (a backfill as one run)."""
    now = dt.datetime.now(dt.UTC)
    return {
        "dagster/asset_partition_range_start": partition_key_for(now - dt.timedelta(hours=hours)),
        "dagster/asset_partition_range_end": partition_key_for(now),
    }


def run_counting_listings(emulator, database_url, monkeypatch, **run) -> list[int]:
    """Run the demo client's job; the sizes of every all-partitions listing it made."""
    emulator.seed_records("appDemoLeads00001", "Leads", [{"Email": "a@example.com"}])
    listed: list[int] = []
    every_partition = AllPartitionsSubset.get_partition_keys

    def counting(self, *args, **kwargs):
        keys = every_partition(self, *args, **kwargs)
        listed.append(len(list(keys)))
        return keys

    monkeypatch.setattr(AllPartitionsSubset, "get_partition_keys", counting)
    result = run_demo(emulator, database_url, **run)
    assert result.success
    assert len(result.get_asset_check_evaluations()) == len(CHECK_KEYS)  # each ran once
    return listed


def test_a_schedule_tick_s_run_never_lists_every_partition(emulator, database_url, monkeypatch):
    now = dt.datetime.now(dt.UTC)

    listed = run_counting_listings(
        emulator, database_url, monkeypatch, partition_key=partition_key_for(now)
    )

    assert listed == []  # no step enumerated the partitions since the first window


def test_a_range_run_never_lists_every_partition(emulator, database_url, monkeypatch):
    listed = run_counting_listings(emulator, database_url, monkeypatch, tags=last(hours=1 / 3))

    assert listed == []


CHECK_KEYS = [key for checks in defs.asset_checks for key in checks.check_keys]


def check_executions(instance: dg.DagsterInstance) -> dict[tuple[str, str], list]:
    """Every check's execution records, by (asset path, check name)."""
    return {
        (
            str(key.asset_key.path),
            key.name,
        ): instance.event_log_storage.get_asset_check_execution_history(key, limit=1000)
        for checks in defs.asset_checks
        for key in checks.check_keys
    }


@pytest.mark.parametrize(
    "run, windows",
    [
        (lambda: {"tags": last(hours=1)}, 4),  # a backfill: three windows and the current one
        (lambda: {"partition_key": partition_key_for(dt.datetime.now(dt.UTC))}, 1),  # a tick
    ],
    ids=["backfill", "schedule-tick"],
)
@pytest.mark.parametrize("batch_size", [None, "1000"], ids=["one-by-one", "batched"])
def test_no_check_is_left_planned_and_never_run(
    emulator, database_url, project_dagster_database, run, windows, batch_size, monkeypatch
):
    """A run records every check it planned: no window's check execution is left PLANNED,
    which the UI shows as "Skipped" (for a backfill, a wall of them: issue 14), and a range
    run writes one evaluation event per check, not one per window (issue 15, goal 4). Batched
    (DAGSTER_EVENT_BATCH_SIZE, as the `reconcile` commands set it), the project's storage
    writes the planned executions itself, in one statement."""
    from dagster._core.storage.asset_check_execution_record import (
        AssetCheckExecutionRecordStatus,
    )

    if batch_size is not None:
        monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", batch_size)
    emulator.seed_records("appDemoLeads00001", "Leads", [{"Email": "a@example.com"}])
    with dg.DagsterInstance.get() as instance:
        result = run_demo(emulator, database_url, instance, **run())
        assert result.success
        executions = check_executions(instance)

    materialized = {e.partition for e in result.get_asset_materialization_events()}
    assert len(materialized) == windows
    for check, records in executions.items():
        assert {r.partition for r in records} == materialized, check
        assert len(records) == windows, check
        assert {r.status for r in records} == {AssetCheckExecutionRecordStatus.SUCCEEDED}, check
    assert len(result.get_asset_check_evaluations()) == len(executions)  # an event per check


def test_a_failed_check_of_a_backfill_fails_every_window_and_alerts_once(
    emulator, database_url, project_dagster_database
):
    from dagster._core.storage.asset_check_execution_record import (
        AssetCheckExecutionRecordStatus,
    )

    from reconcile_pipeline.defs.sensors import alerts_for, check_evaluations_after

    # Two live leads sharing an e-mail: no_duplicate_contacts fails (WARN).
    emulator.seed_records(
        "appDemoLeads00001", "Leads", [{"Email": "same@example.com"}, {"Email": "same@example.com"}]
    )
    with dg.DagsterInstance.get() as instance:
        result = run_demo(emulator, database_url, instance, tags=last(hours=1))
        executions = check_executions(instance)
        alerts = alerts_for(check_evaluations_after(instance, None), instance=instance)

    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert [e.check_name for e in failed] == ["no_duplicate_contacts"]
    [duplicates] = [
        records
        for (path, name), records in executions.items()
        if name == "no_duplicate_contacts" and "leads" in path
    ]
    assert len(duplicates) == 4  # every window of the range
    assert {r.status for r in duplicates} == {AssetCheckExecutionRecordStatus.FAILED}
    assert len(alerts) == 1
    assert "no_duplicate_contacts" in "\n".join(alerts[0].lines)


def test_a_failed_backfill_marks_each_of_its_windows_failed(
    emulator, database_url, project_dagster_database, monkeypatch
):
    """A range run's planned materializations (one per asset and window: what marks a failed
    run's windows failed in the UI) are written by the project's storage as batches, one
    statement each; a failed backfill still shows every window of its range failed."""
    from dagster._core.storage.partition_status_cache import (
        get_and_update_asset_status_cache_value,
    )

    from reconcile_pipeline.dagster_storage import RangeCheckEventLogStorage
    from reconcile_pipeline.defs.partitions import reconcile_windows

    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "1000")
    batched: list[int] = []
    store_planned = RangeCheckEventLogStorage._store_planned_materializations

    def counting(self, events):
        batched.append(len(events))
        return store_planned(self, events)

    monkeypatch.setattr(RangeCheckEventLogStorage, "_store_planned_materializations", counting)
    with dg.DagsterInstance.get() as instance:
        result = run_demo(
            emulator,
            database_url,
            instance,
            token="patNotTheRightToken.0",  # Airtable answers 401: the pull step fails
            tags=last(hours=1),
        )
        assert not result.success
        leads = dg.AssetKey(["demo", "leads", "airtable_leads"])
        status = get_and_update_asset_status_cache_value(instance, leads, reconcile_windows)
        [record] = instance.get_asset_records([leads])

    # The asset's index names the run (the UI's "latest run" of the asset).
    assert record.asset_entry.last_run_id == result.run_id

    failed = status.deserialize_failed_partition_subsets(reconcile_windows).get_partition_keys()
    assert sorted(failed) == sorted(
        reconcile_windows.get_partition_keys_in_range(
            dg.PartitionKeyRange(
                last(hours=1)["dagster/asset_partition_range_start"],
                last(hours=1)["dagster/asset_partition_range_end"],
            )
        )
    )
    assert len(failed) == 4
    # Every asset's planned windows in one statement (the job's 8 assets × 4 windows).
    assert batched == [32]


def test_a_planned_batch_whose_index_update_fails_is_stored_once(
    emulator, database_url, project_dagster_database, monkeypatch
):
    """The project's storage writes a range run's planned materializations and the asset index
    in one transaction: when the index update fails, Dagster falls back to storing the batch one
    event at a time, and each planned event is stored once, not twice."""
    from reconcile_pipeline.dagster_storage import RangeCheckEventLogStorage

    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "1000")
    store_asset_event = RangeCheckEventLogStorage._store_asset_event
    failures: list[int] = []

    def failing_once(self, conn, event, event_id):
        if not failures:
            failures.append(event_id)
            raise RuntimeError("the index is unavailable (injected)")
        return store_asset_event(self, conn, event, event_id)

    monkeypatch.setattr(RangeCheckEventLogStorage, "_store_asset_event", failing_once)
    with dg.DagsterInstance.get() as instance:
        result = run_demo(emulator, database_url, instance, tags=last(hours=1))
        planned = instance.get_records_for_run(
            result.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED, limit=1000
        ).records
        executions = [
            (check, record.partition)
            for check, records in check_executions(instance).items()
            for record in records
            if record.run_id == result.run_id
        ]

    assert result.success
    assert len(failures) == 1
    per_window = [
        (r.event_log_entry.dagster_event.asset_key, r.event_log_entry.dagster_event.partition)
        for r in planned
    ]
    assert len(per_window) == len(set(per_window)) == 32  # the job's 8 assets × 4 windows
    # Each check's execution per window once (a second copy of the planned batch would have
    # failed the run on Dagster's unique index, or left copies here).
    assert len(executions) == len(set(executions)) == len(CHECK_KEYS) * 4
