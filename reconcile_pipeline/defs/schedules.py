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

# Names and tags live in naming.py; re-exported here for the callers that predate it.
from reconcile_pipeline.defs.naming import (  # noqa: E402
    BASE_TAG,
    CLIENT_TAG,
    TOKEN_TAG,
    base_pool,
    reconcile_schedule_name,
    run_tags,
)
from reconcile_pipeline.defs.partitions import PARTITIONS_START, partition_key_for, window_for

__all__ = ["BASE_TAG", "CLIENT_TAG", "TOKEN_TAG", "base_pool", "run_tags"]

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


def reconcile_run_tags(base_id: str) -> Mapping[str, str]:
    """The tags of a run of the client whose base is `base_id`."""
    from reconcile_pipeline.defs.project import client_of_base

    spec = client_of_base(base_id)
    if spec is None:
        return {BASE_TAG: base_id}
    return run_tags(spec.key, spec.base_id, spec.token_env)


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


def run_requests_for(
    tick: datetime, base_id: str, tags: Mapping[str, str] | None = None
) -> list[dg.RunRequest]:
    """One run request per window to reconcile at `tick`.

    The run key names the tick as well as the window: the same window is requested by
    consecutive ticks, and a run key naming only the window would make Dagster skip the second
    request.
    """
    tick_iso = tick.astimezone(UTC).isoformat(timespec="seconds")
    run_tags_ = dict(tags) if tags is not None else dict(reconcile_run_tags(base_id))
    return [
        dg.RunRequest(run_key=f"{key}@{tick_iso}", partition_key=key, tags=run_tags_)
        for key in windows_to_request(tick)
    ]


def build_reconcile_schedule(
    client: str, job_name: str, tags: Mapping[str, str]
) -> dg.ScheduleDefinition:
    """The client's 15-minute schedule. RUNNING by default so that a fresh deployment (and the
    demo UI) reconciles live without anyone finding the toggle; tests evaluate the definition
    directly and never start a daemon."""

    @dg.schedule(
        name=reconcile_schedule_name(client),
        job_name=job_name,
        cron_schedule="*/15 * * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=(
            f"Every 15 minutes: reconcile {client}'s window containing the tick and the window "
            "containing tick - 15 min."
        ),
    )
    def reconcile_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
        # The scheduled time, not "now": a late evaluation must still cover the tick's windows.
        tick = context.scheduled_execution_time or datetime.now(UTC)
        return run_requests_for(tick, tags[BASE_TAG], tags)

    return reconcile_schedule
