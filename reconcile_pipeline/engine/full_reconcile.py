"""The non-destructive full reconcile: the safe replacement for the old wipe-and-replace.

Every Airtable record is compared with its lead field by field (drift is reported per field),
then repaired through the ordinary stage 1 and stage 2 paths, and records gone from Airtable are
soft-deleted. Nothing is wiped; local columns are never touched.
"""

import logging
from collections import Counter
from dataclasses import dataclass, field

from reconcile_pipeline.engine.airtable_port import AirtablePort
from reconcile_pipeline.engine.context import RunContext
from reconcile_pipeline.engine.convert import record_values
from reconcile_pipeline.engine.pull import PullResult, apply_records
from reconcile_pipeline.engine.push import PushResult, push_dirty
from reconcile_pipeline.engine.repository import Repository
from reconcile_pipeline.engine.sweep import SweepResult, apply_deletions

logger = logging.getLogger(__name__)


@dataclass
class DriftReport:
    """Where the two sides disagreed before the repair."""

    records_compared: int = 0
    missing_in_postgres: int = 0
    missing_in_airtable: int = 0
    drifted_records: int = 0
    drift_by_field: Counter = field(default_factory=Counter)
    examples: list[dict] = field(default_factory=list)


def measure_drift(repo: Repository, records: list[dict]) -> DriftReport:
    report = DriftReport()
    with repo.engine.connect() as conn:
        leads = repo.all_leads(conn)
        deleted = repo.deleted_record_ids(conn)
    seen = set()
    for record in records:
        seen.add(record.get("id") if isinstance(record, dict) else None)
        if not isinstance(record, dict) or not isinstance(record.get("id"), str):
            continue
        # Fields held in quarantine are left out: they are reported there, not as drift.
        values, _problems = record_values(repo.mapping, record.get("fields"))
        report.records_compared += 1
        lead = leads.get(record["id"])
        if lead is None:
            report.missing_in_postgres += 1
            continue
        drifted = [column for column, value in values.items() if lead[column] != value]
        if drifted:
            report.drifted_records += 1
            report.drift_by_field.update(drifted)
            if len(report.examples) < 20:
                report.examples.append({"record_id": record["id"], "fields": drifted})
    report.missing_in_airtable = len(set(leads) - seen - deleted)
    return report


@dataclass
class FullReconcileResult:
    drift: DriftReport
    pull: PullResult
    push: PushResult
    sweep: SweepResult
    requests: int = 0


def full_reconcile(
    repo: Repository, airtable: AirtablePort, run: RunContext, *, lock_name: str
) -> FullReconcileResult:
    before = airtable.requests_sent
    records: list[dict] = []
    for page in airtable.iter_all(fields=repo.mapping.airtable_field_names):
        records.extend(page)
        if len(records) % 5000 < len(page):
            logger.info("Full reconcile: listed %d records", len(records))
    drift = measure_drift(repo, records)
    logger.info(
        "Full reconcile: %d records compared, %d drifted (%s)",
        drift.records_compared,
        drift.drifted_records,
        dict(drift.drift_by_field),
    )
    pull = apply_records(repo, records, run)
    push = push_dirty(repo, airtable, run, lock_name=lock_name)
    ids = [r["id"] for r in records if isinstance(r, dict) and isinstance(r.get("id"), str)]
    sweep = apply_deletions(repo, ids, run)
    return FullReconcileResult(
        drift=drift, pull=pull, push=push, sweep=sweep, requests=airtable.requests_sent - before
    )
