"""The reconcile assets: thin adapters from a partition window to the engine's stages.

One set of four assets per synced table of every client of the project file, keyed
`<client>/<table>/…` and grouped by client (the demo's `demo/leads/airtable_leads` →
`demo/leads/postgres_leads` → `demo/leads/postgres_dirty_leads` →
`demo/leads/airtable_push_results`). A client's assets use its own Airtable resource
(`airtable_<client>`: its base and its token's variable) and its base's concurrency pool.
All share the 20-minute windows and a single-run backfill policy,
so a range of windows (a backfill over hours or weeks) is one run making one filtered Airtable
query per table. Each persists its own result in PostgreSQL (snapshot, merge outcome, push
results) and returns metadata only, so no IO manager pickles anything between steps.
"""

import contextlib
import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg

from reconcile_pipeline.airtable.errors import AirtableRequestError
from reconcile_pipeline.airtable.resource import AirtableResource
from reconcile_pipeline.defs.config import PullConfig, ReconcileConfig
from reconcile_pipeline.defs.metadata import markdown_table, materialization_metadata
from reconcile_pipeline.defs.naming import airtable_resource_key, base_pool
from reconcile_pipeline.defs.partitions import reconcile_windows
from reconcile_pipeline.defs.project import ClientSpec, clients
from reconcile_pipeline.defs.resources import PostgresResource
from reconcile_pipeline.engine import api_usage
from reconcile_pipeline.engine.context import RunContext
from reconcile_pipeline.engine.convert import PulledRecord
from reconcile_pipeline.engine.frames import column_dtypes, pulled_frame, warm_up
from reconcile_pipeline.engine.mapping import TableMapping
from reconcile_pipeline.engine.schema_cache import current_schema, unknown_to
from reconcile_pipeline.engine.schema_cache import refresh as refresh_schema
from reconcile_pipeline.engine.stages import pull_window, push_window
from reconcile_pipeline.engine.validate import (
    Coverage,
    MappingError,
    resolve_mapping,
    validate_mapping,
)

OWNERS = ["team:revops-data"]
# The pulled records' preview in the metadata (those of them the table maps).
PREVIEW_COLUMNS = ("record_id", "status", "processing_status", "claimed_by", "airtable_modified_at")


@contextlib.contextmanager
def counting_requests(
    context, postgres: PostgresResource, client: ClientSpec, table_client
) -> Iterator[None]:
    """Add the Airtable requests `table_client` sends during the block (failed or not) to the
    client's API usage (reconcile.api_usage, the budget check's input); never fails the step."""
    before = table_client.requests_sent
    try:
        yield
    finally:
        requests = table_client.requests_sent - before
        try:
            api_usage.record(postgres.engine, client.key, client.base_id, requests)
        except Exception as exc:  # the count is for the budget check; the sync matters more
            context.log.warning("Could not count %d Airtable requests: %s", requests, exc)


# The records the running run's pull converted, by (run id, client, table): the window's drift
# check (a later step of the same run, in this process with the in-process executor) reads them
# instead of reading the snapshot back and converting it again (issue 15, goal 7). Only the
# latest run's are kept; a step in another process finds nothing and reads the snapshot.
_pulled_by_run: dict[tuple[str, str, str], list[PulledRecord]] = {}


def keep_pulled(run_id: str, mapping: TableMapping, records: list[PulledRecord]) -> None:
    for kept in [k for k in _pulled_by_run if k[0] != run_id]:
        del _pulled_by_run[kept]
    _pulled_by_run[(run_id, mapping.client, mapping.name)] = records


def pulled_in_run(run_id: str, mapping: TableMapping) -> list[PulledRecord] | None:
    """What `run_id`'s pull of `mapping`'s table converted, if this process ran it."""
    return _pulled_by_run.get((run_id, mapping.client, mapping.name))


def run_context(context: dg.AssetExecutionContext, dry_run: bool = False) -> RunContext:
    window = context.partition_time_window
    return RunContext(
        run_id=context.run_id, window_start=window.start, window_end=window.end, dry_run=dry_run
    )


def lock_name(base: str, mapping: TableMapping) -> str:
    """The engine's per-base-and-table push lock."""
    return f"reconcile:{base}:{mapping.airtable_table}"


@dataclass(frozen=True)
class TableAssets:
    """The assets of one synced table of one client: `airtable_<table>` and `postgres_<table>`
    (materialized together by one step, `pulled`), `postgres_dirty_<table>` and
    `airtable_push_results`."""

    client: ClientSpec
    mapping: TableMapping
    pulled: dg.AssetsDefinition
    dirty: dg.AssetsDefinition
    pushed: dg.AssetsDefinition

    @property
    def airtable_key(self) -> dg.AssetKey:
        return dg.AssetKey([self.client.key, self.mapping.name, f"airtable_{self.mapping.name}"])

    @property
    def merged_key(self) -> dg.AssetKey:
        return dg.AssetKey([self.client.key, self.mapping.name, f"postgres_{self.mapping.name}"])

    @property
    def all(self) -> list[dg.AssetsDefinition]:
        return [self.pulled, self.dirty, self.pushed]


