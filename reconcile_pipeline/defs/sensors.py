"""Alerting sensors: failed runs and failed asset checks raise one alert each.

Both read the event log after a cursor (the newest storage id they have seen):
`failed_check_alert_sensor` reads asset check evaluations (open-source Dagster has no built-in
alert for checks) and `reconcile_run_failure_alert` reads run failures. The run sensor is not a
`run_failure_sensor`: Dagster's run-status sensors skip runs without a remote job origin, i.e.
every run started in-process (`reconcile backfill`, the demo: `execute_in_process`), which then
failed silently. A run failure event is written however the run was launched and however it
failed (its own error, the gRPC server finding its process gone, the run monitor giving up on it),
so reading those events alerts for every failed run, and the cursor makes it exactly once.

Both sensors are RUNNING by default: with no webhook configured an alert is only logged, so
running them costs nothing and a deployment that sets the webhook is alerted from the start.
Alerts need a running daemon (`reconcile ui`, or `dagster-daemon`); failures that happen while
none runs are alerted when it starts, within the look-back below.

Before alerting, each tick of the run sensor marks failed the runs whose worker process died
(`fail_dead_runs`): no launcher watches a run started in-process, and Dagster's run monitoring
cannot check the health of a `DefaultRunLauncher` worker, so such a run stayed STARTED forever,
holding its base's place in the queue. Failing it in the same tick also alerts it in that tick.

On its first tick (no cursor yet) each sensor looks back `FIRST_TICK_LOOKBACK` only: a failure
just before the daemon started still alerts, while a sensor turned on over months of history
does not replay every old failure into the webhook.
"""

import datetime as dt
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import dagster as dg
from dagster_shared.error import SerializableErrorInfo

from reconcile_pipeline.alerting import AlertLogger
from reconcile_pipeline.defs.alert_resource import AlertWebhookResource
from reconcile_pipeline.defs.schedules import BASE_TAG, base_id_from_env
from reconcile_pipeline.instance import Worker, worker_is_gone

ALERT_RESOURCE_KEY = "alert_webhook"
SENSOR_INTERVAL_SECONDS = 30
# Enough for any realistic tick, small enough that a backlog never overruns a sensor evaluation.
CHECK_RECORDS_PER_TICK = 100
RUN_FAILURES_PER_TICK = 50
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


def events_after(
    instance: dg.DagsterInstance,
    event_type: dg.DagsterEventType,
    cursor: int | None,
    limit: int,
    *,
    after_timestamp: float | None = None,
    ascending: bool = True,
) -> Sequence[dg.EventLogRecord]:
    """Events of `event_type` with a storage id above `cursor` (and newer than
    `after_timestamp`), oldest first unless `ascending` is False.

    Read through the event log storage: `DagsterInstance.get_event_records` is deprecated in 1.13
    with no replacement, and both do the same query. A plain storage id as cursor needs a storage
    with global ids (PostgreSQL, as dagster.yaml configures, or the in-memory one); the
    run-sharded SQLite default refuses it with an explicit error.
    """
    return instance.event_log_storage.get_event_records(
        dg.EventRecordsFilter(
            event_type=event_type, after_cursor=cursor, after_timestamp=after_timestamp
        ),
        limit=limit,
        ascending=ascending,
    )


def check_evaluations_after(
    instance: dg.DagsterInstance,
    cursor: int | None,
    limit: int = CHECK_RECORDS_PER_TICK,
    *,
    after_timestamp: float | None = None,
    ascending: bool = True,
) -> Sequence[dg.EventLogRecord]:
    """Asset check evaluations after `cursor` (see `events_after`)."""
    return events_after(
        instance,
        dg.DagsterEventType.ASSET_CHECK_EVALUATION,
        cursor,
        limit,
        after_timestamp=after_timestamp,
        ascending=ascending,
    )


