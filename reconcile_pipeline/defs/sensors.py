"""Alerting sensors: failed runs and failed asset checks raise an alert.

Open-source Dagster has no built-in alert for asset checks, so `failed_check_alert_sensor` reads
check evaluations from the event log after a cursor (the newest storage id it has seen).
Both sensors are RUNNING by default: with no webhook configured an alert is only logged, so
running them costs nothing and a deployment that sets the webhook is alerted from the start.

On its first tick (no cursor yet) the check sensor looks back `FIRST_TICK_LOOKBACK` only: a check
that failed just before the daemon started still alerts, while a sensor turned on over months of
history does not replay every old failure into the webhook. Dagster's own run-status sensors,
`reconcile_run_failure_alert` among them, start at their first tick with no look-back at all.
"""

import datetime as dt
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dagster as dg
from dagster_shared.error import SerializableErrorInfo

from reconcile_pipeline.alerting import AlertLogger
from reconcile_pipeline.defs.alert_resource import AlertWebhookResource
from reconcile_pipeline.defs.schedules import BASE_TAG

ALERT_RESOURCE_KEY = "alert_webhook"
SENSOR_INTERVAL_SECONDS = 30
# Enough for any realistic tick, small enough that a backlog never overruns a sensor evaluation.
CHECK_RECORDS_PER_TICK = 100
FIRST_TICK_LOOKBACK = dt.timedelta(hours=1)
MAX_ERROR_LINES = 5
MAX_METADATA_ENTRIES = 5
MAX_METADATA_VALUE_CHARS = 300

PARTITION_TAGS = (
    "dagster/partition",
    "dagster/asset_partition_range_start",
    "dagster/asset_partition_range_end",
)


@dataclass(frozen=True)
class Alert:
    """One message for the webhook: a title and its lines."""

    title: str
    lines: tuple[str, ...]


def _metadata_text(value: dg.MetadataValue) -> str:
    text = str(value.value)
    if len(text) > MAX_METADATA_VALUE_CHARS:
        text = text[: MAX_METADATA_VALUE_CHARS - 1] + "…"
    return text


def _check_alert(record: dg.EventLogRecord, run_link: str | None) -> Alert | None:
    event = record.event_log_entry.dagster_event
    evaluation = event.event_specific_data if event else None
    if not isinstance(evaluation, dg.AssetCheckEvaluation) or evaluation.passed:
        return None
    asset = evaluation.asset_key.to_user_string()
    lines = [
        f"Check: {evaluation.check_name}",
        f"Asset: {asset}",
        f"Severity: {evaluation.severity.value}",
        f"Run: {record.run_id}",
    ]
    if evaluation.partition:
        lines.append(f"Partition: {evaluation.partition}")
    if evaluation.description:
        lines.append(f"Description: {evaluation.description}")
    entries = list(evaluation.metadata.items())
    lines.extend(f"{key}: {_metadata_text(value)}" for key, value in entries[:MAX_METADATA_ENTRIES])
    if len(entries) > MAX_METADATA_ENTRIES:
        lines.append(f"(+{len(entries) - MAX_METADATA_ENTRIES} more metadata entries)")
    if run_link:
        lines.append(run_link)
    severity = evaluation.severity.value
    return Alert(
        title=f"Asset check failed: {asset} / {evaluation.check_name} ({severity})",
        lines=tuple(lines),
    )


def alerts_for(
    records: Iterable[dg.EventLogRecord], resource: AlertWebhookResource | None = None
) -> list[Alert]:
    """One alert per failed check evaluation among `records` (passed ones give none)."""
    alerts = []
    for record in records:
        link = resource.run_link(record.run_id) if resource else None
        alert = _check_alert(record, link)
        if alert is not None:
            alerts.append(alert)
    return alerts


def check_evaluations_after(
    instance: dg.DagsterInstance,
    cursor: int | None,
    limit: int = CHECK_RECORDS_PER_TICK,
    *,
    after_timestamp: float | None = None,
    ascending: bool = True,
) -> Sequence[dg.EventLogRecord]:
    """Check evaluations with a storage id above `cursor` (and newer than `after_timestamp`),
    oldest first unless `ascending` is False.

    Read through the event log storage: `DagsterInstance.get_event_records` is deprecated in 1.13
    with no replacement for check evaluations, and both do the same query. A plain storage id as
    cursor needs a storage with global ids (PostgreSQL, as dagster.yaml configures, or the
    in-memory one); the run-sharded SQLite default refuses it with an explicit error.
    """
    return instance.event_log_storage.get_event_records(
        dg.EventRecordsFilter(
            event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION,
            after_cursor=cursor,
            after_timestamp=after_timestamp,
        ),
        limit=limit,
        ascending=ascending,
    )


