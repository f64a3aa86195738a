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

Every alert names the client, the table and the window: the client from the run's
`reconcile/client` tag (else the asset key's first element, else the client whose base the
`reconcile/base` tag names), the table from the failed step's asset key, the window from the
partition tags. A failed run carries its outermost message written for people (a
`dagster.Failure`'s description, else the first error that is not Dagster's wrapper), never the
innermost cause (an `HTTPError` the message was made from) and never a stack trace.
"""

import datetime as dt
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import dagster as dg
from dagster_shared.error import SerializableErrorInfo

from reconcile_pipeline.alerting import AlertLogger
from reconcile_pipeline.defs.alert_resource import AlertWebhookResource
from reconcile_pipeline.defs.naming import BASE_TAG
from reconcile_pipeline.defs.partitions import PARTITION_KEY_FORMAT, WINDOW
from reconcile_pipeline.defs.schedules import project_base_ids
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

PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
PARTITION_TAGS = (PARTITION_TAG, RANGE_START_TAG, RANGE_END_TAG)
# Set by the multi-client jobs; older runs have only the base tag.
CLIENT_TAG = "reconcile/client"


@dataclass(frozen=True)
class Alert:
    """One message: a title, its lines, and the notification's one-line summary (the title and
    the first line when None)."""

    title: str
    lines: tuple[str, ...]
    summary: str | None = None


def _window_start(key: str) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(key, PARTITION_KEY_FORMAT).replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def window_text(tags: Mapping[str, str], partition: str | None = None) -> str | None:
    """The window(s) a run reconciled, for people: "2026-03-02 10:20–10:40 UTC", or a range
    "9 windows, 2026-03-02 08:00 – 11:00 UTC" (the end's date shown when it differs); a key
    that is not one of ours is shown as it is. `partition` (a check's own) wins over the run's
    tags."""
    key = partition or tags.get(PARTITION_TAG)
    if not key and tags.get(RANGE_START_TAG) == tags.get(RANGE_END_TAG):
        key = tags.get(RANGE_START_TAG)  # a range of one window
    if key:
        start = _window_start(key)
        if start is None:
            return key
        return f"{start:%Y-%m-%d %H:%M}–{start + WINDOW:%H:%M} UTC"
    first, last = tags.get(RANGE_START_TAG), tags.get(RANGE_END_TAG)
    if not (first and last):
        return None
    start, end = _window_start(first), _window_start(last)
    if start is None or end is None:
        return f"{first} … {last}"
    count = int((end - start) / WINDOW) + 1
    stop = end + WINDOW
    stop_text = f"{stop:%H:%M}" if stop.date() == start.date() else f"{stop:%Y-%m-%d %H:%M}"
    return f"{count} window{'s' if count != 1 else ''}, {start:%Y-%m-%d %H:%M} – {stop_text} UTC"


def table_of(asset_key: dg.AssetKey) -> str | None:
    """The table of a reconcile asset key: [client, table, name] or [table, name]."""
    path = asset_key.path
    if len(path) >= 3:
        return path[-2]
    if len(path) == 2:
        return path[0]
    return None


def _client_of_base(base_id: str) -> str | None:
    """The project file's client whose Airtable base is `base_id`, when the file says."""
    try:
        from reconcile_pipeline.defs.project import client_of_base

        spec = client_of_base(base_id)
    except Exception:  # the alert goes out without the client rather than not at all
        return None
    return spec.key if spec is not None else None


def client_of(tags: Mapping[str, str], asset_keys: Iterable[dg.AssetKey] = ()) -> str | None:
    """The client a run or check belongs to: the run's `reconcile/client` tag, else the first
    element of a [client, table, name] asset key, else the client of the `reconcile/base` tag's
    base (or "base <id>" when the project file does not know it)."""
    if tags.get(CLIENT_TAG):
        return tags[CLIENT_TAG]
    for key in asset_keys:
        if len(key.path) >= 3:
            return key.path[0]
    base = tags.get(BASE_TAG)
    if base:
        return _client_of_base(base) or f"base {base}"
    return None


def _context_lines(client: str | None, tables: Sequence[str], window: str | None) -> list[str]:
    lines = []
    if client:
        lines.append(f"Client: {client}")
    if tables:
        lines.append(f"{'Tables' if len(tables) > 1 else 'Table'}: {', '.join(tables)}")
    if window:
        lines.append(f"Window: {window}")
    return lines


def _where(client: str | None, tables: Sequence[str], window: str | None) -> str:
    """A summary's " (client / table; window)", or "" when none is known."""
    what = " / ".join(p for p in (client, ", ".join(tables) or None) if p)
    parts = [p for p in (what, window) if p]
    return f" ({'; '.join(parts)})" if parts else ""


def _metadata_text(value: dg.MetadataValue) -> str:
    text = str(value.value)
    if len(text) > MAX_METADATA_VALUE_CHARS:
        text = text[: MAX_METADATA_VALUE_CHARS - 1] + "…"
    return text


def _check_alert(
    record: dg.EventLogRecord, run_link: str | None, run_tags: Mapping[str, str] | None = None
) -> Alert | None:
    event = record.event_log_entry.dagster_event
    evaluation = event.event_specific_data if event else None
    if not isinstance(evaluation, dg.AssetCheckEvaluation) or evaluation.passed:
        return None
    asset = evaluation.asset_key.to_user_string()
    tags = run_tags or {}
    client = client_of(tags, [evaluation.asset_key])
    table = table_of(evaluation.asset_key)
    tables = [table] if table else []
    window = window_text(tags, evaluation.partition)
    lines = [
        f"Check: {evaluation.check_name}",
        f"Asset: {asset}",
        *_context_lines(client, tables, window),
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
    title = f"Asset check failed: {asset} / {evaluation.check_name} ({severity})"
    summary = title + _where(client, tables, window)
    if evaluation.description:
        summary += f": {evaluation.description.strip().splitlines()[0]}"
    return Alert(title=title, lines=tuple(lines), summary=summary)


def alerts_for(
    records: Iterable[dg.EventLogRecord],
    resource: AlertWebhookResource | None = None,
    instance: dg.DagsterInstance | None = None,
) -> list[Alert]:
    """One alert per failed check evaluation among `records` (passed ones give none). With
    `instance`, each names the window and client from its run's tags."""
    alerts = []
    tags_by_run: dict[str, Mapping[str, str]] = {}
    for record in records:
        link = resource.run_link(record.run_id) if resource else None
        if instance is not None and record.run_id not in tags_by_run:
            run = instance.get_run_by_id(record.run_id)
            tags_by_run[record.run_id] = run.tags if run is not None else {}
        alert = _check_alert(record, link, tags_by_run.get(record.run_id))
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
    """Send alerts in order to every destination (webhook, Slack app); a destination that did
    not take one alert gets no more this tick. Returns how many alerts reached at least one.

    A destination that is down costs up to two timeouts per alert; dropping it at its first
    failure keeps a backlog from overrunning the sensor's evaluation deadline, while the other
    destination still gets every alert, and every alert's text still reaches the log.
    """
    if not resource.configured:
        for alert in alerts:  # log-only mode: logging costs no time
            resource.send(alert.title, list(alert.lines), logger, alert.summary)
        return 0
    destinations = resource.destinations()
    names = " and ".join(destinations)
    sent = 0
    for alert in alerts:
        if not destinations:
            logger.warning(
                "Alert (not sent, %s unavailable): %s\n%s",
                names,
                alert.title,
                "\n".join(alert.lines),
            )
            continue
        delivered = False
        for name, send in list(destinations.items()):
            if send(alert.title, list(alert.lines), alert.summary, logger):
                delivered = True
            else:
                del destinations[name]
        sent += delivered
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
    alerts = alerts_for(records, alert_webhook, context.instance)
    sent = send_all(alerts, alert_webhook, context.log)
    # Advanced even when a delivery failed: the alert was logged, and holding the cursor would
    # resend every alert of the batch on each tick for as long as the webhook is down.
    context.update_cursor(str(records[-1].storage_id))
    return dg.SkipReason(
        f"Read {len(records)} check evaluations: {len(alerts)} failed, {sent} alerts sent."
    )


def _is_dagster_wrapper(error: SerializableErrorInfo) -> bool:
    """Dagster's own error around a user error ("Error occurred while executing op ...",
    "Error executing resource_fn ..."): its message is about Dagster, the cause is the news."""
    head = error.message.split(": ", 1)[0]
    return (
        error.cause is not None
        and head.startswith("dagster.")
        and error.cls_name != "Failure"
        and (error.cls_name or "").startswith("Dagster")
    )


def _clean_message(error: SerializableErrorInfo, failure_description: str | None = None) -> str:
    """The message a person needs from a (possibly wrapped) error, without any traceback.

    The outermost message written for people wins: a `dagster.Failure`'s description (the
    project raises one with a message saying what to set), else the first error below Dagster's
    wrappers, as "Class: message" without its module path. Its own causes (the `HTTPError` a
    clean message was made from) are not shown.
    """
    if failure_description and failure_description.strip():
        return failure_description.strip()
    while _is_dagster_wrapper(error):
        error = error.cause
    text = error.message.strip()
    head, sep, rest = text.partition(": ")
    if sep and error.cls_name and head.rsplit(".", 1)[-1] == error.cls_name and " " not in head:
        text = rest if error.cls_name == "Failure" else f"{error.cls_name}: {rest}"
    return text


def _first_lines(text: str, count: int = MAX_ERROR_LINES) -> list[str]:
    return [line for line in text.strip().splitlines() if line.strip()][:count]


def planned_asset_keys(events: Iterable[dg.DagsterEvent]) -> dict[str, list[dg.AssetKey]]:
    """The asset keys each step of a run was to materialize or check, by step key, from the run's
    planned events (written when the run is created, however it is launched)."""
    by_step: dict[str, list[dg.AssetKey]] = {}
    for event in events:
        if event.step_key is None:
            continue
        key: dg.AssetKey | None = None
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED:
            key = event.asset_key
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED:
            key = event.asset_check_planned_data.asset_key
        if key is not None and key not in by_step.setdefault(event.step_key, []):
            by_step[event.step_key].append(key)
    return by_step


def run_failure_alert(
    run: dg.DagsterRun,
    failure_event: dg.DagsterEvent | None,
    step_failures: Sequence[dg.DagsterEvent],
    run_link: str | None = None,
    *,
    asset_keys_by_step: Mapping[str, Sequence[dg.AssetKey]] | None = None,
) -> Alert:
    """The alert for a failed run: job, run id, client, table(s) and window, the partition and
    base tags, and the errors (their clean messages only, never a stack trace).

    `asset_keys_by_step` (`planned_asset_keys`) names the failed steps' tables; without it the
    alert names the client and window only.
    """
    errors: list[tuple[str | None, str]] = []
    failed_keys: list[dg.AssetKey] = []
    for event in step_failures:
        data = event.event_specific_data
        error = getattr(data, "error", None)
        user_failure = getattr(data, "user_failure_data", None)
        if error is not None:
            errors.append(
                (event.step_key, _clean_message(error, getattr(user_failure, "description", None)))
            )
        failed_keys.extend((asset_keys_by_step or {}).get(event.step_key or "", ()))
    run_error = getattr(failure_event.event_specific_data, "error", None) if failure_event else None
    if not errors and run_error is not None:
        errors.append((None, _clean_message(run_error)))

    tables = sorted({table for key in failed_keys if (table := table_of(key))})
    client = client_of(run.tags, failed_keys)
    window = window_text(run.tags)
    lines = [f"Job: {run.job_name}", f"Run: {run.run_id}", *_context_lines(client, tables, window)]
    lines.extend(
        f"{tag}: {run.tags[tag]}" for tag in (*PARTITION_TAGS, BASE_TAG) if tag in run.tags
    )
    first_message: str | None = None
    for step_key, message in errors:
        prefix = f"Step {step_key} failed" if step_key else "Run failed"
        lines.append(f"{prefix}:")
        message_lines = _first_lines(message)
        lines.extend(message_lines)
        first_message = first_message or (message_lines[0] if message_lines else None)
    if not errors and failure_event is not None and failure_event.message:
        message_lines = _first_lines(failure_event.message)
        lines.extend(message_lines)
        first_message = message_lines[0] if message_lines else None
    if run_link:
        lines.append(run_link)
    title = f"Run failed: {run.job_name}"
    summary = (
        title + _where(client, tables, window) + (f": {first_message}" if first_message else "")
    )
    return Alert(title=title, lines=tuple(lines), summary=summary)


def failed_run_alert(
    instance: dg.DagsterInstance,
    run: dg.DagsterRun,
    failure_event: dg.DagsterEvent | None = None,
    run_link: str | None = None,
) -> Alert:
    """`run_failure_alert` for a run recorded in `instance`: its step failures and planned asset
    keys are read from the event log; `failure_event` defaults to the run's own failure event."""
    step_failures: list[dg.DagsterEvent] = []
    planned: list[dg.DagsterEvent] = []
    for entry in instance.all_logs(
        run.run_id,
        of_type={
            dg.DagsterEventType.STEP_FAILURE,
            dg.DagsterEventType.RUN_FAILURE,
            dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
            dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED,
        },
    ):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_FAILURE:
            step_failures.append(event)
        elif event.event_type == dg.DagsterEventType.RUN_FAILURE:
            failure_event = failure_event or event
        else:
            planned.append(event)
    return run_failure_alert(
        run,
        failure_event,
        step_failures,
        run_link,
        asset_keys_by_step=planned_asset_keys(planned),
    )


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
    belong to another code location (by origin) or to a base no client of ours syncs (by tag),
    so that code locations sharing an instance alert once per failure."""
    if BASE_TAG in run.tags and run.tags[BASE_TAG] not in project_base_ids():
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
        link = resource.run_link(run.run_id) if resource else None
        alerts.append(failed_run_alert(instance, run, record.event_log_entry.dagster_event, link))
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
