"""Asset checks: the invariants users trust to wake them up, with metadata they can act on.

Severity and blocking are chosen per check:
- a loop or a duplicate lead means the next push would make things worse, so those checks are
  ERROR and *blocking* on `postgres_leads`: the dirty-lead and push steps do not run;
- problems that do not corrupt anything (bad input held in quarantine, shared e-mails, drift
  that the next run repairs, a slow schedule) are WARN: they alert without stopping the sync;
- checks on `airtable_push_results` cannot block anything (nothing is downstream); a loop found
  there is still ERROR.
"""

import datetime as dt

import dagster as dg

from reconcile_pipeline.defs.assets import TableAssets, project_tables, pulled_in_run
from reconcile_pipeline.defs.metadata import markdown_table
from reconcile_pipeline.defs.partitions import reconcile_windows
from reconcile_pipeline.defs.resources import PostgresResource
from reconcile_pipeline.engine import api_usage, invariants
from reconcile_pipeline.engine.invariants import Finding

PUSH_ERROR_RATE_THRESHOLD = 0.10
FRESHNESS_LIMIT = dt.timedelta(minutes=60)
# Two missed 15-minute ticks plus a window's worth of slack: beyond this the high-water mark
# lags because pulls fail or nothing runs.
CONTINUITY_MAX_LAG = dt.timedelta(minutes=45)
CONTINUITY_HORIZON = dt.timedelta(days=7)


def _result(
    context: dg.AssetCheckExecutionContext, finding: Finding, severity: dg.AssetCheckSeverity
) -> dg.AssetCheckResult:
    metadata = {
        "count": finding.count,
        "summary": finding.summary,
        "offenders": markdown_table(finding.examples),
    }
    for name, value in finding.figures.items():
        metadata[name] = dg.MetadataValue.json(value) if isinstance(value, dict) else value
    op_context = context.op_execution_context
    if op_context.has_partitions:
        window = op_context.partition_time_window
        metadata["window"] = f"{window.start:%Y-%m-%d %H:%M} → {window.end:%Y-%m-%d %H:%M} UTC"
    return dg.AssetCheckResult(
        passed=finding.passed, severity=severity, metadata=metadata, description=finding.summary
    )


