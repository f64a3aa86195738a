"""Jobs: the partitioned reconcile, the daily delete sweep and the full reconcile."""

import dagster as dg

from reconcile_pipeline.airtable.resource import AirtableResource
from reconcile_pipeline.defs.assets import lock_name, project_tables, reconcile_assets
from reconcile_pipeline.defs.config import ReconcileConfig
from reconcile_pipeline.defs.metadata import markdown_table
from reconcile_pipeline.defs.partitions import reconcile_windows
from reconcile_pipeline.defs.project import base_id
from reconcile_pipeline.defs.resources import PostgresResource
from reconcile_pipeline.defs.schedules import base_pool, reconcile_run_tags
from reconcile_pipeline.engine.context import RunContext
from reconcile_pipeline.engine.full_reconcile import full_reconcile
from reconcile_pipeline.engine.sweep import delete_sweep
from reconcile_pipeline.engine.validate import resolve_mapping

# Every run of these jobs (launchpad, schedule, `reconcile backfill`) carries the base tag, so
# dagster.yaml's per-base tag limit keeps a queued run waiting while another run of the base is in
# progress. Runs the UI launches from the asset graph use Dagster's implicit asset job and carry
# no job tags; they queue on the base's concurrency pool instead, which every reconcile asset and
# op declares. In-process runs (`reconcile backfill`, the demo) hold both but skip the queue. The
# engine does not rely on any of it: row locks, the stale-snapshot guard and the push's advisory
# lock keep overlapping runs safe.
BASE_RUN_TAGS = dict(reconcile_run_tags(base_id()))
BASE_POOL = base_pool(base_id())

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
    metadata: dict = {"dry_run": config.dry_run}
    for table in project_tables:
        mapping = table.mapping
        result = delete_sweep(
            postgres.repository(mapping),
            airtable.table_client(mapping),
            RunContext(run_id=context.run_id, dry_run=config.dry_run),
        )
        context.log.info("Delete sweep of %s: %s", mapping.name, result.counts())
        metadata.update({f"{mapping.name}/{k}": v for k, v in result.counts().items()})
    return dg.Output(None, metadata=metadata)


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
    metadata: dict = {"dry_run": config.dry_run}
    for table in project_tables:
        mapping = table.mapping
        client = airtable.table_client(mapping)
        repo = postgres.repository(resolve_mapping(mapping, client.table_schema()))
        result = full_reconcile(
            repo,
            client,
            RunContext(run_id=context.run_id, dry_run=config.dry_run),
            lock_name=lock_name(base_id(), mapping),
        )
        drift = result.drift
        context.log.info(
            "Full reconcile of %s, drift by field: %s", mapping.name, dict(drift.drift_by_field)
        )
        prefix = f"{mapping.name}/"
        metadata.update(
            {
                f"{prefix}records_compared": drift.records_compared,
                f"{prefix}drifted_records": drift.drifted_records,
                f"{prefix}missing_in_postgres": drift.missing_in_postgres,
                f"{prefix}missing_in_airtable": drift.missing_in_airtable,
                f"{prefix}drift_by_field": dg.MetadataValue.json(dict(drift.drift_by_field)),
                f"{prefix}drift_examples": markdown_table(
                    [
                        {"record": e["record_id"], "fields": ", ".join(e["fields"])}
                        for e in drift.examples
                    ]
                ),
                **{f"{prefix}pull_{k}": v for k, v in result.pull.counts().items()},
                **{f"{prefix}push_{k}": v for k, v in result.push.counts().items()},
                f"{prefix}soft_deleted": result.sweep.soft_deleted,
                f"{prefix}airtable_requests": result.requests,
            }
        )
    return dg.Output(None, metadata=metadata)


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
