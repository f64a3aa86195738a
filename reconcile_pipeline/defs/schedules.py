"""The 15-minute reconcile schedule.

Ticks come every 15 minutes and windows are 20 minutes long, so the 15 minutes since the previous
tick always lie in at most two windows: the one containing the tick and the one containing
tick - 15 min. Requesting both means every change is reconciled by the first tick after it; a
window requested twice (while in progress, then once closed) is harmless because runs are
idempotent. One run of the tick's own window does both: its pull starts at the high-water mark,
where the previous run's ended (see `run_requests_for`).
"""

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import dagster as dg

from reconcile_pipeline.defs.naming import reconcile_schedule_name
from reconcile_pipeline.defs.partitions import PARTITIONS_START, partition_key_for, window_for
from reconcile_pipeline.defs.project import ClientSpec

# Must match the cron below: the look-back that guarantees no gap between two ticks.
TICK_INTERVAL = timedelta(minutes=15)


def base_id_from_env() -> str:
    """The Airtable base of the project file's only client (callers that predate several
    clients; raises naming --client when the file declares several)."""
    from reconcile_pipeline.defs.project import base_id

    return base_id()


def project_base_ids() -> set[str]:
    """Every client's base in the project file."""
    from reconcile_pipeline.defs.project import clients

    return {spec.base_id for spec in clients()}


def windows_to_request(
    tick: datetime, *, first_window_start: datetime = PARTITIONS_START
) -> list[str]:
    """The windows the time since the previous tick lies in (those holding `tick - 15 min` …
    `tick`), oldest first, without duplicates; the tick's run is the last one's.

    Windows starting before `first_window_start` do not exist as partitions and are left out.
    """
    first = max(window_for(tick - TICK_INTERVAL)[0], window_for(first_window_start)[0])
    keys: list[str] = []
    start = first
    while start <= window_for(tick)[0]:
        keys.append(partition_key_for(start))
        start = window_for(start)[1]
    return keys


def run_requests_for(tick: datetime, tags: Mapping[str, str]) -> list[dg.RunRequest]:
    """The run to reconcile at `tick`: ONE run of the window containing the tick, so an idle
    tick costs one listing per table (the API budget: README "The API budget").

    The run covers the time since the previous run all the same (15 minutes, or 30 or 60 when
    the API budget slows the schedule down): a pull starts at the table's
    high-water mark (minus the overlap) when that is earlier than its window, and the mark is
    where the previous run's pull ended. Every window is some tick's own (ticks every 15
    minutes, windows of 20), so every partition is materialized. A single window, not a range
    of two: a range run's checks are evaluated for the range, and would be listed as skipped
    on each window of it.

    The run key names the tick as well as the window: the same window is requested by
    consecutive ticks, and a run key naming only the window would make Dagster skip the second
    request.
    """
    keys = windows_to_request(tick)
    if not keys:
        return []
    tick_iso = tick.astimezone(UTC).isoformat(timespec="seconds")
    return [
        dg.RunRequest(run_key=f"{keys[-1]}@{tick_iso}", partition_key=keys[-1], tags=dict(tags))
    ]


def budget_cadence(client: "ClientSpec", now: datetime) -> tuple[int, str | None]:
    """Minutes between the client's reconcile runs that keep its workspace within the month's
    API calls (15 while the projection fits), and the budget's summary; read when a tick is
    evaluated (DATABASE_URL), never at import. No database configured: the normal cadence."""
    import os

    from sqlalchemy import create_engine

    from reconcile_pipeline.engine.api_usage import month_budget

    url = (os.environ.get("DATABASE_URL") or "").strip()
    if not url:
        return int(TICK_INTERVAL.total_seconds() // 60), None
    engine = create_engine(url)
    try:
        budget = month_budget(
            engine,
            client.workspace,
            client.workspace_members,
            client.config.api_calls_per_month,
            now,
        )
    finally:
        engine.dispose()
    return budget.cadence_minutes(int(TICK_INTERVAL.total_seconds() // 60)), budget.summary()


def build_reconcile_schedule(
    client: "ClientSpec", job_name: str, tags: Mapping[str, str]
) -> dg.ScheduleDefinition:
    """The client's 15-minute schedule: one run per tick over the tick's windows. When the
    month's projected API calls exceed the workspace's plan, it runs every 30 or 60 minutes
    instead (each run covering the time since the previous one), never past the quota.

    RUNNING by default so that a fresh deployment (and the demo UI) reconciles live without
    anyone finding the toggle; tests evaluate the definition directly and never start a daemon.
    """

    @dg.schedule(
        name=reconcile_schedule_name(client.key),
        job_name=job_name,
        cron_schedule="*/15 * * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=(
            f"Every 15 minutes (slower when the API budget runs short): reconcile {client.key}'s "
            "windows since the previous tick, as one run."
        ),
    )
    def reconcile_schedule(
        context: dg.ScheduleEvaluationContext,
    ) -> list[dg.RunRequest] | dg.SkipReason:
        # The scheduled time, not "now": a late evaluation must still cover the tick's windows.
        tick = context.scheduled_execution_time or datetime.now(UTC)
        try:
            cadence, summary = budget_cadence(client, tick)
        except Exception as exc:  # the budget must never stop the sync
            context.log.warning("API budget unavailable (%s): the normal cadence", exc)
            cadence, summary = int(TICK_INTERVAL.total_seconds() // 60), None
        # Slowed down: only the ticks on the slower cadence run (the quarter hour a tick falls
        # in decides, so an off-cron evaluation behaves like its tick).
        base = int(TICK_INTERVAL.total_seconds() // 60)
        minute = tick.astimezone(UTC).hour * 60 + tick.astimezone(UTC).minute
        if cadence > base and (minute - minute % base) % cadence:
            return dg.SkipReason(f"API budget: reconciling every {cadence} minutes ({summary})")
        return run_requests_for(tick, tags)

    return reconcile_schedule