def run_failures_after(
    instance: dg.DagsterInstance,
    cursor: int | None,
    limit: int = RUN_FAILURES_PER_TICK,
    *,
    after_timestamp: float | None = None,
    ascending: bool = True,
) -> Sequence[dg.EventLogRecord]:
    """Run failure events after `cursor`, whatever launched the run (see `events_after`)."""
    return events_after(
        instance,
        dg.DagsterEventType.RUN_FAILURE,
        cursor,
        limit,
        after_timestamp=after_timestamp,
        ascending=ascending,
    )


def _records_since_cursor(
    context: dg.SensorEvaluationContext,
    read: Callable[..., Sequence[dg.EventLogRecord]],
    what: str,
) -> Sequence[dg.EventLogRecord] | dg.SkipReason:
    """The records to handle this tick: after the cursor, or on the first tick (no cursor) the
    last `FIRST_TICK_LOOKBACK`. A first tick with nothing to handle sets the cursor and skips."""
    if context.cursor:
        return read(context.instance, int(context.cursor))
    # The newest id is read first: an event landing between the two reads is then newer than
    # the cursor set below and is handled on the next tick.
    newest = read(context.instance, None, limit=1, ascending=False)
    since = time.time() - FIRST_TICK_LOOKBACK.total_seconds()
    records = read(context.instance, None, after_timestamp=since)
    if not records:
        context.update_cursor(str(newest[0].storage_id if newest else 0))
        return dg.SkipReason(
            f"First tick: no {what} in the last {FIRST_TICK_LOOKBACK}; alerting on new ones "
            "from now on."
        )
    return records


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
    records = _records_since_cursor(context, check_evaluations_after, "check evaluation")
    if isinstance(records, dg.SkipReason):
        return records
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


def _clean_message(error: SerializableErrorInfo) -> str:
    """The message a person needs from a (possibly wrapped) error, without any traceback.

    Dagster wraps user exceptions ("Error occurred while executing op ..."); the cause at the
    bottom of the chain carries the message. Its "package.module.Class: " prefix is shortened to
    "Class: ", and a `dagster.Failure` shows only its description (the project raises it with a
    message written for people).
    """
    while error.cause is not None:
        error = error.cause
    text = error.message.strip()
    head, sep, rest = text.partition(": ")
    if sep and error.cls_name and head.rsplit(".", 1)[-1] == error.cls_name and " " not in head:
        text = rest if error.cls_name == "Failure" else f"{error.cls_name}: {rest}"
    return text


def _first_lines(text: str, count: int = MAX_ERROR_LINES) -> list[str]:
    return [line for line in text.strip().splitlines() if line.strip()][:count]


def run_failure_alert(
    run: dg.DagsterRun,
    failure_event: dg.DagsterEvent | None,
    step_failures: Sequence[dg.DagsterEvent],
    run_link: str | None = None,
) -> Alert:
    """The alert for a failed run: job, run id, partition and base tags, and the errors (their
    messages only, never a stack trace)."""
    lines = [f"Job: {run.job_name}", f"Run: {run.run_id}"]
    lines.extend(
        f"{tag}: {run.tags[tag]}" for tag in (*PARTITION_TAGS, BASE_TAG) if tag in run.tags
    )
    errors: list[tuple[str | None, SerializableErrorInfo]] = []
    for event in step_failures:
        error = getattr(event.event_specific_data, "error", None)
        if error is not None:
            errors.append((event.step_key, error))
    run_error = getattr(failure_event.event_specific_data, "error", None) if failure_event else None
    if not errors and run_error is not None:
        errors.append((None, run_error))
    if errors:
        for step_key, error in errors:
            prefix = f"Step {step_key} failed" if step_key else "Run failed"
            lines.append(f"{prefix}:")
            lines.extend(_first_lines(_clean_message(error)))
    elif failure_event is not None and failure_event.message:
        lines.extend(_first_lines(failure_event.message))
    if run_link:
        lines.append(run_link)
    return Alert(title=f"Run failed: {run.job_name}", lines=tuple(lines))


