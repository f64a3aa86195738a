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
from collections.abc import Callable, Iterator
from dataclasses import dataclass

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


@dataclass(frozen=True)
class TableCheck:
    """One check of a synced table: what it targets, how bad a failure is, how it is found."""

    name: str
    asset: dg.AssetKey
    severity: dg.AssetCheckSeverity
    find: Callable[[dg.AssetCheckExecutionContext, PostgresResource], dg.AssetCheckResult]
    description: str
    blocking: bool = False

    @property
    def spec(self) -> dg.AssetCheckSpec:
        return dg.AssetCheckSpec(
            self.name,
            asset=self.asset,
            description=self.description,
            blocking=self.blocking,
            partitions_def=reconcile_windows,
        )


def _grouped(name: str, checks: list[TableCheck]) -> dg.AssetChecksDefinition:
    """`checks` (targeting assets one step materializes) evaluated in one step: a step costs
    Dagster tens of milliseconds whatever it does (issue 15, a run's fixed cost). Each check
    is still its own check in the UI, selectable alone; one that cannot run (its query raised)
    fails with the error's type and message while the others are evaluated."""

    @dg.multi_asset_check(
        name=name,
        specs=[check.spec for check in checks],
        can_subset=True,
        required_resource_keys={"postgres"},
    )
    def evaluate(context: dg.AssetCheckExecutionContext) -> Iterator[dg.AssetCheckResult]:
        postgres: PostgresResource = context.resources.postgres
        selected = context.selected_asset_check_keys
        for check in checks:
            key = dg.AssetCheckKey(check.asset, check.name)
            if key not in selected:
                continue
            try:
                result = check.find(context, postgres)
            except Exception as error:  # reported as the check's failure; the rest still run
                context.log.exception("Check %s could not run", check.name)
                result = dg.AssetCheckResult(
                    passed=False,
                    severity=dg.AssetCheckSeverity.ERROR,
                    description=f"could not run: {type(error).__name__}: {error}"[:500],
                )
            yield dg.AssetCheckResult(
                asset_key=check.asset,
                check_name=check.name,
                passed=result.passed,
                severity=result.severity,
                metadata=result.metadata,
                description=result.description,
            )

    return evaluate


