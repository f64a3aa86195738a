"""Stage 2 — push portal-owned changes to Airtable (loop-free, compare-and-set, bisected 422s).

For every dirty lead the three-way decision is made per field against Airtable's current values
(this run's pull when it covered the lead, else re-read by id, 100 a request). Only fields the
portal changed are sent, by PATCH, 10 records a request. Airtable accepting a batch moves the
base to the values sent, so the echo that stage 1 pulls next is a no-op: no loop.
"""

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconcile_pipeline.engine.airtable_port import AirtablePort, describe, status_code_of
from reconcile_pipeline.engine.context import RunContext
from reconcile_pipeline.engine.convert import InvalidValue, from_airtable, to_airtable
from reconcile_pipeline.engine.merge import MISSING, Action, merge_field
from reconcile_pipeline.engine.pull import conflict_row, pulled_portal_values
from reconcile_pipeline.engine.repository import DirtyLead, Repository

logger = logging.getLogger(__name__)

POSTGRES_TO_AIRTABLE = "postgres_to_airtable"
UPDATE_BATCH = 10  # Airtable's limit per write request
READ_BATCH = 100  # ids per re-read request (one OR(RECORD_ID()=…) formula)
MAX_CONSECUTIVE_FAILED_BATCHES = 3


@dataclass
class LeadPlan:
    """What stage 2 decided for one dirty lead."""

    lead: DirtyLead
    send: dict[str, Any] = field(default_factory=dict)  # column → value for Airtable
    airtable: dict[str, Any] = field(default_factory=dict)  # Airtable's values (portal fields)
    base: dict[str, Any] = field(default_factory=dict)  # new agreed values if all goes well
    postgres_writes: dict[str, Any] = field(default_factory=dict)  # Airtable's value wins
    conflicts: list[dict] = field(default_factory=list)
    error: str | None = None

    @property
    def outcome(self) -> str:
        if self.error:
            return "failed"
        if self.conflicts:
            return "conflict"
        return "updated" if self.send else "skipped"


@dataclass
class PushResult:
    dirty: int = 0
    updated: int = 0
    skipped: int = 0
    conflicts: int = 0
    failed: int = 0
    quarantined: int = 0
    requests: int = 0
    reread_requests: int = 0
    write_requests: int = 0
    dry_run: bool = False
    results: list[dict] = field(default_factory=list, repr=False)

    def counts(self) -> dict[str, int]:
        return {
            "dirty": self.dirty,
            "pushed": self.updated,
            "skipped": self.skipped,
            "conflicts": self.conflicts,
            "failed": self.failed,
            "quarantined": self.quarantined,
            "airtable_requests": self.requests,
            "reread_requests": self.reread_requests,
            "write_requests": self.write_requests,
        }


def push_dirty(
    repo: Repository,
    airtable: AirtablePort,
    run: RunContext,
    *,
    lock_name: str,
    airtable_values: Mapping[str, dict[str, Any]] | None = None,
    pulled_run_id: str | None = None,
    as_of: dt.datetime | None = None,
    after_plan=None,
) -> PushResult:
    """Push every lead dirty as of `as_of` (all when None). Holds the per-base push lock.

    Airtable's current values come from `airtable_values`, then from the snapshot run
    `pulled_run_id` stored (read for the dirty leads only), and are re-read by id for the rest.

    `after_plan` is a hook called between reading the leads and marking them pushed (tests use
    it to land a portal edit while the push is in flight).
    """
    requests_before = airtable.requests_sent
    result = PushResult(dry_run=run.dry_run)
    with repo.push_lock(lock_name):
        with repo.engine.connect() as conn:
            dirty = repo.dirty_leads(conn, as_of=as_of)
        result.dirty = len(dirty)
        if not dirty:
            return result
        logger.info("Stage 2: %d dirty leads", len(dirty))
        known = dict(airtable_values or {})
        wanted = [lead.record_id for lead in dirty if lead.record_id not in known]
        if pulled_run_id is not None and wanted:
            known.update(pulled_portal_values(repo, pulled_run_id, wanted))
        current, missing, reread_requests = _current_airtable_values(repo, airtable, dirty, known)
        result.reread_requests = reread_requests
        plans = [_plan(repo, lead, current.get(lead.record_id)) for lead in dirty]
        for plan in plans:
            if plan.lead.record_id in missing:
                plan.error = "record not found in Airtable (deleted?); left dirty"
        if after_plan is not None:
            after_plan(plans)
        if run.dry_run:
            _tally(result, plans, quarantined=set())
            result.requests = airtable.requests_sent - requests_before
            return result
        _finish_without_sending(repo, [p for p in plans if not p.send and not p.error], run)
        quarantined = _send(
            repo, airtable, [p for p in plans if p.send and not p.error], run, result
        )
        _record_failures(repo, [p for p in plans if p.error], run)
        _tally(result, plans, quarantined)
    result.requests = airtable.requests_sent - requests_before
    return result


