"""Launch reconcile runs from the command line against the configured Dagster instance.

`dagster job backfill` ignores backfill policies (one run per partition); this runs a range of
windows as ONE run of `reconcile_job` (one Airtable query for the whole range), recorded in the
instance like any run, so it shows in the UI.
"""

import datetime as dt
import logging
from collections.abc import Iterator

import dagster as dg

from reconcile_pipeline.definitions import defs
from reconcile_pipeline.defs.assets import project_tables
from reconcile_pipeline.defs.partitions import partition_key_for
from reconcile_pipeline.defs.schedules import (
    base_id_from_env,
    reconcile_run_tags,
    windows_to_request,
)
from reconcile_pipeline.defs.sensors import fail_dead_runs
from reconcile_pipeline.instance import current_worker

WINDOW = dt.timedelta(minutes=20)
logger = logging.getLogger(__name__)


def range_tags(hours: float, now: dt.datetime | None = None) -> dict[str, str]:
    """Run tags selecting the windows that cover the last `hours` up to the current one."""
    now = now or dt.datetime.now(dt.UTC)
    windows = max(1, round(hours * 3))
    first = partition_key_for(now - WINDOW * (windows - 1))
    return {
        "dagster/asset_partition_range_start": first,
        "dagster/asset_partition_range_end": partition_key_for(now),
    }


def see_run_hint(run_id: str) -> str:
    """How to look at a run: the UI on the same instance (DAGSTER_HOME)."""
    return (
        f"See run {run_id} in the Dagster UI: `reconcile ui` (or your dagster-webserver on the "
        "same DAGSTER_HOME), then Runs."
    )


def current_windows(now: dt.datetime | None = None) -> list[str]:
    """The windows a schedule tick at `now` reconciles (one or two), oldest first."""
    return windows_to_request(now or dt.datetime.now(dt.UTC))


def run_reconcile(
    instance: dg.DagsterInstance,
    hours: float = 0,
    dry_run: bool = False,
    log_level: str = "INFO",
    now: dt.datetime | None = None,
) -> Iterator[dg.ExecuteInProcessResult]:
    """Run `reconcile_job` in this process; yields one result per run.

    hours=0: the schedule's windows at `now` (the window containing it and the one containing
    now − 15 min), one run each, so one or two runs depending on the clock; hours>0: one run
    over every window of the last `hours`. `now` defaults to the current time.
    """
    job = defs.resolve_job_def("reconcile_job")
    # Runs of a process that was killed earlier on this host end as failed before new ones
    # start, even when no daemon runs the sensor that does it otherwise.
    try:
        fail_dead_runs(instance, logger)
    except Exception as exc:  # best effort: the sensor does it too, and the runs must go on
        logger.warning("Could not check for dead runs (%s): %s", type(exc).__name__, exc)
    # This process runs them: if it dies, the run failure sensor (or the next CLI run here)
    # finds the run's process gone and marks the run failed.
    tags = {**reconcile_run_tags(base_id_from_env()), **current_worker().tags()}
    run_config = {
        "ops": {
            asset.op.name: {"config": {"dry_run": dry_run}}
            for table in project_tables
            for asset in (table.merged, table.pushed)
        },
        "loggers": {"console": {"config": {"log_level": log_level}}},
    }
    now = now or dt.datetime.now(dt.UTC)
    if hours > 0:
        yield job.execute_in_process(
            instance=instance,
            tags={**tags, **range_tags(hours, now)},
            run_config=run_config,
            raise_on_error=False,
        )
        return
    for key in current_windows(now):
        yield job.execute_in_process(
            instance=instance,
            partition_key=key,
            tags=tags,
            run_config=run_config,
            raise_on_error=False,
        )
