"""Every failed run alerts exactly once, however it was launched, with a clean message that
names the client, the table and the window, to a webhook and to a Slack app.

Runs started in-process (`reconcile backfill`, the demo: `execute_in_process`) have no remote job
origin, and Dagster's run-status sensors skip them: they used to fail without any alert. The run
alert sensor now reads run failure events from the event log by cursor. The instance is the
project's (dagster.yaml on PostgreSQL), the in-process run is the CLI's own launch path, failing
against the emulator, and the queued run is recorded as the daemon records one.
"""

import datetime as dt
import logging
from collections.abc import Iterator

import dagster as dg
import pytest
import requests
from dagster._core.remote_origin import (
    RegisteredCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)

from reconcile_pipeline import launch
from reconcile_pipeline.definitions import defs
from reconcile_pipeline.defs.alert_resource import (
    ALERT_WEBHOOK_URL_ENV,
    SLACK_API_URL_ENV,
    SLACK_CHANNEL_ENV,
    SLACK_TOKEN_ENV,
    AlertWebhookResource,
    alert_webhook_resource,
)
from reconcile_pipeline.defs.assets import client_tables
from reconcile_pipeline.defs.checks import reconcile_checks
from reconcile_pipeline.defs.jobs import client_jobs
from reconcile_pipeline.defs.location import build_definitions
from reconcile_pipeline.defs.naming import (
    BASE_TAG,
    delete_sweep_job_name,
    full_reconcile_job_name,
    reconcile_job_name,
)
from reconcile_pipeline.defs.partitions import reconcile_windows
from reconcile_pipeline.defs.project import clients
from reconcile_pipeline.defs.schedules import base_id_from_env
from reconcile_pipeline.defs.sensors import (
    ALERT_RESOURCE_KEY,
    CLIENT_TAG,
    client_of,
    failed_check_alert_sensor,
    reconcile_run_failure_alert,
    window_text,
)
from reconcile_pipeline.emulator.server import run_emulator
from reconcile_pipeline.launch import run_reconcile
from reconcile_pipeline_tests.dagster.slack_api import SLACK_TOKEN, SlackApi, running_slack_api
from reconcile_pipeline_tests.dagster.webhook import WebhookServer

CLEAN_TOKEN_MESSAGE = (
    "Airtable rejected the API token (401 AUTHENTICATION_REQUIRED): set AIRTABLE_API_KEY to a "
    "valid personal access token."
)
RECONCILE_JOB = reconcile_job_name("demo")  # the demo client's: reconcile_demo
NOISE = ("Traceback", "Stack Trace", 'File "', "HTTPError", "reconcile_pipeline.airtable")


@pytest.fixture
def instance(monkeypatch, database_url, project_dagster_database):
    with run_emulator(rate_limit=0) as emulator:
        monkeypatch.setenv("DATABASE_URL", database_url)
        monkeypatch.setenv("AIRTABLE_API_KEY", "patNotTheRightToken.0")  # every run fails
        monkeypatch.setenv("AIRTABLE_ENDPOINT_URL", emulator.url)
        # The code location as `reconcile backfill` loads it: once the Airtable variables are
        # exported (its resources bind AIRTABLE_ENDPOINT_URL only when it is set at load).
        monkeypatch.setattr(
            launch,
            "defs",
            build_definitions(clients(), client_tables, client_jobs, checks=reconcile_checks),
        )
        with dg.DagsterInstance.get() as instance:
            yield instance


def queued_run_that_failed(instance: dg.DagsterInstance) -> dg.DagsterRun:
    """A run as the daemon launches it (remote origin, queued, started), then failed with a
    message, as the gRPC server reports a run worker that died."""
    job = defs.resolve_job_def(delete_sweep_job_name("demo"))
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


