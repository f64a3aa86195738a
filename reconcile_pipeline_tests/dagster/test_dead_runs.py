"""A run whose process was killed is marked failed and frees its base.

A real `reconcile backfill` process runs the job in-process against the project's instance
(dagster.yaml on PostgreSQL) and waits on a slow emulator; it is SIGKILLed mid-run. Dagster
alone leaves that run STARTED forever, holding the base's place in the queue. One tick of the
run failure sensor finds the run's process gone, marks the run failed (alerting it once), and the
queue would start the next run of the base again.
"""

import os
import signal
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from reconcile_pipeline.db.base_lock import sessions_on
from reconcile_pipeline.defs.alert_resource import AlertWebhookResource
from reconcile_pipeline.defs.naming import base_pool
from reconcile_pipeline.defs.schedules import base_id_from_env
from reconcile_pipeline.defs.sensors import (
    ALERT_RESOURCE_KEY,
    fail_dead_runs,
    reconcile_run_failure_alert,
)
from reconcile_pipeline.emulator.server import run_emulator
from reconcile_pipeline.instance import (
    WORKER_HOST_TAG,
    WORKER_PID_NAMESPACE_TAG,
    WORKER_PID_TAG,
    current_worker,
    register_base_pool,
)
from reconcile_pipeline_tests.dagster.cli import BASE, reconcile_env, start_reconcile_cli
from reconcile_pipeline_tests.dagster.test_base_lock import libpq, wait_for
from reconcile_pipeline_tests.dagster.test_concurrency import (
    asset_graph_run,
    runs_the_daemon_would_start,
)
from reconcile_pipeline_tests.dagster.webhook import WebhookServer


@pytest.fixture
def instance(monkeypatch, database_url, project_dagster_database):
    # Creating a queued run resolves the resources' config; it connects to nothing.
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("AIRTABLE_API_KEY", "set-per-process-below")
    monkeypatch.setenv("AIRTABLE_BASE_ID", BASE)
    monkeypatch.setenv("AIRTABLE_TABLE", "Leads")
    monkeypatch.setenv("AIRTABLE_ENDPOINT_URL", "http://127.0.0.1:9")
    assert BASE == base_id_from_env()  # the demo client's base
    assert register_base_pool(base_pool(BASE))  # as `reconcile ui` does before the daemon starts
    with dg.DagsterInstance.get() as instance:
        yield instance


def tick(instance: dg.DagsterInstance, webhook: WebhookServer) -> None:
    reconcile_run_failure_alert(
        dg.build_sensor_context(
            instance=instance,
            resources={ALERT_RESOURCE_KEY: AlertWebhookResource(webhook_url=webhook.url)},
        )
    )


def step_started(instance: dg.DagsterInstance, run_id: str) -> bool:
    return bool(instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START))


@pytest.mark.slow
def test_a_killed_cli_run_is_marked_failed_and_frees_its_base(
    tmp_path: Path, instance, database_url, webhook: WebhookServer
) -> None:
    with (
        run_emulator(rate_limit=0) as emulator,
        psycopg.connect(libpq(database_url), autocommit=True) as conn,
    ):
        # Every request waits two minutes: the run is stuck in its first step until killed.
        emulator.set_faults(latency_ms=120_000)
        env = reconcile_env(tmp_path / "home", database_url, emulator.url, emulator.token)
        process = start_reconcile_cli(["backfill", "--hours", "1"], env, tmp_path / "run.log")
        try:
            wait_for(lambda: instance.get_runs(), "the run to be recorded")
            [run] = instance.get_runs()
            wait_for(lambda: step_started(instance, run.run_id), "the run's first step")
            holders = [name for _, name in sessions_on(conn, BASE, granted=True)]
            assert holders == [f"reconcile run {run.run_id}"]
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        emulator.clear_faults()

        # Dagster on its own: the run stays STARTED and keeps the base's queue slot.
        run = instance.get_run_by_id(run.run_id)
        assert run.status == dg.DagsterRunStatus.STARTED
        assert run.tags[WORKER_PID_TAG] == str(process.pid)
        queued = asset_graph_run(instance, dg.DagsterRunStatus.QUEUED)
        assert runs_the_daemon_would_start(instance) == set()
        # The base's PostgreSQL lock went with the killed process's session.
        wait_for(lambda: not sessions_on(conn, BASE, granted=True), "the lock's session to end")

        tick(instance, webhook)

    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    assert runs_the_daemon_would_start(instance) == {queued.run_id}
    [payload] = webhook.payloads
    section = payload["blocks"][0]["text"]["text"]
    assert f"Run: {run.run_id}" in section
    assert f"The run's process ({process.pid} on {run.tags[WORKER_HOST_TAG]}) is gone" in section


def started_run(instance: dg.DagsterInstance, tags: dict[str, str]) -> dg.DagsterRun:
    @dg.op
    def noop() -> None:
        pass

    @dg.job
    def probe() -> None:
        noop()

    return instance.create_run_for_job(probe, status=dg.DagsterRunStatus.STARTED, tags=tags)


def test_live_runs_runs_elsewhere_and_untagged_runs_are_left_alone(instance) -> None:
    me = current_worker()
    alive = started_run(instance, me.tags())
    elsewhere = started_run(instance, {**me.tags(), WORKER_HOST_TAG: "another-host"})
    # Same host name, another container: its pids are not this namespace's.
    other_container = started_run(
        instance,
        {**me.tags(), WORKER_PID_NAMESPACE_TAG: "pid:[1]", WORKER_PID_TAG: str(2**22 + 1)},
    )
    untagged = started_run(instance, {})

    assert fail_dead_runs(instance) == []
    for run in (alive, elsewhere, other_container, untagged):
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED


def test_a_reused_pid_does_not_pass_for_the_dead_worker(instance) -> None:
    # This process's pid with another start time: a later process that got the dead one's pid.
    me = current_worker()
    if me.started is None:
        pytest.skip("no /proc here: process start times are unknown")
    reused = started_run(instance, {**me.tags(), "reconcile/worker_started": "1"})
    # And a pid that no process has (pid_max is at most 2**22).
    gone = started_run(instance, {**me.tags(), WORKER_PID_TAG: str(2**22 + os.getpid())})

    assert sorted(fail_dead_runs(instance)) == sorted([reused.run_id, gone.run_id])