def build_table_assets(
    mapping: TableMapping, client: ClientSpec, upstream: tuple[dg.AssetKey, ...] = ()
) -> TableAssets:
    """The four assets of `mapping`'s table of `client`; `upstream` are the merged assets of
    the tables it links to (synced first: the dependency order is an asset dependency)."""
    key = mapping.name
    base = client.base_id
    resource_key = airtable_resource_key(client.key)
    common = dict(
        partitions_def=reconcile_windows,
        # Every reconcile step of this base, however its run was launched, holds its pool.
        pool=base_pool(base),
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=client.key,
        owners=OWNERS,
        key_prefix=[client.key, key],
        # The client's own Airtable resource (its base, its token's variable) and the database.
        required_resource_keys={resource_key, "postgres"},
    )

    def resources(context: dg.AssetExecutionContext) -> tuple[AirtableResource, PostgresResource]:
        return getattr(context.resources, resource_key), context.resources.postgres

    def counted(context, airtable: AirtableResource, postgres: PostgresResource):
        """Count the step's Airtable requests in the month's API budget."""
        return counting_requests(context, postgres, client, airtable.table_client(mapping))

    def resolved(airtable: AirtableResource, postgres: PostgresResource) -> TableMapping:
        """The mapping with this run's select options from Airtable's schema (cached for a
        day in PostgreSQL, and for the run in the table client)."""
        schema, _ = current_schema(postgres.repository(mapping), airtable.table_client(mapping))
        return resolve_mapping(mapping, schema)

    def checked(repo, client) -> Coverage:
        """Validate the mapping against the schema `client` holds; the clean message, not a
        wrapped traceback, names every deleted or retyped field and what to change."""
        try:
            return validate_mapping(repo, client)
        except MappingError as error:
            raise dg.Failure(description=f"{key}: {error}") from None

    airtable_key = dg.AssetKey([client.key, key, f"airtable_{key}"])
    merged_key = dg.AssetKey([client.key, key, f"postgres_{key}"])
    spec_common = dict(group_name=client.key, owners=OWNERS)

    @dg.multi_asset(
        # One step: the paced listing streams into the merge (issue 15, goal 5).
        name=f"{client.key}__{key}__pull_and_merge",
        specs=[
            dg.AssetSpec(
                airtable_key,
                description="Airtable records created or modified in the window (plus the "
                "overlap), snapshotted.",
                kinds={"airtable", "pandas"},
                **spec_common,
            ),
            dg.AssetSpec(
                merged_key,
                description="The portal's rows after stage 1 merged the window's Airtable "
                "records into them.",
                deps=[airtable_key, *upstream],
                kinds={"postgres"},
                **spec_common,
            ),
        ],
        partitions_def=reconcile_windows,
        pool=base_pool(base),
        backfill_policy=dg.BackfillPolicy.single_run(),
        required_resource_keys={resource_key, "postgres"},
    )
    def pulled(context: dg.AssetExecutionContext, config: PullConfig) -> Iterator:
        """Stage 1: the window's Airtable records (plus the overlap), listed, snapshotted and
        merged into the portal's rows page by page as they arrive."""
        airtable, postgres = resources(context)
        with counted(context, airtable, postgres):
            yield from pull_and_merge(context, config, airtable, postgres)

    def pull_and_merge(
        context: dg.AssetExecutionContext,
        config: PullConfig,
        airtable: AirtableResource,
        postgres: PostgresResource,
    ) -> Iterator[dg.MaterializeResult]:
        from reconcile_pipeline.config.install import UPGRADE_HINT, capture_problems

        started = time.monotonic()
        client = airtable.table_client(mapping)
        repo = postgres.repository(mapping)
        # A table without its capture trigger would have its portal edits silently never
        # pushed: the run refuses to start (DESIGN §3.2).
        if problems := capture_problems(repo.engine, mapping):
            raise dg.Failure(
                description=f"{key}: {'; '.join(problems)}: {UPGRADE_HINT} to install it from "
                "the project file; until then portal edits of this table are never pushed."
            )
        # Fails fast, naming every deleted or retyped field and what to change in the file;
        # against the schema cached today (no metadata call), fetched again when stale.
        schema, schema_fetched = current_schema(repo, client)
        coverage = checked(repo, client)
        repo = postgres.repository(resolve_mapping(mapping, schema))
        repo.register_tracked_columns()

        def check_schema(records: list[dict]) -> TableMapping | None:
            """Something new in Airtable (a field, an option): the merge must see today's
            schema; re-read once per run. (Called with each batch of the listing: pandas, for
            the preview, starts importing with the first.)"""
            nonlocal schema_fetched, coverage
            if records:
                warm_up()
            if schema_fetched:
                return None
            unknown = unknown_to(schema, repo, records)
            if not unknown:
                return None
            context.log.info(
                "The pull holds %s the cached schema does not know: re-reading it",
                ", ".join(unknown[:5]),
            )
            fresh = refresh_schema(postgres.repository(mapping), client)
            coverage = checked(postgres.repository(mapping), client)
            schema_fetched = True
            return resolve_mapping(mapping, fresh)

        try:
            fetched, result = pull_window(
                repo,
                client,
                run_context(context, config.dry_run),
                overlap=dt.timedelta(minutes=config.overlap_minutes),
                check_schema=check_schema,
            )
        except AirtableRequestError as error:
            if error.error_type != "UNKNOWN_FIELD_NAME" or schema_fetched:
                raise
            # A mapped field is gone since the schema was cached: say which, clearly.
            context.log.warning("Airtable refused a mapped field: re-reading the schema")
            refresh_schema(postgres.repository(mapping), client)
            checked(postgres.repository(mapping), client)
            raise
        keep_pulled(context.run_id, mapping, result.records)
        # pandas only when something was pulled (the preview): loading the code location and
        # an idle tick's run never pay its import.
        preview = "_none_"
        if result.records:  # the first five records, typed as the column schema says
            frame = pulled_frame(repo.mapping, result.records[:5])
            shown = [c for c in PREVIEW_COLUMNS if c in frame.columns]
            preview = frame[shown].to_markdown(index=False)
        context.log.info(
            "Pulled %d records in %d requests (%s); stage 1: %s",
            len(fetched.records),
            fetched.requests,
            coverage.summary(),
            result.counts(),
        )
        yield dg.MaterializeResult(
            asset_key=airtable_key,
            metadata=materialization_metadata(
                context,
                {
                    "pulled": len(fetched.records),
                    "pages": fetched.pages,
                    "airtable_requests": fetched.requests,
                    "repeated_in_pull": fetched.repeated_in_pull,
                    "pull_from": dg.MetadataValue.timestamp(fetched.pull_start)
                    if fetched.pull_start is not None
                    else "full pull (no high-water mark yet)",
                    "duration_seconds": round(fetched.seconds, 3),
                    "field_coverage": coverage.summary(),
                    "schema": "read from Airtable in this run"
                    if schema_fetched
                    else "cached (re-read daily, or when a run meets a new field or option)",
                    "dagster/row_count": len(result.records),
                    "dagster/column_schema": dg.TableSchema(
                        columns=[
                            dg.TableColumn(name, dtype)
                            for name, dtype in column_dtypes(repo.mapping).items()
                        ]
                    ),
                    "preview": dg.MetadataValue.md(preview),
                },
            ),
        )
        yield dg.MaterializeResult(
            asset_key=merged_key,
            metadata=materialization_metadata(
                context,
                {
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
                },
            ),
        )

    @dg.asset(name=f"postgres_dirty_{key}", deps=[merged_key], kinds={"postgres"}, **common)
    def dirty(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        """Portal-owned changes waiting to be pushed: every row dirty as of the window's end."""
        repo = resources(context)[1].repository(mapping)
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
                    c
                    for c in portal_columns
                    if d.base_values.get(c, object()) != d.portal_values[c]
                )
                + (
                    " (+ portal write to an Airtable-owned column)" if d.owned_write_pending else ""
                ),
            }
            for d in dirty[:20]
        ]
        return dg.MaterializeResult(
            metadata=materialization_metadata(
                context,
                {
                    "dirty": len(dirty),
                    "preview": markdown_table(preview),
                },
            )
        )

    @dg.asset(name="airtable_push_results", deps=[dirty], kinds={"airtable", "postgres"}, **common)
    def pushed(context: dg.AssetExecutionContext, config: ReconcileConfig) -> dg.MaterializeResult:
        """What stage 2 did for each dirty lead: updated, skipped, conflict or failed."""
        started = time.monotonic()
        airtable, postgres = resources(context)
        with counted(context, airtable, postgres):
            result = push_window(
                postgres.repository(resolved(airtable, postgres)),
                airtable.table_client(mapping),
                run_context(context, config.dry_run),
                lock_name=lock_name(base, mapping),
            )
        context.log.info("Stage 2: %s", result.counts())
        return dg.MaterializeResult(
            metadata=materialization_metadata(
                context,
                {
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
                },
            )
        )

    return TableAssets(client, mapping, pulled, dirty, pushed)


def build_client_assets(client: ClientSpec) -> list[TableAssets]:
    """One set per table of `client`, in dependency order: a table's merge depends on the merges
    of the tables it links to, so a run syncs those first (visible in the asset graph)."""
    built: dict[str, TableAssets] = {}
    for mapping in client.mappings:
        upstream = tuple(
            built[spec.links_to].merged_key
            for spec in mapping.link_fields
            if spec.links_to in built and spec.links_to != mapping.name
        )
        built[mapping.name] = build_table_assets(mapping, client, upstream)
    return list(built.values())


client_tables: dict[str, list[TableAssets]] = {
    spec.key: build_client_assets(spec) for spec in clients()
}
project_tables = [table for tables in client_tables.values() for table in tables]
reconcile_assets = [asset for table in project_tables for asset in table.all]
