"""Jobs: the partitioned reconcile, the daily delete sweep and the full reconcile."""

import dagster as dg

from reconcile_pipeline.airtable.resource import AirtableResource
from reconcile_pipeline.defs.assets import BASE_POOL, lock_name, reconcile_assets
from reconcile_pipeline.defs.config import ReconcileConfig
from reconcile_pipeline.defs.metadata import markdown_table
from reconcile_pipeline.defs.partitions import reconcile_windows
from reconcile_pipeline.defs.resources import PostgresResource
from reconcile_pipeline.defs.schedules import base_id_from_env, reconcile_run_tags
from reconcile_pipeline.engine.context import RunContext
from reconcile_pipeline.engine.full_reconcile import full_reconcile
from reconcile_pipeline.engine.sweep import delete_sweep

# Every run of these jobs (launchpad, schedule, `reconcile backfill`) carries the base tag, so
# dagster.yaml's per-base tag limit keeps a queued run waiting while another run of the base is in
# progress. Runs the UI launches from the asset graph use Dagster's implicit asset job and carry
# no job tags; they queue on the base's concurrency pool instead, which every reconcile asset and
# op declares. In-process runs (`reconcile backfill`, the demo) hold both but skip the queue. The
# engine does not rely on any of it: row locks, the stale-snapshot guard and the push's advisory
# lock keep overlapping runs safe.
BASE_RUN_TAGS = dict(reconcile_run_tags(base_id_from_env()))

# In-process: a reconcile is I/O-bound and small; the multiprocess executor costs ~30 s of
# process start-up per run on 2 cores (DESIGN §8).
reconcile_job = dg.define_asset_job(
    "reconcile_job",
    selection=dg.AssetSelection.assets(*reconcile_assets),
    partitions_def=reconcile_windows,
    executor_def=dg.in_process_executor,
    tags=BASE_RUN_TAGS,
    description="Pull the window's Airtable changes into PostgreSQL, then push portal edits.",
)


@dg.op(
    pool=BASE_POOL,
    description="Soft-delete leads whose Airtable record is gone; restore reappeared ones.",
)
def sweep_deleted_records(
    context: dg.OpExecutionContext,
    config: ReconcileConfig,
    airtable: AirtableResource,
    postgres: PostgresResource,
) -> dg.Output[None]:
    result = delete_sweep(
        postgres.repository(),
        airtable.client,
        RunContext(run_id=context.run_id, dry_run=config.dry_run),
    )
    context.log.info("Delete sweep: %s", result.counts())
    return dg.Output(None, metadata={**result.counts(), "dry_run": config.dry_run})


@dg.op(
    pool=BASE_POOL,
    description="Compare every record and field, repair drift through the normal paths.",
)
def reconcile_everything(
    context: dg.OpExecutionContext,
    config: ReconcileConfig,
    airtable: AirtableResource,
    postgres: PostgresResource,
) -> dg.Output[None]:
    result = full_reconcile(
        postgres.repository(),
        airtable.client,
        RunContext(run_id=context.run_id, dry_run=config.dry_run),
        lock_name=lock_name(airtable),
    )
    drift = result.drift
    context.log.info("Full reconcile drift by field: %s", dict(drift.drift_by_field))
    return dg.Output(
        None,
        metadata={
            "records_compared": drift.records_compared,
            "drifted_records": drift.drifted_records,
            "missing_in_postgres": drift.missing_in_postgres,
            "missing_in_airtable": drift.missing_in_airtable,
            "drift_by_field": dg.MetadataValue.json(dict(drift.drift_by_field)),
            "drift_examples": markdown_table(
                [
                    {"record": e["record_id"], "fields": ", ".join(e["fields"])}
                    for e in drift.examples
                ]
            ),
            **{f"pull_{k}": v for k, v in result.pull.counts().items()},
            **{f"push_{k}": v for k, v in result.push.counts().items()},
            "soft_deleted": result.sweep.soft_deleted,
            "airtable_requests": result.requests,
            "dry_run": config.dry_run,
        },
    )


@dg.job(
    tags=BASE_RUN_TAGS,
    description="Daily: list every Airtable record id and soft-delete vanished leads.",
)
def delete_sweep_job() -> None:
    sweep_deleted_records()


@dg.job(
    tags=BASE_RUN_TAGS,
    description="Weekly or on demand: the non-destructive full reconcile with drift report.",
)
def full_reconcile_job() -> None:
    reconcile_everything()


delete_sweep_schedule = dg.ScheduleDefinition(
    job=delete_sweep_job,
    cron_schedule="30 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
full_reconcile_schedule = dg.ScheduleDefinition(
    job=full_reconcile_job,
    cron_schedule="0 4 * * 0",
    execution_timezone="UTC",
)