def _current_airtable_values(
    repo: Repository,
    airtable: AirtablePort,
    dirty: Sequence[DirtyLead],
    known: Mapping[str, dict[str, Any]],
) -> tuple[dict[str, dict[str, Any]], set[str], int]:
    """Airtable's portal-field values for the dirty leads; re-reads only what the pull lacks."""
    portal = repo.mapping.portal_fields
    current = {lead.record_id: known[lead.record_id] for lead in dirty if lead.record_id in known}
    to_read = [lead.record_id for lead in dirty if lead.record_id not in known]
    requests = 0
    names = [spec.airtable_name for spec in portal]
    for start in range(0, len(to_read), READ_BATCH):
        chunk = to_read[start : start + READ_BATCH]
        for record in airtable.get_records(chunk, fields=names):
            values = {}
            for spec in portal:
                try:
                    values[spec.column] = from_airtable(
                        spec, record["fields"].get(spec.airtable_name)
                    )
                except InvalidValue:
                    # Airtable holds something we cannot map; the portal's edit still goes out.
                    values[spec.column] = MISSING
            current[record["id"]] = values
        requests += 1
    missing = set(to_read) - set(current)
    return current, missing, requests


def _plan(repo: Repository, lead: DirtyLead, airtable_values: dict[str, Any] | None) -> LeadPlan:
    plan = LeadPlan(lead=lead)
    if airtable_values is None:
        return plan
    for spec in repo.mapping.portal_fields:
        column = spec.column
        portal = lead.portal_values[column]
        airtable = airtable_values.get(column)
        if airtable is MISSING:
            plan.send[column] = portal
            plan.base[column] = portal
            continue
        plan.airtable[column] = airtable
        base = lead.base_values.get(column, MISSING)
        merged = merge_field(base, airtable, portal, spec.policy)
        plan.base[column] = merged.base
        if merged.action is Action.TAKE_AIRTABLE or merged.postgres_value != portal:
            plan.postgres_writes[column] = merged.postgres_value
        if merged.needs_push:
            plan.send[column] = merged.push_value
            plan.base[column] = merged.push_value
        if merged.action is Action.CONFLICT:
            plan.conflicts.append(
                conflict_row(
                    lead.record_id,
                    spec,
                    None if base is MISSING else base,
                    airtable,
                    portal,
                    merged,
                )
            )
    return plan


def _apply_postgres_side(
    repo: Repository, conn, plans: Sequence[LeadPlan], run: RunContext
) -> set[str]:
    """Write Airtable-won values into PostgreSQL, only where the portal has not edited since the
    read (compare-and-set on the counter). Returns the record ids whose counter moved."""
    read_counters = {p.lead.record_id: p.lead.counter for p in plans}
    states = repo.lock_states(conn, list(read_counters))
    moved = {
        rid
        for rid, counter in read_counters.items()
        if states[rid].portal_change_counter != counter
    }
    rows, history, conflicts = [], [], []
    for plan in plans:
        rid = plan.lead.record_id
        if rid in moved:
            continue
        conflicts.extend(plan.conflicts)
        if plan.postgres_writes:
            rows.append({repo.mapping.key_column: rid, **plan.postgres_writes})
            history.extend(
                {
                    "record_id": rid,
                    "field": col,
                    "old": plan.lead.portal_values[col],
                    "new": value,
                    "direction": "airtable_to_postgres",
                    "reason": "push_time_merge",
                }
                for col, value in plan.postgres_writes.items()
            )
    repo.update_leads(conn, rows)
    repo.insert_history(conn, history, run)
    repo.insert_conflicts(conn, conflicts, run)
    return moved


def _finish_without_sending(repo: Repository, plans: Sequence[LeadPlan], run: RunContext) -> None:
    """Leads with nothing to send: agree the base, mark the counter, record the outcome."""
    if not plans:
        return
    with repo.reconciler_transaction() as conn:
        moved = _apply_postgres_side(repo, conn, plans, run)
        settled = [p for p in plans if p.lead.record_id not in moved]
        repo.mark_pushed(
            conn,
            [
                {
                    "record_id": p.lead.record_id,
                    "base": p.base,
                    "sent": {},
                    "counter": p.lead.counter,
                }
                for p in settled
            ],
        )
        repo.insert_push_results(conn, [_result_row(p) for p in plans], run)