def tick(
    instance: dg.DagsterInstance,
    cursor: str | None,
    webhook: WebhookServer | None = None,
    *,
    resource: AlertWebhookResource | None = None,
    sensor=reconcile_run_failure_alert,
):
    resource = resource or AlertWebhookResource(webhook_url=webhook.url if webhook else None)
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={ALERT_RESOURCE_KEY: resource}
    )
    sensor(context)
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
    assert cli_alert.startswith(f"*Run failed: {RECONCILE_JOB}*")
    assert "reconcile/base: appDemoLeads00001" in cli_alert
    # Who, what and when: the demo's client, the table whose pull failed (leads' waits on the
    # campaigns it links to, so it never started), the hour.
    assert "\nClient: demo\nTable: campaigns\n" in cli_alert
    assert "\nWindow: 3 windows, 2026-03-02 10:00 – 11:00 UTC\n" in cli_alert
    # The clean message, no module path, no traceback, not the HTTP error beneath it.
    assert CLEAN_TOKEN_MESSAGE in cli_alert
    for alert in (cli_alert, queued_alert):
        for noise in NOISE:
            assert noise not in alert
    assert "Run execution process for the run unexpectedly exited." in queued_alert
    # The notification's one line says it all too.
    [summary] = [p["text"] for p in webhook.payloads if in_process.run_id in str(p["blocks"])]
    assert summary.startswith(
        f"Run failed: {RECONCILE_JOB} (demo / campaigns; 3 windows, 2026-03-02 10:00 – "
        "11:00 UTC): "
    )
    assert CLEAN_TOKEN_MESSAGE in summary

    # Exactly once: the next ticks read past the cursor and send nothing more.
    second = tick(instance, first.cursor, webhook)
    tick(instance, second.cursor, webhook)
    assert len(webhook.payloads) == 2


def test_a_run_of_another_base_is_left_to_that_bases_code_location(instance, webhook) -> None:
    job = defs.resolve_job_def(full_reconcile_job_name("demo"))
    run = instance.create_run_for_job(
        job, status=dg.DagsterRunStatus.STARTED, tags={"reconcile/base": "appSomeOtherBase1"}
    )
    instance.report_run_failed(run, "boom")

    tick(instance, None, webhook)

    assert webhook.payloads == []


@pytest.fixture
def slack_api() -> Iterator[SlackApi]:
    with running_slack_api() as api:
        yield api


def test_a_failed_run_alerts_a_slack_app_and_the_webhook_from_the_environment(
    instance, webhook, slack_api, monkeypatch, caplog
) -> None:
    monkeypatch.setenv(ALERT_WEBHOOK_URL_ENV, webhook.url)
    monkeypatch.setenv(SLACK_TOKEN_ENV, SLACK_TOKEN)
    monkeypatch.setenv(SLACK_CHANNEL_ENV, "#reconcile-alerts")
    monkeypatch.setenv(SLACK_API_URL_ENV, slack_api.url)
    caplog.set_level(logging.DEBUG)
    [result] = run_reconcile(
        instance,
        hours=0.3,
        log_level="CRITICAL",
        now=dt.datetime(2026, 3, 2, 10, 25, tzinfo=dt.UTC),
    )
    assert not result.success

    context = dg.build_sensor_context(
        instance=instance, cursor=None, resources={ALERT_RESOURCE_KEY: alert_webhook_resource()}
    )
    context.log.addHandler(caplog.handler)
    reconcile_run_failure_alert(context)

    [message] = slack_api.messages
    assert message["channel"] == "#reconcile-alerts"
    assert message["text"] == webhook.payloads[0]["text"]
    assert message["text"].startswith(
        f"Run failed: {RECONCILE_JOB} (demo / campaigns; 2026-03-02 10:20–10:40 UTC): "
    )
    section = message["blocks"][0]["text"]["text"]
    assert f"Run: {result.run_id}" in section
    assert CLEAN_TOKEN_MESSAGE in section
    for noise in NOISE:
        assert noise not in section
    assert SLACK_TOKEN not in caplog.text


# Real runs of stand-in assets shaped like the multi-client ones ([client, table, name]), failing
# the two ways a clean message is made from an HTTP error.


class AirtableTokenError(Exception):
    pass


def http_401() -> requests.HTTPError:
    response = requests.Response()
    response.status_code = 401
    response.url = "https://api.airtable.com/v0/appAcme/tblOrders"
    return requests.HTTPError("401 Client Error: Unauthorized for url", response=response)


