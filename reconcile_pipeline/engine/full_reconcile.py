"""The non-destructive full reconcile: the safe replacement for the old wipe-and-replace.

Every Airtable record is compared with its lead field by field (drift is reported per field),
then repaired through the ordinary stage 1 and stage 2 paths, and records gone from Airtable are
soft-deleted. Nothing is wiped; local columns are never touched.

The listing is streamed: each batch of `BATCH_RECORDS` records is compared with its own leads
only and merged before the next is listed, so memory grows with the base by the listed record
ids alone (kept for the sweep), not by its records or leads. The sweep runs only once the whole
listing has been merged: a listing that fails halfway soft-deletes nothing (the batches already
merged are ordinary idempotent stage 1 work, which a re-run repeats safely).
"""

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from reconcile_pipeline.engine.airtable_port import AirtablePort
from reconcile_pipeline.engine.context import RunContext
from reconcile_pipeline.engine.convert import record_values
from reconcile_pipeline.engine.pull import BATCH_SIZE, PullResult, apply_records
from reconcile_pipeline.engine.push import PushResult, push_dirty
from reconcile_pipeline.engine.repository import Repository
from reconcile_pipeline.engine.sweep import SweepResult, apply_deletions

logger = logging.getLogger(__name__)

# Records listed before they are compared and merged (two stage 1 transactions' worth).
BATCH_RECORDS = 2 * BATCH_SIZE
PROGRESS_EVERY = 5000  # records listed between progress lines
EXAMPLES_LIMIT = 20


@dataclass
class DriftReport:
    """Where the two sides disagreed before the repair."""

    records_compared: int = 0
    missing_in_postgres: int = 0
    missing_in_airtable: int = 0
    drifted_records: int = 0
    drift_by_field: Counter = field(default_factory=Counter)
    examples: list[dict] = field(default_factory=list)


def record_ids(records: list) -> list[str]:
    """The ids of the records that carry a string id, in listing order."""
    return [r["id"] for r in records if isinstance(r, dict) and isinstance(r.get("id"), str)]


def measure_drift(repo: Repository, records: list, report: DriftReport) -> None:
    """Add one batch of listed records' comparison with their leads (only theirs are read) to
    `report`. Fields held in quarantine are left out: they are reported there, not as drift."""
    with repo.engine.connect() as conn:
        leads = repo.leads_of(conn, record_ids(records))
    for record in records:
        if not isinstance(record, dict) or not isinstance(record.get("id"), str):
            continue
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
            if len(report.examples) < EXAMPLES_LIMIT:
                report.examples.append({"record_id": record["id"], "fields": drifted})


def listed_batches(repo: Repository, airtable: AirtablePort) -> Iterator[list]:
    """Every record of the table, in batches of at least `BATCH_RECORDS` (the last: the rest),
    whole pages each."""
    batch: list = []
    listed = 0
    for page in airtable.iter_all(fields=repo.mapping.airtable_field_names):
        batch.extend(page)
        listed += len(page)
        if listed % PROGRESS_EVERY < len(page):
            logger.info("Full reconcile: listed %d records", listed)
        if len(batch) >= BATCH_RECORDS:
            yield batch
            batch = []
    if batch:
        yield batch


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
    drift = DriftReport()
    pull = PullResult(dry_run=run.dry_run)
    listed: set[str] = set()
    for batch in listed_batches(repo, airtable):
        measure_drift(repo, batch, drift)
        pull.absorb(apply_records(repo, batch, run))
        listed.update(record_ids(batch))
    # Counted after the merge, which inserted or restored listed leads only: the same leads as
    # before it are neither listed nor soft-deleted.
    with repo.engine.connect() as conn:
        drift.missing_in_airtable = repo.count_unlisted_leads(conn, listed)
    logger.info(
        "Full reconcile: %d records compared, %d drifted (%s)",
        drift.records_compared,
        drift.drifted_records,
        dict(drift.drift_by_field),
    )
    push = push_dirty(repo, airtable, run, lock_name=lock_name)
    sweep = apply_deletions(repo, listed, run)
    return FullReconcileResult(
        drift=drift, pull=pull, push=push, sweep=sweep, requests=airtable.requests_sent - before
    )