def fail_dead_runs(instance: dg.DagsterInstance, logger: AlertLogger | None = None) -> list[str]:
    """Mark failed every STARTED run whose worker process on this host has ended; returns their
    run ids.

    The worker is named by the run's tags (`instance.Worker`). Runs on another host, and runs
    without the tags, are left alone: nothing here can tell whether they live. The failure is an
    ordinary run failure: it frees the run's place in the queue (per-base tag limit and pool), and
    the run failure sensor alerts it. The base's PostgreSQL lock needs no cleanup: it went with the
    dead process's database session.
    """
    failed: list[str] = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        worker = Worker.from_tags(record.dagster_run.tags)
        if worker is None or not worker_is_gone(worker):
            continue
        # Read again after the liveness check: a run that ended normally just before its process
        # exited is finished by now and must not be touched.
        run = instance.get_run_by_id(record.dagster_run.run_id)
        if run is None or run.status != dg.DagsterRunStatus.STARTED:
            continue
        message = (
            f"The run's process ({worker.pid} on {worker.host}) is gone: it was killed or crashed "
            "without ending the run. Marked failed so the base is free again; its windows are "
            "reconciled by the next run."
        )
        instance.report_run_failed(run, message)
        storage = instance.event_log_storage
        if storage.supports_global_concurrency_limits:
            # Slots a run claimed step by step (op-granularity pools) are not freed by its end.
            storage.free_concurrency_slots_for_run(run.run_id)
        if logger is not None:
            logger.warning("Run %s marked failed: %s", run.run_id, message)
        failed.append(run.run_id)
    return failed


def _watched_by(context: dg.SensorEvaluationContext, run: dg.DagsterRun) -> bool:
    """Whether this code location alerts for `run`: every run of the instance, except runs that
    belong to another code location (by origin) or to another base (by tag), so that one
    deployment with a code location per base sharing an instance alerts once per failure."""
    if BASE_TAG in run.tags and run.tags[BASE_TAG] != base_id_from_env():
        return False
    ours = context.code_location_origin
    origin = run.remote_job_origin
    if ours is not None and origin is not None:
        return origin.location_name == ours.location_name
    return True


def run_failure_alerts(
    context: dg.SensorEvaluationContext,
    records: Sequence[dg.EventLogRecord],
    resource: AlertWebhookResource | None = None,
) -> list[Alert]:
    """One alert per failed run among `records` (run failure events), once per run."""
    instance = context.instance
    alerts: list[Alert] = []
    seen: set[str] = set()
    for record in records:
        if record.run_id in seen:
            continue
        seen.add(record.run_id)
        run = instance.get_run_by_id(record.run_id)
        if run is None or not _watched_by(context, run):
            continue
        step_failures = [
            entry.dagster_event
            for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
            if entry.dagster_event is not None
        ]
        link = resource.run_link(run.run_id) if resource else None
        alerts.append(
            run_failure_alert(run, record.event_log_entry.dagster_event, step_failures, link)
        )
    return alerts


@dg.sensor(
    name="reconcile_run_failure_alert",
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks failed the runs whose process died, then alerts once per failed run, "
    "however it was launched (schedule, UI, `reconcile backfill`, the demo): reads run failures "
    "from the event log by cursor.",
)
def reconcile_run_failure_alert(
    context: dg.SensorEvaluationContext, alert_webhook: AlertWebhookResource
) -> dg.SkipReason:
    try:
        fail_dead_runs(context.instance, context.log)
    except Exception as exc:  # the sweep must never stop alerts; the next tick tries again
        context.log.error("Could not check for dead runs (%s): %s", type(exc).__name__, exc)
    records = _records_since_cursor(context, run_failures_after, "run failure")
    if isinstance(records, dg.SkipReason):
        return records
    if not records:
        return dg.SkipReason("No new run failures.")
    alerts = run_failure_alerts(context, records, alert_webhook)
    sent = send_all(alerts, alert_webhook, context.log)
    # Advanced even when a delivery failed, as for checks: the alert was logged.
    context.update_cursor(str(records[-1].storage_id))
    return dg.SkipReason(f"Read {len(records)} run failures: {len(alerts)} alerts, {sent} sent.")