def pull_failing(how: str) -> dg.AssetsDefinition:
    @dg.asset(key=["acme", "orders", "airtable_orders"], partitions_def=reconcile_windows)
    def airtable_orders() -> None:
        try:
            raise http_401()
        except requests.HTTPError as exc:
            if how == "failure":  # the project's way: the HTTP error is only the context
                raise dg.Failure(description=f"orders: {CLEAN_TOKEN_MESSAGE}") from None
            raise AirtableTokenError(CLEAN_TOKEN_MESSAGE) from exc  # the error's cause

    return airtable_orders


@pytest.mark.parametrize("how", ["failure", "raised from the HTTP error"])
def test_the_outermost_message_wins_over_the_http_error_beneath_it(webhook, how) -> None:
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [pull_failing(how)],
        instance=instance,
        partition_key="2026-03-02-10:20",
        tags={CLIENT_TAG: "acme"},
        raise_on_error=False,
    )
    assert not result.success

    tick(instance, None, webhook)

    [payload] = webhook.payloads
    section = payload["blocks"][0]["text"]["text"]
    for line in ("Client: acme", "Table: orders", "Window: 2026-03-02 10:20–10:40 UTC"):
        assert f"\n{line}\n" in section
    expected = (
        f"orders: {CLEAN_TOKEN_MESSAGE}"
        if how == "failure"
        else f"AirtableTokenError: {CLEAN_TOKEN_MESSAGE}"
    )
    assert f"failed:\n{expected}" in section
    assert payload["text"] == (
        f"Run failed: {result.dagster_run.job_name} (acme / orders; 2026-03-02 10:20–10:40 UTC): "
        + expected
    )
    for noise in NOISE:
        assert noise not in section


def test_a_failed_check_names_the_client_table_and_window(webhook) -> None:
    @dg.asset(
        key=["acme", "orders", "orders_pushed"],
        partitions_def=reconcile_windows,
        check_specs=[dg.AssetCheckSpec("no_loops", asset=["acme", "orders", "orders_pushed"])],
    )
    def orders_pushed() -> dg.MaterializeResult:
        return dg.MaterializeResult(
            check_results=[
                dg.AssetCheckResult(
                    check_name="no_loops",
                    passed=False,
                    description="2 records pushed back and forth",
                )
            ]
        )

    instance = dg.DagsterInstance.ephemeral()
    dg.materialize(
        [orders_pushed],
        instance=instance,
        tags={
            CLIENT_TAG: "acme",
            "dagster/asset_partition_range_start": "2026-03-01-23:40",
            "dagster/asset_partition_range_end": "2026-03-02-00:20",
        },
        raise_on_error=False,
    )

    tick(instance, None, webhook, sensor=failed_check_alert_sensor)

    [payload] = webhook.payloads
    section = payload["blocks"][0]["text"]["text"]
    window = "3 windows, 2026-03-01 23:40 – 2026-03-02 00:40 UTC"
    for line in ("Client: acme", "Table: orders", f"Window: {window}"):
        assert f"\n{line}\n" in section
    assert payload["text"] == (
        "Asset check failed: acme/orders/orders_pushed / no_loops (ERROR) "
        f"(acme / orders; {window}): 2 records pushed back and forth"
    )


def test_the_client_falls_back_to_the_asset_key_then_the_base_tag() -> None:
    three = dg.AssetKey(["acme", "orders", "airtable_orders"])
    two = dg.AssetKey(["leads", "airtable_leads"])

    assert client_of({CLIENT_TAG: "acme"}, [two]) == "acme"
    assert client_of({}, [three]) == "acme"
    # [table, name] keys name no client: the base tag's client in the project file.
    assert client_of({BASE_TAG: base_id_from_env()}, [two]) == "demo"
    assert client_of({BASE_TAG: "appUnknown000001"}, [two]) == "base appUnknown000001"
    assert client_of({}, [two]) is None


def test_windows_are_written_for_people() -> None:
    assert window_text({"dagster/partition": "2026-03-02-23:40"}) == "2026-03-02 23:40–00:00 UTC"
    assert window_text({}, "2026-03-02-10:00") == "2026-03-02 10:00–10:20 UTC"
    assert window_text({"dagster/partition": "not-ours"}) == "not-ours"
    assert window_text({}) is None
    one = {"dagster/asset_partition_range_start": "2026-03-02-10:00"}
    one["dagster/asset_partition_range_end"] = "2026-03-02-10:00"
    assert window_text(one) == "2026-03-02 10:00–10:20 UTC"
