"""The reconcile assets: thin adapters from a partition window to the engine's stages.

All four share the 20-minute windows and a single-run backfill policy, so a range of windows
(a backfill over hours or weeks) is one run making one filtered Airtable query. Each persists its
own result in PostgreSQL (snapshot, merge outcome, push results) and returns metadata only, so no
IO manager pickles anything between steps.
"""

import datetime as dt
import time

import dagster as dg
import pandas as pd

from reconcile_pipeline.airtable.resource import AirtableResource
from reconcile_pipeline.defs.config import PullConfig, ReconcileConfig
from reconcile_pipeline.defs.metadata import markdown_table, window_metadata
from reconcile_pipeline.defs.partitions import reconcile_windows
from reconcile_pipeline.defs.resources import PostgresResource
from reconcile_pipeline.defs.schedules import base_id_from_env, base_pool
from reconcile_pipeline.engine.context import RunContext
from reconcile_pipeline.engine.frames import records_frame
from reconcile_pipeline.engine.stages import fetch_window, merge_snapshot, push_window
from reconcile_pipeline.engine.validate import validate_mapping

GROUP = "reconcile"
OWNERS = ["team:revops-data"]
# Every reconcile step of this base, however its run was launched, holds the base's pool.
BASE_POOL = base_pool(base_id_from_env())
COMMON = dict(
    partitions_def=reconcile_windows,
    pool=BASE_POOL,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name=GROUP,
    owners=OWNERS,
)


def run_context(context: dg.AssetExecutionContext, dry_run: bool = False) -> RunContext:
    window = context.partition_time_window
    return RunContext(
        run_id=context.run_id, window_start=window.start, window_end=window.end, dry_run=dry_run
    )


def lock_name(airtable: AirtableResource) -> str:
    return f"reconcile:{airtable.base_id}:{airtable.table}"


@dg.asset(kinds={"airtable", "pandas"}, **COMMON)
def airtable_leads(
    context: dg.AssetExecutionContext,
    config: PullConfig,
    airtable: AirtableResource,
    postgres: PostgresResource,
) -> dg.MaterializeResult:
    """Airtable records created or modified in the window (plus the overlap), snapshotted."""
    repo = postgres.repository()
    coverage = validate_mapping(repo, airtable.client)
    repo.register_tracked_columns()
    fetched = fetch_window(
        repo,
        airtable.client,
        run_context(context),
        overlap=dt.timedelta(minutes=config.overlap_minutes),
    )
    frame: pd.DataFrame = records_frame(repo.mapping, fetched.records)
    context.log.info(
        "Pulled %d records in %d requests (%s)", len(frame), fetched.requests, coverage.summary()
    )
    preview_columns = [
        c
        for c in ("record_id", "status", "processing_status", "claimed_by", "airtable_modified_at")
        if c in frame.columns
    ]
    return dg.MaterializeResult(
        metadata={
            **window_metadata(context),
            "pulled": len(frame),
            "pages": fetched.pages,
            "airtable_requests": fetched.requests,
            "repeated_in_pull": fetched.repeated_in_pull,
            "pull_from": dg.MetadataValue.timestamp(fetched.pull_start)
            if fetched.pull_start is not None
            else "full pull (no high-water mark yet)",
            "duration_seconds": round(fetched.seconds, 3),
            "field_coverage": coverage.summary(),
            "dagster/row_count": len(frame),
            "dagster/column_schema": dg.TableSchema(
                columns=[dg.TableColumn(name, str(dtype)) for name, dtype in frame.dtypes.items()]
            ),
            "preview": dg.MetadataValue.md(
                frame[preview_columns].head(5).to_markdown(index=False) if len(frame) else "_none_"
            ),
        }
    )


@dg.asset(deps=[airtable_leads], kinds={"postgres"}, **COMMON)
def postgres_leads(
    context: dg.AssetExecutionContext, config: ReconcileConfig, postgres: PostgresResource
) -> dg.MaterializeResult:
    """The portal's leads after stage 1 merged the window's Airtable records into them."""
    started = time.monotonic()
    result = merge_snapshot(postgres.repository(), run_context(context, config.dry_run))
    context.log.info("Stage 1: %s", result.counts())
    return dg.MaterializeResult(
        metadata={
            **window_metadata(context),
            **result.counts(),
            "dry_run": result.dry_run,
            "high_water_mark": dg.MetadataValue.timestamp(result.high_water_mark)
            if result.high_water_mark is not None
            else "not advanced",
            "duration_seconds": round(time.monotonic() - started, 3),
            "changes": markdown_table(
                [
                    {
                        "record": c["record_id"],
                        "field": c["field"],
                        "old": c["old"],
                        "new": c["new"],
                    }
                    for c in result.changes
                ]
            ),
            "conflicts_preview": markdown_table(
                [
                    {
                        "record": c["record_id"],
                        "field": c["field"],
                        "airtable": c["airtable"],
                        "portal": c["portal"],
                        "decision": c["decision"],
                    }
                    for c in result.conflict_rows
                ]
            ),
            "quarantine_preview": markdown_table(
                [
                    {"record": q["record_id"], "field": q["field"], "reason": q["reason"]}
                    for q in result.quarantine_rows
                ]
            ),
        }
    )


@dg.asset(deps=[postgres_leads], kinds={"postgres"}, **COMMON)
def postgres_dirty_leads(
    context: dg.AssetExecutionContext, postgres: PostgresResource
) -> dg.MaterializeResult:
    """Portal-owned changes waiting to be pushed: every lead dirty as of the window's end."""
    repo = postgres.repository()
    portal_columns = [spec.column for spec in repo.mapping.portal_fields]
    window_end = context.partition_time_window.end
    as_of = window_end if window_end < dt.datetime.now(dt.UTC) else None
    with repo.engine.connect() as conn:
        dirty = repo.dirty_leads(conn, as_of=as_of, limit=None)
    preview = [
        {
            "record": d.record_id,
            "counter": d.counter,
            "changed": ", ".join(
                c for c in portal_columns if d.base_values.get(c, object()) != d.portal_values[c]
            )
            + (" (+ portal write to an Airtable-owned column)" if d.owned_write_pending else ""),
        }
        for d in dirty[:20]
    ]
    return dg.MaterializeResult(
        metadata={
            **window_metadata(context),
            "dirty": len(dirty),
            "preview": markdown_table(preview),
        }
    )


@dg.asset(deps=[postgres_dirty_leads], kinds={"airtable", "postgres"}, **COMMON)
def airtable_push_results(
    context: dg.AssetExecutionContext,
    config: ReconcileConfig,
    airtable: AirtableResource,
    postgres: PostgresResource,
) -> dg.MaterializeResult:
    """What stage 2 did for each dirty lead: updated, skipped, conflict or failed."""
    started = time.monotonic()
    result = push_window(
        postgres.repository(),
        airtable.client,
        run_context(context, config.dry_run),
        lock_name=lock_name(airtable),
    )
    context.log.info("Stage 2: %s", result.counts())
    return dg.MaterializeResult(
        metadata={
            **window_metadata(context),
            **result.counts(),
            "dry_run": result.dry_run,
            "duration_seconds": round(time.monotonic() - started, 3),
            "preview": markdown_table(
                [
                    {
                        "record": r["record_id"],
                        "outcome": r["outcome"],
                        "fields": ", ".join(r["fields"]),
                        "error": r["error"] or "",
                    }
                    for r in result.results
                ]
            ),
        }
    )


reconcile_assets = [airtable_leads, postgres_leads, postgres_dirty_leads, airtable_push_results]
