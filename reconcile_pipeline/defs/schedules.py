"""The 15-minute reconcile schedule.

Ticks come every 15 minutes and windows are 20 minutes long, so the 15 minutes since the previous
tick always lie in at most two windows: the one containing the tick and the one containing
tick - 15 min. Requesting both means every change is reconciled by the first tick after it; a
window requested twice (while in progress, then once closed) is harmless because runs are
idempotent.
"""

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import dagster as dg

from reconcile_pipeline.defs.partitions import PARTITIONS_START, partition_key_for, window_for

RECONCILE_JOB_NAME = "reconcile_job"

# dagster.yaml's queued run coordinator allows one run per distinct value of this tag, so two
# runs never reconcile the same Airtable base at once.
BASE_TAG = "reconcile/base"
DEFAULT_BASE_ID = "appDemoLeads00001"

# Must match the cron below: the look-back that guarantees no gap between two ticks.
TICK_INTERVAL = timedelta(minutes=15)


def base_id_from_env() -> str:
    """The Airtable base id every reconcile run is tagged with: the project file's client's
    (README "The project file"); the name is kept for the callers that predate the file."""
    from reconcile_pipeline.defs.project import base_id

    return base_id()


def base_pool(base_id: str) -> str:
    """The Dagster concurrency pool every reconcile asset and op of a base belongs to.

    dagster.yaml sets pools to run granularity with a default limit of 1: a run holding any
    step of this pool occupies it for its whole duration. This covers the runs job tags cannot:
    the UI's asset-graph "Materialize" and "Launch backfill" use Dagster's implicit asset job.
    """
    return f"reconcile_base_{base_id}"


def reconcile_run_tags(base_id: str) -> Mapping[str, str]:
    """Tags every reconcile run must carry (the per-base concurrency limit keys on them)."""
    return {BASE_TAG: base_id}


def windows_to_request(
    tick: datetime, *, first_window_start: datetime = PARTITIONS_START
) -> list[str]:
    """Partition keys a tick at `tick` requests, oldest first, without duplicates.

    Windows starting before `first_window_start` do not exist as partitions and are left out.
    Oldest first so that, with one run per base at a time, the older window is reconciled first.
    """
    keys: list[str] = []
    for ts in (tick - TICK_INTERVAL, tick):
        key = partition_key_for(ts)
        if key not in keys and window_for(ts)[0] >= window_for(first_window_start)[0]:
            keys.append(key)
    return keys


def run_requests_for(tick: datetime, base_id: str) -> list[dg.RunRequest]:
    """One run request per window to reconcile at `tick`.

    The run key names the tick as well as the window: the same window is requested by
    consecutive ticks, and a run key naming only the window would make Dagster skip the second
    request.
    """
    tick_iso = tick.astimezone(UTC).isoformat(timespec="seconds")
    return [
        dg.RunRequest(
            run_key=f"{key}@{tick_iso}",
            partition_key=key,
            tags=dict(reconcile_run_tags(base_id)),
        )
        for key in windows_to_request(tick)
    ]


# RUNNING by default so that a fresh deployment (and the demo UI) reconciles live without anyone
# finding the toggle; tests evaluate the definition directly and never start a daemon.
@dg.schedule(
    name="reconcile_schedule",
    job_name=RECONCILE_JOB_NAME,
    cron_schedule="*/15 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        "Every 15 minutes: reconcile the window containing the tick and the window containing "
        "tick - 15 min."
    ),
)
def reconcile_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    # The scheduled time, not "now": a late evaluation must still cover the tick's own windows.
    tick = context.scheduled_execution_time or datetime.now(UTC)
    # Read per tick, not at import, so the tag follows the same environment the run will see.
    return run_requests_for(tick, base_id_from_env())
