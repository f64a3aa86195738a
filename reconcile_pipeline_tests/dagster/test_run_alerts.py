"""Every failed run alerts exactly once, however it was launched, with a clean message.

Runs started in-process (`reconcile backfill`, the demo: `execute_in_process`) have no remote job
origin, and Dagster's run-status sensors skip them: they used to fail without any alert. The run
alert sensor now reads run failure events from the event log by cursor. The instance is the
project's (dagster.yaml on PostgreSQL), the in-process run is the CLI's own launch path, failing
against the emulator, and the queued run is recorded as the daemon records one.
"""

import datetime as dt

import dagster as dg
import pytest
from dagster._core.remote_origin import (
    RegisteredCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)

from reconcile_pipeline.definitions import defs
from reconcile_pipeline.defs.alert_resource import AlertWebhookResource
from reconcile_pipeline.defs.sensors import ALERT_RESOURCE_KEY, reconcile_run_failure_alert
from reconcile_pipeline.emulator.server import run_emulator
from reconcile_pipeline.launch import run_reconcile
from reconcile_pipeline_tests.dagster.webhook import WebhookServer


@pytest.fixture
def instance(monkeypatch, database_url, project_dagster_database):
    with run_emulator(rate_limit=0) as emulator:
        monkeypatch.setenv("DATABASE_URL", database_url)
        monkeypatch.setenv("AIRTABLE_API_KEY", "patNotTheRightToken.0")  # every run fails
        monkeypatch.setenv("AIRTABLE_ENDPOINT_URL", emulator.url)
        with dg.DagsterInstance.get() as instance:
            yield instance


def queued_run_that_failed(instance: dg.DagsterInstance) -> dg.DagsterRun:
    """A run as the daemon launches it (remote origin, queued, started), then failed with a
    message, as the gRPC server reports a run worker that died."""
    job = defs.resolve_job_def("delete_sweep_job")
    origin = RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(
            code_location_origin=RegisteredCodeLocationOrigin("reconcile_pipeline"),
            repository_name="__repository__",
        ),
        job_name=job.name,
    )
    run = instance.create_run_for_job(
        job, status=dg.DagsterRunStatus.STARTED, remote_job_origin=origin, tags=job.tags
    )
    instance.report_run_failed(run, "Run execution process for the run unexpectedly exited.")
    return run


def tick(instance: dg.DagsterInstance, cursor: str | None, webhook: WebhookServer):
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={ALERT_RESOURCE_KEY: AlertWebhookResource(webhook_url=webhook.url)},
    )
    reconcile_run_failure_alert(context)
    return context


def sections(webhook: WebhookServer) -> list[str]:
    return [payload["blocks"][0]["text"]["text"] for payload in webhook.payloads]


def test_in_process_and_queued_runs_each_alert_exactly_once(instance, webhook) -> None:
    [in_process] = run_reconcile(
        instance, hours=1, log_level="CRITICAL", now=dt.datetime(2026, 3, 2, 10, 45, tzinfo=dt.UTC)
    )
    queued = queued_run_that_failed(instance)
    assert not in_process.success
    assert in_process.dagster_run.remote_job_origin is None  # what run_failure_sensor skipped

    first = tick(instance, None, webhook)

    texts = sections(webhook)
    assert len(texts) == 2
    [cli_alert] = [t for t in texts if f"Run: {in_process.run_id}" in t]
    [queued_alert] = [t for t in texts if f"Run: {queued.run_id}" in t]
    assert cli_alert.startswith("*Run failed: reconcile_job*")
    assert "reconcile/base: appDemoLeads00001" in cli_alert
    # The clean message: the error's class and text, no module path, no traceback.
    assert (
        "Step leads__airtable_leads failed:\nAirtableConfigError: Airtable rejected the API "
        "token (401 AUTHENTICATION_REQUIRED): set AIRTABLE_API_KEY to a valid personal access "
        "token." in cli_alert
    )
    for alert in (cli_alert, queued_alert):
        for noise in ("Traceback", "Stack Trace", 'File "', "reconcile_pipeline.airtable"):
            assert noise not in alert
    assert "Run execution process for the run unexpectedly exited." in queued_alert

    # Exactly once: the next ticks read past the cursor and send nothing more.
    second = tick(instance, first.cursor, webhook)
    tick(instance, second.cursor, webhook)
    assert len(webhook.payloads) == 2


def test_a_run_of_another_base_is_left_to_that_bases_code_location(instance, webhook) -> None:
    job = defs.resolve_job_def("full_reconcile_job")
    run = instance.create_run_for_job(
        job, status=dg.DagsterRunStatus.STARTED, tags={"reconcile/base": "appSomeOtherBase1"}
    )
    instance.report_run_failed(run, "boom")

    tick(instance, None, webhook)

    assert webhook.payloads == []