def build_table_checks(table: TableAssets) -> list[dg.AssetChecksDefinition]:
    """The checks of one synced table (the same names on each table's assets)."""
    mapping = table.mapping

    @dg.asset_check(asset=table.airtable_key, partitions_def=reconcile_windows)
    def no_record_twice_in_pull(
        context: dg.AssetCheckExecutionContext, postgres: PostgresResource
    ) -> dg.AssetCheckResult:
        """No Airtable record came twice in this run's pull (repeats are deduplicated; a repeat
        means the listing shifted under pagination)."""
        finding = invariants.records_repeated_in_pull(
            postgres.repository(mapping), context.run.run_id
        )
        return _result(context, finding, dg.AssetCheckSeverity.WARN)

    @dg.asset_check(asset=table.merged_key, blocking=True, partitions_def=reconcile_windows)
    def no_echo_marked_dirty(
        context: dg.AssetCheckExecutionContext, postgres: PostgresResource
    ) -> dg.AssetCheckResult:
        """Loop detection: nothing pulled back as an echo of our own push marked a lead dirty."""
        finding = invariants.echoes_marked_dirty(postgres.repository(mapping), context.run.run_id)
        return _result(context, finding, dg.AssetCheckSeverity.ERROR)

    @dg.asset_check(asset=table.merged_key, blocking=True, partitions_def=reconcile_windows)
    def one_lead_per_airtable_record(
        context: dg.AssetCheckExecutionContext, postgres: PostgresResource
    ) -> dg.AssetCheckResult:
        """Duplicate detection: exactly one PostgreSQL lead per Airtable record."""
        finding = invariants.duplicate_leads(postgres.repository(mapping))
        return _result(context, finding, dg.AssetCheckSeverity.ERROR)

    @dg.asset_check(asset=table.merged_key, partitions_def=reconcile_windows)
    def no_duplicate_contacts(
        context: dg.AssetCheckExecutionContext, postgres: PostgresResource
    ) -> dg.AssetCheckResult:
        """Live leads sharing an e-mail or phone, reported with their record ids."""
        finding = invariants.duplicate_contacts(postgres.repository(mapping))
        return _result(context, finding, dg.AssetCheckSeverity.WARN)

    @dg.asset_check(asset=table.merged_key, partitions_def=reconcile_windows)
    def no_new_quarantine(
        context: dg.AssetCheckExecutionContext, postgres: PostgresResource
    ) -> dg.AssetCheckResult:
        """Quarantine growth: records this run could not map (held with the reason, retried)."""
        finding = invariants.quarantine_growth(postgres.repository(mapping), context.run.run_id)
        return _result(context, finding, dg.AssetCheckSeverity.WARN)

    @dg.asset_check(asset=table.merged_key, partitions_def=reconcile_windows)
    def pull_continuity(
        context: dg.AssetCheckExecutionContext, postgres: PostgresResource
    ) -> dg.AssetCheckResult:
        """Every stretch of time (last 7 days) is covered by a committed pull, and the high-water
        mark is less than 45 minutes old. Not blocking: the push is still right to run."""
        finding = invariants.pull_continuity(
            postgres.repository(mapping), max_lag=CONTINUITY_MAX_LAG, horizon=CONTINUITY_HORIZON
        )
        return _result(context, finding, dg.AssetCheckSeverity.ERROR)

    @dg.asset_check(asset=table.pushed, partitions_def=reconcile_windows)
    def no_portal_writes_to_airtable_fields(
        context: dg.AssetCheckExecutionContext, postgres: PostgresResource
    ) -> dg.AssetCheckResult:
        """The portal wrote no Airtable-owned column (each such write is put back to Airtable's
        value by the run, audited as `reverted_portal_write`)."""
        finding = invariants.portal_writes_to_airtable_fields(
            postgres.repository(mapping), context.run.run_id
        )
        return _result(context, finding, dg.AssetCheckSeverity.WARN)

    @dg.asset_check(asset=table.pushed, partitions_def=reconcile_windows)
    def no_repeated_push(
        context: dg.AssetCheckExecutionContext, postgres: PostgresResource
    ) -> dg.AssetCheckResult:
        """Loop detection: no lead pushed again unless the portal changed it again."""
        finding = invariants.repeated_pushes(postgres.repository(mapping), context.run.run_id)
        return _result(context, finding, dg.AssetCheckSeverity.ERROR)

    @dg.asset_check(asset=table.pushed, partitions_def=reconcile_windows)
    def push_error_rate(
        context: dg.AssetCheckExecutionContext, postgres: PostgresResource
    ) -> dg.AssetCheckResult:
        """At most 10% of this run's pushes failed or were rejected (they stay dirty and retry)."""
        finding = invariants.push_error_rate(
            postgres.repository(mapping), context.run.run_id, PUSH_ERROR_RATE_THRESHOLD
        )
        return _result(context, finding, dg.AssetCheckSeverity.ERROR)

    @dg.asset_check(asset=table.pushed, partitions_def=reconcile_windows)
    def no_drift_in_window(
        context: dg.AssetCheckExecutionContext, postgres: PostgresResource
    ) -> dg.AssetCheckResult:
        """After the run, the window's records agree on both sides (pending portal edits aside)."""
        run_id = context.run.run_id
        finding = invariants.window_drift(
            postgres.repository(mapping), run_id, pulled_in_run(run_id, mapping)
        )
        return _result(context, finding, dg.AssetCheckSeverity.WARN)

    @dg.asset_check(asset=table.pushed, partitions_def=reconcile_windows)
    def reconcile_is_fresh(
        context: dg.AssetCheckExecutionContext, postgres: PostgresResource
    ) -> dg.AssetCheckResult:
        """The last successful push is under an hour old and no portal edit waits longer."""
        finding = invariants.freshness(postgres.repository(mapping), FRESHNESS_LIMIT)
        return _result(context, finding, dg.AssetCheckSeverity.WARN)

    client = table.client

    @dg.asset_check(asset=table.pushed, blocking=False, partitions_def=reconcile_windows)
    def airtable_api_budget(
        context: dg.AssetCheckExecutionContext, postgres: PostgresResource
    ) -> dg.AssetCheckResult:
        """The Airtable workspace's API calls this month and the month's projection: WARN at
        80% of the plan or when projected past it (the schedule then slows down)."""
        budget = api_usage.month_budget(
            postgres.engine,
            client.workspace,
            client.workspace_members,
            client.config.api_calls_per_month,
        )
        budget_metadata = {
            "workspace": budget.workspace,
            "clients": ", ".join(budget.clients),
            "used_this_month": budget.used,
            "plan_calls_per_month": budget.cap,
            "projected_this_month": budget.projected,
            "used_share": round(budget.used_share, 4),
            "projected_share": round(budget.projected_share, 4),
            "schedule_cadence_minutes": budget.cadence_minutes(),
        }
        return dg.AssetCheckResult(
            passed=budget.passed,
            severity=dg.AssetCheckSeverity.WARN,
            description=budget.summary(),
            metadata=budget_metadata,
        )

    # One budget check per client (its first table's push results): the budget is the
    # workspace's, not a table's.
    budget_checks = [airtable_api_budget] if mapping == client.mappings[0] else []

    return [
        *budget_checks,
        no_record_twice_in_pull,
        no_echo_marked_dirty,
        one_lead_per_airtable_record,
        no_duplicate_contacts,
        no_new_quarantine,
        pull_continuity,
        no_portal_writes_to_airtable_fields,
        no_repeated_push,
        push_error_rate,
        no_drift_in_window,
        reconcile_is_fresh,
    ]


reconcile_checks = [check for table in project_tables for check in build_table_checks(table)]
