"""Two runs never reconcile the same Airtable base at once, however they were launched.

Runs of our jobs carry the base tag; runs the UI launches from the asset graph (Materialize,
Launch backfill) use Dagster's implicit asset job and carry none, so they rely on the base's
concurrency pool. These tests ask the queued-run daemon which queued runs it would start, against
an instance loaded from the project's dagster.yaml on PostgreSQL storage.
"""

from collections.abc import Iterator

import dagster as dg
import pytest
from dagster._core.remote_origin import (
    RegisteredCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)

from reconcile_pipeline.definitions import defs
from reconcile_pipeline.defs.naming import base_pool, reconcile_job_name
from reconcile_pipeline.instance import register_base_pool

DEMO_CLIENT, DEMO_BASE = "demo", "appDemoLeads00001"
BASE_POOL = base_pool(DEMO_BASE)  # the demo client's base's pool
WINDOW = {"dagster/partition": "2026-11-20-10:00"}


@pytest.fixture
def instance(monkeypatch, project_dagster_database) -> Iterator[dg.DagsterInstance]:
    # Creating a run resolves the resources' config; nothing here connects to Airtable.
    monkeypatch.setenv("DATABASE_URL", project_dagster_database)
    monkeypatch.setenv("AIRTABLE_API_KEY", "not-used-by-these-tests")
    monkeypatch.setenv("AIRTABLE_BASE_ID", DEMO_BASE)
    monkeypatch.setenv("AIRTABLE_TABLE", "Leads")
    monkeypatch.setenv("AIRTABLE_ENDPOINT_URL", "http://127.0.0.1:9")
    # As `reconcile ui` does before starting the daemon (the pool this import computed).
    assert register_base_pool(BASE_POOL)
    with dg.DagsterInstance.get() as instance:
        yield instance


def runs_the_daemon_would_start(instance: dg.DagsterInstance) -> set[str]:
    # The daemon's own selection step (limits, tags, pools), without launching anything.
    with QueuedRunCoordinatorDaemon(interval_seconds=1) as daemon:
        runs = daemon._get_runs_to_dequeue(instance, instance.get_concurrency_config(), None)
    return {run.run_id for run in runs}


def create_run(
    instance: dg.DagsterInstance, job: dg.JobDefinition, status: DagsterRunStatus, **kwargs
) -> dg.DagsterRun:
    """A run of `job` in the state the webserver or a schedule leaves it (queued runs name the
    code location they come from; the daemon only reads its name here)."""
    origin = RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(
            code_location_origin=RegisteredCodeLocationOrigin("reconcile_pipeline"),
            repository_name="__repository__",
        ),
        job_name=job.name,
    )
    return instance.create_run_for_job(job, status=status, remote_job_origin=origin, **kwargs)


def asset_graph_run(instance: dg.DagsterInstance, status: DagsterRunStatus) -> dg.DagsterRun:
    """A run as the UI's asset-graph Materialize creates it: the implicit job, no job tags."""
    job = defs.resolve_implicit_global_asset_job_def()
    keys = set(job.asset_layer.selected_asset_keys)
    return create_run(instance, job, status, asset_selection=keys, tags=WINDOW)


def test_the_instance_limits_each_base_pool_to_one_run(instance):
    assert {pool.name: pool.limit for pool in instance.event_log_storage.get_pool_limits()} == {
        BASE_POOL: 1
    }
    config = instance.get_concurrency_config()
    assert config.pool_config.pool_granularity.value == "run"
    assert config.pool_config.default_pool_limit == 1
    assert config.run_queue_config.tag_concurrency_limits == [
        {"key": "reconcile/base", "value": {"applyLimitPerUniqueValue": True}, "limit": 1},
        # Airtable's 50 requests/s per token owner at 5 requests/s per base: ten bases a token.
        {"key": "reconcile/token", "value": {"applyLimitPerUniqueValue": True}, "limit": 10},
    ]


def test_an_asset_graph_run_waits_while_another_run_holds_the_base(instance):
    running = asset_graph_run(instance, DagsterRunStatus.STARTED)
    queued = asset_graph_run(instance, DagsterRunStatus.QUEUED)
    assert BASE_POOL in running.run_op_concurrency.all_pools
    assert not queued.tags.keys() & {"reconcile/base"}  # no job tag to queue on

    assert runs_the_daemon_would_start(instance) == set()

    instance.report_run_canceled(running)
    assert runs_the_daemon_would_start(instance) == {queued.run_id}


def test_a_job_run_and_an_asset_graph_run_exclude_each_other(instance):
    """A scheduled reconcile run holds the pool too: a UI materialization waits for it."""
    job = defs.resolve_job_def(reconcile_job_name(DEMO_CLIENT))
    scheduled = create_run(instance, job, DagsterRunStatus.STARTED, tags={**job.tags, **WINDOW})
    queued = asset_graph_run(instance, DagsterRunStatus.QUEUED)

    assert runs_the_daemon_would_start(instance) == set()

    instance.report_run_failed(scheduled)
    assert runs_the_daemon_would_start(instance) == {queued.run_id}


def pool_limits(instance: dg.DagsterInstance) -> dict[str, int]:
    return {pool.name: pool.limit for pool in instance.event_log_storage.get_pool_limits()}


def test_registering_the_pool_again_changes_nothing(instance):
    assert register_base_pool(BASE_POOL) is False
    assert pool_limits(instance) == {BASE_POOL: 1}


def test_a_limit_set_by_the_user_is_kept(instance):
    instance.event_log_storage.set_concurrency_slots(BASE_POOL, 3)

    assert register_base_pool(BASE_POOL) is False
    assert pool_limits(instance) == {BASE_POOL: 3}
