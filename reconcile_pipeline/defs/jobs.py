"""Jobs, per client: the partitioned reconcile, the daily delete sweep and the full reconcile.

Every run of these jobs (launchpad, schedule, `reconcile backfill`) carries the client's tags
(naming.run_tags): dagster.yaml's per-base tag limit keeps a queued run waiting while another
run of the base is in progress, and its per-token limit keeps at most ten bases of one token
running at once (Airtable's 50 requests/s per token owner). Runs the UI launches from the asset
graph use Dagster's implicit asset job and carry no job tags; they queue on the base's
concurrency pool instead, which every reconcile asset and op declares. In-process runs
(`reconcile backfill`, the demo) hold both but skip the queue. The engine does not rely on any
of it: row locks, the stale-snapshot guard and the push's advisory lock keep overlapping runs
safe.
"""

from dataclasses import dataclass
from typing import Any

import dagster as dg

from reconcile_pipeline.defs.assets import TableAssets, client_tables, counting_requests, lock_name
from reconcile_pipeline.defs.config import ReconcileConfig
from reconcile_pipeline.defs.metadata import markdown_table
from reconcile_pipeline.defs.naming import (
    airtable_resource_key,
    base_pool,
    delete_sweep_job_name,
    full_reconcile_job_name,
    reconcile_job_name,
    run_tags,
)
from reconcile_pipeline.defs.partitions import reconcile_windows
from reconcile_pipeline.defs.project import ClientSpec, clients
from reconcile_pipeline.defs.schedules import build_reconcile_schedule
from reconcile_pipeline.engine.context import RunContext
from reconcile_pipeline.engine.full_reconcile import full_reconcile
from reconcile_pipeline.engine.sweep import delete_sweep
from reconcile_pipeline.engine.validate import resolve_mapping


@dataclass(frozen=True)
class ClientJobs:
    """A client's jobs and schedules."""

    reconcile: Any  # an unresolved asset job
    delete_sweep: dg.JobDefinition
    full_reconcile: dg.JobDefinition
    schedules: tuple[dg.ScheduleDefinition, ...]

    @property
    def jobs(self) -> list:
        return [self.reconcile, self.delete_sweep, self.full_reconcile]


def build_client_jobs(client: ClientSpec, tables: list[TableAssets]) -> ClientJobs:
    tags = dict(run_tags(client.key, client.base_id, client.token_env))
    airtable_key = airtable_resource_key(client.key)
    # In-process: a reconcile is I/O-bound and small; the multiprocess executor costs ~30 s of
    # process start-up per run on 2 cores (DESIGN §8).
    reconcile_job = dg.define_asset_job(
        reconcile_job_name(client.key),
        selection=dg.AssetSelection.assets(*[a for t in tables for a in t.all]),
        partitions_def=reconcile_windows,
        executor_def=dg.in_process_executor,
        tags=tags,
        description=(
            f"{client.label}: pull the window's Airtable changes into PostgreSQL, then push "
            "portal edits."
        ),
    )

    @dg.op(
        name=f"sweep_deleted_records_{client.key}",
        pool=base_pool(client.base_id),
        required_resource_keys={airtable_key, "postgres"},
        description="Soft-delete leads whose Airtable record is gone; restore reappeared ones.",
    )
    def sweep_deleted_records(
        context: dg.OpExecutionContext, config: ReconcileConfig
    ) -> dg.Output[None]:
        airtable = getattr(context.resources, airtable_key)
        metadata: dict = {"client": client.key, "dry_run": config.dry_run}
        for table in tables:
            mapping = table.mapping
            table_client = airtable.table_client(mapping)
            with counting_requests(context, context.resources.postgres, client, table_client):
                result = delete_sweep(
                    context.resources.postgres.repository(mapping),
                    table_client,
                    RunContext(run_id=context.run_id, dry_run=config.dry_run),
                )
            context.log.info("Delete sweep of %s/%s: %s", client.key, mapping.name, result.counts())
            metadata.update({f"{mapping.name}/{k}": v for k, v in result.counts().items()})
        return dg.Output(None, metadata=metadata)

    @dg.op(
        name=f"reconcile_everything_{client.key}",
        pool=base_pool(client.base_id),
        required_resource_keys={airtable_key, "postgres"},
        description="Compare every record and field, repair drift through the normal paths.",
    )
    def reconcile_everything(
        context: dg.OpExecutionContext, config: ReconcileConfig
    ) -> dg.Output[None]:
        airtable = getattr(context.resources, airtable_key)
        metadata: dict = {"client": client.key, "dry_run": config.dry_run}
        for table in tables:
            mapping = table.mapping
            table_client = airtable.table_client(mapping)
            with counting_requests(context, context.resources.postgres, client, table_client):
                repo = context.resources.postgres.repository(
                    resolve_mapping(mapping, table_client.table_schema())
                )
                result = full_reconcile(
                    repo,
                    table_client,
                    RunContext(run_id=context.run_id, dry_run=config.dry_run),
                    lock_name=lock_name(client.base_id, mapping),
                )
            drift = result.drift
            context.log.info(
                "Full reconcile of %s/%s, drift by field: %s",
                client.key,
                mapping.name,
                dict(drift.drift_by_field),
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
        name=delete_sweep_job_name(client.key),
        tags=tags,
        description=f"{client.label}, weekly: list every Airtable record id and soft-delete "
        "vanished leads.",
    )
    def delete_sweep_job() -> None:
        sweep_deleted_records()

    @dg.job(
        name=full_reconcile_job_name(client.key),
        tags=tags,
        description=f"{client.label}, weekly or on demand: the non-destructive full reconcile "
        "with drift report.",
    )
    def full_reconcile_job() -> None:
        reconcile_everything()

    schedules = (
        build_reconcile_schedule(client, reconcile_job.name, tags),
        # Weekly (Saturday): a sweep lists every record id, ⌈records/100⌉ requests, the
        # budget's largest fixed cost; deletes show in the portal within the week (run the job
        # from the launchpad for sooner).
        dg.ScheduleDefinition(
            name=f"delete_sweep_schedule_{client.key}",
            job=delete_sweep_job,
            cron_schedule="30 3 * * 6",
            execution_timezone="UTC",
            default_status=dg.DefaultScheduleStatus.RUNNING,
        ),
        dg.ScheduleDefinition(
            name=f"full_reconcile_schedule_{client.key}",
            job=full_reconcile_job,
            cron_schedule="0 4 * * 0",
            execution_timezone="UTC",
        ),
    )
    return ClientJobs(reconcile_job, delete_sweep_job, full_reconcile_job, schedules)


client_jobs: dict[str, ClientJobs] = {
    spec.key: build_client_jobs(spec, client_tables[spec.key]) for spec in clients()
}
