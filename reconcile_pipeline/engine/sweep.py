"""Deletes: records gone from Airtable are invisible to a modified-time filter, so a periodic
sweep lists every record id (100 a request) and soft-deletes the leads whose record is gone.
A lead row is never deleted; a record that reappears is restored."""

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from reconcile_pipeline.engine.airtable_port import AirtablePort
from reconcile_pipeline.engine.context import RunContext
from reconcile_pipeline.engine.repository import Repository

logger = logging.getLogger(__name__)


class SuspiciousSweep(RuntimeError):
    """Airtable listed no records while PostgreSQL has many: a wrong table, not a mass delete."""


@dataclass
class SweepResult:
    airtable_records: int = 0
    linked_leads: int = 0
    soft_deleted: int = 0
    restored: int = 0
    requests: int = 0
    dry_run: bool = False

    def counts(self) -> dict[str, int]:
        return {
            "airtable_records": self.airtable_records,
            "linked_leads": self.linked_leads,
            "soft_deleted": self.soft_deleted,
            "restored": self.restored,
            "airtable_requests": self.requests,
        }


def apply_deletions(repo: Repository, airtable_ids: Iterable[str], run: RunContext) -> SweepResult:
    """Soft-delete leads whose record is not among `airtable_ids`; restore those that are."""
    present = set(airtable_ids)
    result = SweepResult(airtable_records=len(present), dry_run=run.dry_run)
    with repo.reconciler_transaction(dry_run=run.dry_run) as conn:
        linked = set(repo.linked_record_ids(conn))
        result.linked_leads = len(linked)
        if not present and linked:
            raise SuspiciousSweep(
                f"Airtable listed no records but {len(linked)} leads are linked; refusing to "
                "mark them all deleted. Check AIRTABLE_BASE_ID / AIRTABLE_TABLE."
            )
        already = repo.deleted_record_ids(conn)
        gone = sorted(linked - present)
        back = sorted(already & present)
        result.soft_deleted = repo.soft_delete(conn, gone, deleted=True)
        result.restored = repo.soft_delete(conn, back, deleted=False)
        repo.insert_history(
            conn,
            [
                {
                    "record_id": rid,
                    "field": "*",
                    "old": None,
                    "new": {"deleted": True},
                    "direction": "airtable_to_postgres",
                    "reason": "deleted_in_airtable",
                }
                for rid in gone
                if rid not in already
            ]
            + [
                {
                    "record_id": rid,
                    "field": "*",
                    "old": {"deleted": True},
                    "new": None,
                    "direction": "airtable_to_postgres",
                    "reason": "restored_in_airtable",
                }
                for rid in back
            ],
            run,
        )
    logger.info("Delete sweep: %d soft-deleted, %d restored", result.soft_deleted, result.restored)
    return result


def delete_sweep(repo: Repository, airtable: AirtablePort, run: RunContext) -> SweepResult:
    before = airtable.requests_sent
    ids = airtable.list_record_ids()
    result = apply_deletions(repo, ids, run)
    result.requests = airtable.requests_sent - before
    return result