def send_all(alerts: Sequence[Alert], resource: AlertWebhookResource, logger: AlertLogger) -> int:
    """Send alerts in order; after one is not delivered, only log the rest. Returns sent count.

    A webhook that is down costs up to two timeouts per alert; stopping at the first failure
    keeps a backlog from overrunning the sensor's evaluation deadline, and every alert's text
    still reaches the log.
    """
    sent = 0
    for index, alert in enumerate(alerts):
        if resource.send(alert.title, list(alert.lines), logger):
            sent += 1
            continue
        if not resource.webhook_url:
            continue  # log-only mode: send() logged it, and logging costs no time
        for rest in alerts[index + 1 :]:
            logger.warning(
                "Alert (not sent, webhook unavailable): %s\n%s", rest.title, "\n".join(rest.lines)
            )
        break
    return sent


@dg.sensor(
    name="failed_check_alert_sensor",
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts once per failed asset check evaluation (reads the event log by cursor).",
)
def failed_check_alert_sensor(
    context: dg.SensorEvaluationContext, alert_webhook: AlertWebhookResource
) -> dg.SkipReason:
    if context.cursor:
        records = check_evaluations_after(context.instance, int(context.cursor))
    else:
        # The newest id is read first: an evaluation landing between the two reads is then
        # newer than the cursor set below and alerts on the next tick.
        newest = check_evaluations_after(context.instance, None, limit=1, ascending=False)
        since = time.time() - FIRST_TICK_LOOKBACK.total_seconds()
        records = check_evaluations_after(context.instance, None, after_timestamp=since)
        if not records:
            context.update_cursor(str(newest[0].storage_id if newest else 0))
            return dg.SkipReason(
                f"First tick: no check evaluation in the last {FIRST_TICK_LOOKBACK}; "
                "alerting on new ones from now on."
            )
    if not records:
        return dg.SkipReason("No new asset check evaluations.")
    alerts = alerts_for(records, alert_webhook)
    sent = send_all(alerts, alert_webhook, context.log)
    # Advanced even when a delivery failed: the alert was logged, and holding the cursor would
    # resend every alert of the batch on each tick for as long as the webhook is down.
    context.update_cursor(str(records[-1].storage_id))
    return dg.SkipReason(
        f"Read {len(records)} check evaluations: {len(alerts)} failed, {sent} alerts sent."
    )


def _innermost_message(error: SerializableErrorInfo) -> str:
    # Dagster wraps user exceptions ("Error occurred while executing op ..."); the cause at the
    # bottom of the chain carries the message a person needs.
    while error.cause is not None:
        error = error.cause
    return error.message


def _first_lines(text: str, count: int = MAX_ERROR_LINES) -> list[str]:
    return [line for line in text.strip().splitlines() if line.strip()][:count]


def run_failure_alert(
    run: dg.DagsterRun,
    failure_event: dg.DagsterEvent,
    step_failures: Sequence[dg.DagsterEvent],
    run_link: str | None = None,
) -> Alert:
    """The alert for a failed run: job, run id, partition and base tags, and the errors."""
    lines = [f"Job: {run.job_name}", f"Run: {run.run_id}"]
    lines.extend(
        f"{tag}: {run.tags[tag]}" for tag in (*PARTITION_TAGS, BASE_TAG) if tag in run.tags
    )
    errors: list[tuple[str | None, SerializableErrorInfo]] = []
    for event in step_failures:
        error = getattr(event.event_specific_data, "error", None)
        if error is not None:
            errors.append((event.step_key, error))
    run_error = getattr(failure_event.event_specific_data, "error", None)
    if not errors and run_error is not None:
        errors.append((None, run_error))
    if errors:
        for step_key, error in errors:
            prefix = f"Step {step_key} failed" if step_key else "Run failed"
            lines.append(f"{prefix}:")
            lines.extend(_first_lines(_innermost_message(error)))
    elif failure_event.message:
        lines.extend(_first_lines(failure_event.message))
    if run_link:
        lines.append(run_link)
    return Alert(title=f"Run failed: {run.job_name}", lines=tuple(lines))


@dg.run_failure_sensor(
    name="reconcile_run_failure_alert",
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts when any run of this code location fails.",
)
def reconcile_run_failure_alert(
    context: dg.RunFailureSensorContext, alert_webhook: AlertWebhookResource
) -> None:
    alert = run_failure_alert(
        context.dagster_run,
        context.failure_event,
        context.get_step_failure_events(),
        alert_webhook.run_link(context.dagster_run.run_id),
    )
    alert_webhook.send(alert.title, list(alert.lines), context.log)
