"""Failed asset checks and failed runs raise one alert each, through a real webhook.

Runs are materialized on an ephemeral Dagster instance, so the sensors read real event-log
records; alerts are posted over HTTP to a local server. (Run failures of every launch path,
on the project's PostgreSQL-backed instance: test_run_alerts.py.)
"""

import datetime as dt
import logging

import dagster as dg
import pytest

from reconcile_pipeline.defs import sensors
from reconcile_pipeline.defs.alert_resource import (
    ALERT_WEBHOOK_URL_ENV,
    DAGSTER_UI_URL_ENV,
    AlertWebhookResource,
    alert_webhook_resource,
)
from reconcile_pipeline.defs.naming import BASE_TAG
from reconcile_pipeline.defs.partitions import reconcile_windows
from reconcile_pipeline.defs.schedules import base_id_from_env
from reconcile_pipeline.defs.sensors import (
    ALERT_RESOURCE_KEY,
    check_evaluations_after,
    failed_check_alert_sensor,
    reconcile_run_failure_alert,
)
from reconcile_pipeline_tests.dagster.webhook import WebhookServer


def checked_asset(*, failing: bool) -> dg.AssetsDefinition:
    """An asset with two checks: `no_loops` always passes, `no_duplicates` fails if asked."""

    @dg.asset(
        name="leads",
        check_specs=[
            dg.AssetCheckSpec("no_loops", asset="leads"),
            dg.AssetCheckSpec("no_duplicates", asset="leads"),
        ],
    )
    def leads():
        yield dg.Output(None)
        yield dg.AssetCheckResult(check_name="no_loops", passed=True, metadata={"pushed": 0})
        yield dg.AssetCheckResult(
            check_name="no_duplicates",
            passed=not failing,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"duplicate_records": 2, "sample": "recA, recB"},
        )

    return leads


def sensor_context(
    instance: dg.DagsterInstance, cursor: str | None, resource: AlertWebhookResource
) -> dg.SensorEvaluationContext:
    return dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={ALERT_RESOURCE_KEY: resource}
    )


def capture_log(context: dg.SensorEvaluationContext, caplog: pytest.LogCaptureFixture) -> None:
    # The sensor's logger is Dagster's own (it does not propagate to the root logger).
    caplog.set_level(logging.INFO)
    context.log.addHandler(caplog.handler)


def newest_check_storage_id(instance: dg.DagsterInstance) -> int:
    return check_evaluations_after(instance, None)[-1].storage_id