def build_table_checks(table: TableAssets) -> list[dg.AssetChecksDefinition]:
    """The checks of one synced table (the same names on each table's assets), in two steps:
    those of the pull (on `airtable_<table>` and `postgres_<table>`, after the pull-and-merge
    step) and those of the push (on `airtable_push_results`)."""
    mapping = table.mapping
    client = table.client
    warn, error = dg.AssetCheckSeverity.WARN, dg.AssetCheckSeverity.ERROR

    def finding(compute, severity):
        """A check's `find` from the invariant it evaluates (`compute(repository, run id)`)."""

        def find(context, postgres: PostgresResource) -> dg.AssetCheckResult:
            found = compute(postgres.repository(mapping), context.run.run_id)
            return _result(context, found, severity)

        return find

    def budget(context, postgres: PostgresResource) -> dg.AssetCheckResult:
        month = api_usage.month_budget(
            postgres.engine,
            client.workspace,
            client.workspace_members,
            client.config.api_calls_per_month,
        )
        return dg.AssetCheckResult(
            passed=month.passed,
            severity=warn,
            description=month.summary(),
            metadata={
                "workspace": month.workspace,
                "clients": ", ".join(month.clients),
                "used_this_month": month.used,
                "plan_calls_per_month": month.cap,
                "projected_this_month": month.projected,
                "used_share": round(month.used_share, 4),
                "projected_share": round(month.projected_share, 4),
                "schedule_cadence_minutes": month.cadence_minutes(),
            },
        )

    def drift(repo, run_id: str) -> Finding:
        # The records this run's pull converted, when it ran in this process.
        return invariants.window_drift(repo, run_id, pulled_in_run(run_id, mapping))

    pull_checks = [
        TableCheck(
            "no_record_twice_in_pull",
            table.airtable_key,
            warn,
            finding(invariants.records_repeated_in_pull, warn),
            "No Airtable record came twice in this run's pull (repeats are deduplicated; a "
            "repeat means the listing shifted under pagination).",
        ),
        TableCheck(
            "no_echo_marked_dirty",
            table.merged_key,
            error,
            finding(invariants.echoes_marked_dirty, error),
            "Loop detection: nothing pulled back as an echo of our own push marked a lead dirty.",
            blocking=True,
        ),
        TableCheck(
            "one_lead_per_airtable_record",
            table.merged_key,
            error,
            finding(lambda repo, _run: invariants.duplicate_leads(repo), error),
            "Duplicate detection: exactly one PostgreSQL lead per Airtable record.",
            blocking=True,
        ),
        TableCheck(
            "no_duplicate_contacts",
            table.merged_key,
            warn,
            finding(lambda repo, _run: invariants.duplicate_contacts(repo), warn),
            "Live leads sharing an e-mail or phone, reported with their record ids.",
        ),
        TableCheck(
            "no_new_quarantine",
            table.merged_key,
            warn,
            finding(invariants.quarantine_growth, warn),
            "Quarantine growth: records this run could not map (held with the reason, retried).",
        ),
        TableCheck(
            "pull_continuity",
            table.merged_key,
            error,
            finding(
                lambda repo, _run: invariants.pull_continuity(
                    repo, max_lag=CONTINUITY_MAX_LAG, horizon=CONTINUITY_HORIZON
                ),
                error,
            ),
            "Every stretch of time (last 7 days) is covered by a committed pull, and the "
            "high-water mark is less than 45 minutes old. Not blocking: the push is still right "
            "to run.",
        ),
    ]
    push_checks = [
        TableCheck(
            "no_portal_writes_to_airtable_fields",
            table.pushed.key,
            warn,
            finding(invariants.portal_writes_to_airtable_fields, warn),
            "The portal wrote no Airtable-owned column (each such write is put back to "
            "Airtable's value by the run, audited as `reverted_portal_write`).",
        ),
        TableCheck(
            "no_repeated_push",
            table.pushed.key,
            error,
            finding(invariants.repeated_pushes, error),
            "Loop detection: no lead pushed again unless the portal changed it again.",
        ),
        TableCheck(
            "push_error_rate",
            table.pushed.key,
            error,
            finding(
                lambda repo, run: invariants.push_error_rate(repo, run, PUSH_ERROR_RATE_THRESHOLD),
                error,
            ),
            "At most 10% of this run's pushes failed or were rejected (they stay dirty and retry).",
        ),
        TableCheck(
            "no_drift_in_window",
            table.pushed.key,
            warn,
            finding(drift, warn),
            "After the run, the window's records agree on both sides (pending portal edits aside).",
        ),
        TableCheck(
            "reconcile_is_fresh",
            table.pushed.key,
            warn,
            finding(lambda repo, _run: invariants.freshness(repo, FRESHNESS_LIMIT), warn),
            "The last successful push is under an hour old and no portal edit waits longer.",
        ),
    ]
    # One budget check per client (its first table's push results): the budget is the
    # workspace's, not a table's.
    if mapping == client.mappings[0]:
        push_checks.insert(
            0,
            TableCheck(
                "airtable_api_budget",
                table.pushed.key,
                warn,
                budget,
                "The Airtable workspace's API calls this month and the month's projection: "
                "WARN at 80% of the plan or when projected past it (the schedule then slows "
                "down).",
            ),
        )
    prefix = f"{client.key}__{mapping.name}"
    return [
        _grouped(f"{prefix}__pull_checks", pull_checks),
        _grouped(f"{prefix}__push_checks", push_checks),
    ]


reconcile_checks = [check for table in project_tables for check in build_table_checks(table)]