def _send(
    repo: Repository,
    airtable: AirtablePort,
    plans: list[LeadPlan],
    run: RunContext,
    result: PushResult,
) -> set[str]:
    """PATCH the plans 10 a request; returns the record ids quarantined by Airtable's 422s."""
    quarantined: set[str] = set()
    consecutive_failures = 0
    for start in range(0, len(plans), UPDATE_BATCH):
        batch = plans[start : start + UPDATE_BATCH]
        if consecutive_failures >= MAX_CONSECUTIVE_FAILED_BATCHES:
            for plan in batch:
                plan.error = "not attempted: Airtable failed the previous batches; left dirty"
            _record_failures(repo, batch, run)
            continue
        ok = _send_batch(repo, airtable, batch, run, result, quarantined)
        consecutive_failures = 0 if ok else consecutive_failures + 1
        if (start // UPDATE_BATCH) % 20 == 19:
            logger.info("Stage 2: sent %d/%d leads", start + len(batch), len(plans))
    return quarantined


def _send_batch(repo, airtable, batch: list[LeadPlan], run, result, quarantined) -> bool:
    """One PATCH; a 422 is bisected down to the record(s) Airtable rejects."""
    mapping = repo.mapping.by_column()
    payload = [
        {
            "id": p.lead.record_id,
            "fields": {
                mapping[c].airtable_name: to_airtable(mapping[c], v) for c, v in p.send.items()
            },
        }
        for p in batch
    ]
    try:
        result.write_requests += 1
        airtable.update_records(payload)
    except Exception as error:  # noqa: BLE001 — every failure leaves the leads dirty
        if status_code_of(error) == 422:
            if len(batch) == 1:
                _quarantine(repo, batch[0], describe(error), payload[0], run)
                quarantined.add(batch[0].lead.record_id)
                return True
            middle = len(batch) // 2
            left = _send_batch(repo, airtable, batch[:middle], run, result, quarantined)
            right = _send_batch(repo, airtable, batch[middle:], run, result, quarantined)
            return left and right
        message = describe(error)
        logger.warning("Stage 2: batch of %d failed (%s); leads stay dirty", len(batch), message)
        for plan in batch:
            plan.error = message
        _record_failures(repo, batch, run)
        return False
    _mark_sent(repo, batch, run)
    return True


def _mark_sent(repo: Repository, batch: Sequence[LeadPlan], run: RunContext) -> None:
    with repo.reconciler_transaction() as conn:
        moved = _apply_postgres_side(repo, conn, batch, run)
        repo.mark_pushed(
            conn,
            [
                # Airtable now holds what was sent whatever happened meanwhile: the base moves for
                # every lead; the counter only as far as the edit that was actually sent.
                {
                    "record_id": p.lead.record_id,
                    "base": p.base
                    if p.lead.record_id not in moved
                    else {c: v for c, v in p.base.items() if c in p.send},
                    "sent": p.send,
                    "counter": p.lead.counter,
                }
                for p in batch
            ],
        )
        repo.insert_history(
            conn,
            [
                {
                    "record_id": p.lead.record_id,
                    "field": column,
                    "old": p.airtable.get(column),
                    "new": value,
                    "direction": POSTGRES_TO_AIRTABLE,
                    "reason": "portal_change",
                }
                for p in batch
                for column, value in p.send.items()
            ],
            run,
        )
        repo.release_quarantine(conn, [p.lead.record_id for p in batch], "push")
        repo.insert_push_results(conn, [_result_row(p) for p in batch], run)


def _quarantine(repo, plan: LeadPlan, reason: str, payload: dict, run: RunContext) -> None:
    plan.error = f"rejected by Airtable: {reason}"
    with repo.reconciler_transaction() as conn:
        repo.quarantine(
            conn,
            [{"record_id": plan.lead.record_id, "reason": reason, "payload": payload}],
            "push",
            run,
        )
        row = _result_row(plan)
        row["outcome"] = "quarantined"
        repo.insert_push_results(conn, [row], run)


def _record_failures(repo: Repository, plans: Sequence[LeadPlan], run: RunContext) -> None:
    if plans:
        with repo.reconciler_transaction() as conn:
            repo.insert_push_results(conn, [_result_row(p) for p in plans], run)


def _result_row(plan: LeadPlan) -> dict:
    return {
        "record_id": plan.lead.record_id,
        "outcome": plan.outcome,
        "fields_sent": plan.send or None,
        "counter_sent": plan.lead.counter,
        "error": plan.error,
    }


def _tally(result: PushResult, plans: Sequence[LeadPlan], quarantined: set[str]) -> None:
    for plan in plans:
        record_id = plan.lead.record_id
        if record_id in quarantined:
            result.quarantined += 1
            outcome = "quarantined"
        else:
            outcome = plan.outcome
            if outcome == "failed":
                result.failed += 1
            elif outcome == "skipped":
                result.skipped += 1
            else:
                result.updated += int(bool(plan.send))
                result.skipped += int(not plan.send and outcome != "conflict")
        result.conflicts += len(plan.conflicts)
        if len(result.results) < 1000:
            result.results.append(
                {
                    "record_id": record_id,
                    "outcome": outcome,
                    "fields": sorted(plan.send),
                    "error": plan.error,
                }
            )
