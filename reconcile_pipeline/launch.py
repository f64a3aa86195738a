"""Launch reconcile runs from the command line against the configured Dagster instance.

`dagster job backfill` ignores backfill policies (one run per partition); this runs a range of
windows as ONE run of a client's reconcile job (one Airtable query per table for the whole
range), recorded in the instance like any run, so it shows in the UI. Every client of the
project file runs in turn, or the one named.
"""

import datetime as dt
import logging
import os
import uuid
from collections.abc import Callable, Iterator

import dagster as dg

from reconcile_pipeline.definitions import defs
from reconcile_pipeline.defs.assets import client_tables
from reconcile_pipeline.defs.naming import reconcile_job_name, run_tags
from reconcile_pipeline.defs.partitions import partition_key_for
from reconcile_pipeline.defs.project import ClientSpec, client_by_key, clients
from reconcile_pipeline.defs.schedules import windows_to_request
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
    """How to look at a run: the UI on the same instance (DAGSTER_HOME), at the run's page."""
    ui = (os.environ.get("RECONCILE_DAGSTER_UI_URL") or "").strip().rstrip("/")
    where = f"{ui}/runs/{run_id}" if ui else f"http://127.0.0.1:3000/runs/{run_id}"
    return (
        f"See run {run_id} in the Dagster UI: `reconcile ui` (or your dagster-webserver on the "
        f"same DAGSTER_HOME), then {where}; `--verbose` prints its event log here."
    )


def current_window(now: dt.datetime | None = None) -> str:
    """The window a schedule tick at `now` runs: its own (the one containing it). Its pull
    starts at the table's high-water mark, so it covers everything since the last run."""
    return windows_to_request(now or dt.datetime.now(dt.UTC))[-1]


def run_reconcile(
    instance: dg.DagsterInstance,
    hours: float = 0,
    dry_run: bool = False,
    log_level: str = "INFO",
    now: dt.datetime | None = None,
    on_start: Callable[[str, str | None, str], None] | None = None,
    client: str | None = None,
) -> Iterator[dg.ExecuteInProcessResult]:
    """Run each client's reconcile job (or `client`'s only) in this process; yields one result
    per run. A client's failure does not stop the next client's runs.

    hours=0 ("sync now"): one run of the window containing `now`, as a schedule tick at `now`
    runs it (its pull starts at the high-water mark); hours>0: one run over every window of
    the last `hours`. `now` defaults to the current time.

    `log_level` is the threshold of the run's Dagster console log (stderr): "CRITICAL" keeps it
    quiet (a failed step's stack trace included), the event log stays in the instance.
    `on_start(run_id, partition key or None, client key)` is called before each run starts.
    """
    # Runs of a process that was killed earlier on this host end as failed before new ones
    # start, even when no daemon runs the sensor that does it otherwise.
    try:
        fail_dead_runs(instance, logger)
    except Exception as exc:  # best effort: the sensor does it too, and the runs must go on
        logger.warning("Could not check for dead runs (%s): %s", type(exc).__name__, exc)
    now = now or dt.datetime.now(dt.UTC)
    chosen: tuple[ClientSpec, ...] = (client_by_key(client),) if client else clients()
    for spec in chosen:
        yield from _run_client(instance, spec, hours, dry_run, log_level, now, on_start)


def _run_client(
    instance: dg.DagsterInstance,
    spec: ClientSpec,
    hours: float,
    dry_run: bool,
    log_level: str,
    now: dt.datetime,
    on_start: Callable[[str, str | None, str], None] | None,
) -> Iterator[dg.ExecuteInProcessResult]:
    job = defs.resolve_job_def(reconcile_job_name(spec.key))
    # This process runs them: if it dies, the run failure sensor (or the next CLI run here)
    # finds the run's process gone and marks the run failed.
    tags = {**run_tags(spec.key, spec.base_id, spec.token_env), **current_worker().tags()}
    run_config = {
        "ops": {
            asset.op.name: {"config": {"dry_run": dry_run}}
            for table in client_tables[spec.key]
            for asset in (table.pulled, table.pushed)
        },
        "loggers": {"console": {"config": {"log_level": log_level}}},
    }
    if hours > 0:
        run_id = str(uuid.uuid4())  # known before the run starts, to print it
        if on_start is not None:
            on_start(run_id, None, spec.key)
        yield job.execute_in_process(
            instance=instance,
            tags={**tags, **range_tags(hours, now)},
            run_config=run_config,
            raise_on_error=False,
            run_id=run_id,
        )
        return
    key = current_window(now)
    run_id = str(uuid.uuid4())  # known before the run starts, to print it
    if on_start is not None:
        on_start(run_id, key, spec.key)
    yield job.execute_in_process(
        instance=instance,
        partition_key=key,
        tags=tags,
        run_config=run_config,
        raise_on_error=False,
        run_id=run_id,
    )