def test_one_alert_per_failed_check_then_nothing_for_the_same_cursor(
    webhook: WebhookServer,
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    run = dg.materialize([checked_asset(failing=True)], instance=instance)
    resource = AlertWebhookResource(webhook_url=webhook.url, ui_url="http://dagster.local:3000/")

    context = sensor_context(instance, None, resource)
    failed_check_alert_sensor(context)

    [payload] = webhook.payloads
    section = payload["blocks"][0]["text"]["text"]
    assert "Asset check failed: leads / no_duplicates (WARN)" in payload["text"]
    for line in (
        "Check: no_duplicates",
        "Asset: leads",
        "Severity: WARN",
        f"Run: {run.run_id}",
        "duplicate_records: 2",
        "sample: recA, recB",
        f"http://dagster.local:3000/runs/{run.run_id}",
    ):
        assert line in section
    assert context.cursor == str(newest_check_storage_id(instance))

    # The same cursor again: nothing new, nothing sent, cursor kept.
    again = sensor_context(instance, context.cursor, resource)
    failed_check_alert_sensor(again)
    assert len(webhook.payloads) == 1
    assert again.cursor == context.cursor


def test_first_tick_skips_failures_older_than_the_lookback_then_alerts_on_new_ones(
    webhook: WebhookServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A sensor turned on over an old history: a zero lookback makes every existing evaluation
    # "older than the lookback" without waiting an hour.
    monkeypatch.setattr(sensors, "FIRST_TICK_LOOKBACK", dt.timedelta(0))
    instance = dg.DagsterInstance.ephemeral()
    dg.materialize([checked_asset(failing=True)], instance=instance)
    resource = AlertWebhookResource(webhook_url=webhook.url)

    first = sensor_context(instance, None, resource)
    failed_check_alert_sensor(first)

    assert webhook.payloads == []
    assert first.cursor == str(newest_check_storage_id(instance))

    later = dg.materialize([checked_asset(failing=True)], instance=instance)
    second = sensor_context(instance, first.cursor, resource)
    failed_check_alert_sensor(second)

    [payload] = webhook.payloads
    assert f"Run: {later.run_id}" in payload["blocks"][0]["text"]["text"]


def test_first_tick_on_an_empty_event_log_alerts_on_the_first_failure(
    webhook: WebhookServer,
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    resource = AlertWebhookResource(webhook_url=webhook.url)
    first = sensor_context(instance, None, resource)
    failed_check_alert_sensor(first)
    assert first.cursor == "0"

    dg.materialize([checked_asset(failing=True)], instance=instance)
    second = sensor_context(instance, first.cursor, resource)
    failed_check_alert_sensor(second)

    assert len(webhook.payloads) == 1


def test_passing_checks_send_nothing_but_advance_the_cursor(webhook: WebhookServer) -> None:
    instance = dg.DagsterInstance.ephemeral()
    dg.materialize([checked_asset(failing=True)], instance=instance)
    cursor = str(newest_check_storage_id(instance))
    dg.materialize([checked_asset(failing=False)], instance=instance)
    resource = AlertWebhookResource(webhook_url=webhook.url)

    context = sensor_context(instance, cursor, resource)
    failed_check_alert_sensor(context)

    assert webhook.payloads == []
    assert int(context.cursor) == newest_check_storage_id(instance) > int(cursor)


def test_after_an_undelivered_alert_the_rest_are_logged_and_the_cursor_moves_on(
    webhook: WebhookServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Two failing runs, webhook down: only the first alert is attempted (with its one retry),
    # so a backlog cannot overrun the sensor's deadline; the second is logged.
    instance = dg.DagsterInstance.ephemeral()
    dg.materialize([checked_asset(failing=True)], instance=instance)
    second = dg.materialize([checked_asset(failing=True)], instance=instance)
    webhook.statuses = [500, 500, 500, 500]

    context = sensor_context(instance, None, AlertWebhookResource(webhook_url=webhook.url))
    capture_log(context, caplog)
    failed_check_alert_sensor(context)

    assert len(webhook.received) == 2
    assert f"Run: {second.run_id}" in caplog.text
    assert context.cursor == str(newest_check_storage_id(instance))


def test_env_bound_resource_logs_when_the_webhook_variable_is_unset(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A plain dg.EnvVar on an unset variable fails resource initialisation; the helper must not.
    monkeypatch.delenv(ALERT_WEBHOOK_URL_ENV, raising=False)
    monkeypatch.delenv(DAGSTER_UI_URL_ENV, raising=False)
    instance = dg.DagsterInstance.ephemeral()
    dg.materialize([checked_asset(failing=True)], instance=instance)

    context = sensor_context(instance, None, alert_webhook_resource())
    capture_log(context, caplog)
    failed_check_alert_sensor(context)

    assert "Alert (no webhook configured): Asset check failed: leads / no_duplicates" in (
        caplog.text
    )


def test_env_bound_resource_posts_when_the_webhook_variable_is_set(
    webhook: WebhookServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ALERT_WEBHOOK_URL_ENV, webhook.url)
    monkeypatch.setenv(DAGSTER_UI_URL_ENV, "http://ui.example:3000")
    instance = dg.DagsterInstance.ephemeral()
    run = dg.materialize([checked_asset(failing=True)], instance=instance)

    resource = alert_webhook_resource()
    failed_check_alert_sensor(sensor_context(instance, None, resource))

    # Nothing bound when the code location loads: the variable is read when the alert is sent.
    assert resource.webhook_url is None
    [payload] = webhook.payloads
    assert f"http://ui.example:3000/runs/{run.run_id}" in payload["blocks"][0]["text"]["text"]


@dg.asset(partitions_def=reconcile_windows)
def failing_window() -> None:
    raise ValueError("Airtable answered 422 <INVALID_FILTER>\nformula: AND(...)")


def test_a_failed_run_raises_one_alert_with_job_partition_and_error(
    webhook: WebhookServer,
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [failing_window],
        instance=instance,
        partition_key="2026-03-02-10:20",
        tags={BASE_TAG: base_id_from_env()},
        raise_on_error=False,
    )
    assert not result.success
    context = sensor_context(instance, None, AlertWebhookResource(webhook_url=webhook.url))

    reconcile_run_failure_alert(context)

    [payload] = webhook.payloads
    job_name = result.dagster_run.job_name
    assert payload["text"].startswith(f"Run failed: {job_name}")
    section = payload["blocks"][0]["text"]["text"]
    for line in (
        f"Job: {job_name}",
        f"Run: {result.run_id}",
        "dagster/partition: 2026-03-02-10:20",
        f"{BASE_TAG}: {base_id_from_env()}",
        "Step failing_window failed:",
        # The user's exception, not Dagster's wrapper; escaped for Slack.
        "ValueError: Airtable answered 422 &lt;INVALID_FILTER&gt;\nformula: AND(...)",
    ):
        assert line in section
