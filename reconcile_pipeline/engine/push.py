"""Stage 2 — push portal-owned changes to Airtable (loop-free, fresh, compare-and-set).

Dirty leads go out batch by batch: each batch of up to 100 is re-read from Airtable by id (one
request) right before its PATCHes (10 records a request), so the Airtable value a push decides
against is at most a couple of seconds old (DESIGN §3.4). Per field, against that fresh value:

- only fields the portal changed since the base are sent, by PATCH;
- a field Airtable holds a value we cannot read is never overwritten: if the portal changed it,
  that is a conflict (Airtable wins, recorded); otherwise it is left alone;
- a portal value the mapping would reject (too long, unknown option, wrong type) is held in
  quarantine with its reason and never sent;
- a portal write to an Airtable-owned column is put back to Airtable's value (audited);
- a record the by-id read proves gone is soft-deleted at once.

Airtable accepting a batch moves the base to the values sent, so the echo that stage 1 pulls
next is a no-op: no loop. A lead is marked pushed only up to the change counter that was read
(compare-and-set): a portal edit made meanwhile stays dirty.
"""

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconcile_pipeline.engine.airtable_port import AirtablePort, describe, status_code_of
from reconcile_pipeline.engine.context import RunContext
from reconcile_pipeline.engine.convert import (
    RECORD,
    portal_value_problem,
    record_values,
    storable_raw,
    to_airtable,
)
from reconcile_pipeline.engine.merge import MISSING, Action, merge_field
from reconcile_pipeline.engine.pull import conflict_row
from reconcile_pipeline.engine.repository import DirtyLead, Repository
from reconcile_pipeline.engine.retry import retry_on_contention

logger = logging.getLogger(__name__)

POSTGRES_TO_AIRTABLE = "postgres_to_airtable"
AIRTABLE_TO_POSTGRES = "airtable_to_postgres"
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
    reverts: set[str] = field(default_factory=set)  # portal writes to Airtable-owned columns
    held: dict[str, tuple[str, Any]] = field(default_factory=dict)  # column → (reason, value)
    conflicts: list[dict] = field(default_factory=list)
    error: str | None = None

    @property
    def outcome(self) -> str:
        if self.error:
            return "failed"
        if self.conflicts:
            return "conflict"
        if self.send:
            return "updated"
        return "held" if self.held else "skipped"


@dataclass
class PushResult:
    dirty: int = 0
    updated: int = 0
    skipped: int = 0
    conflicts: int = 0
    failed: int = 0
    quarantined: int = 0
    held: int = 0  # leads with a portal value the mapping rejects (never sent)
    deleted: int = 0  # records the by-id read proved gone: soft-deleted
    reverted: int = 0  # portal writes to Airtable-owned columns put back
    orphans_settled: int = 0  # dirty states whose lead row the portal deleted
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
            "held": self.held,
            "deleted_in_airtable": self.deleted,
            "reverted": self.reverted,
            "orphans_settled": self.orphans_settled,
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
    as_of: dt.datetime | None = None,
    after_read: Callable[[list["LeadPlan"]], None] | None = None,
) -> PushResult:
    """Push every lead dirty as of `as_of` (all when None). Holds the per-base push lock.

    `after_read` is a hook called between re-reading a batch and writing it (tests use it to
    land an edit on either side while the push is in flight).
    """
    requests_before = airtable.requests_sent
    result = PushResult(dry_run=run.dry_run)
    with repo.push_lock(lock_name):
        if not run.dry_run:
            result.orphans_settled = len(_settle_orphans(repo))
        with repo.engine.connect() as conn:
            dirty = repo.dirty_leads(conn, as_of=as_of)
        result.dirty = len(dirty)
        if not dirty:
            return result
        logger.info("Stage 2: %d dirty leads", len(dirty))
        failures = 0
        for start in range(0, len(dirty), READ_BATCH):
            chunk = dirty[start : start + READ_BATCH]
            if failures >= MAX_CONSECUTIVE_FAILED_BATCHES:
                plans = [LeadPlan(lead=lead) for lead in chunk]
                for plan in plans:
                    plan.error = "not attempted: Airtable failed the previous batches; left dirty"
                _record_failures(repo, plans, run)
                _tally(result, plans, set())
                continue
            ok = _push_chunk(repo, airtable, chunk, run, result, after_read)
            failures = 0 if ok else failures + 1
            if len(dirty) > READ_BATCH:
                logger.info("Stage 2: %d/%d dirty leads done", start + len(chunk), len(dirty))
    result.requests = airtable.requests_sent - requests_before
    return result


def _settle_orphans(repo: Repository) -> list[str]:
    def settle() -> list[str]:
        with repo.reconciler_transaction() as conn:
            return repo.settle_orphaned_states(conn)

    orphans = retry_on_contention(settle, what="Settling deleted leads")
    if orphans:
        logger.info("Stage 2: %d dirty leads were deleted from the portal; settled", len(orphans))
    return orphans


def _push_chunk(
    repo: Repository,
    airtable: AirtablePort,
    chunk: Sequence[DirtyLead],
    run: RunContext,
    result: PushResult,
    after_read: Callable[[list["LeadPlan"]], None] | None,
) -> bool:
    """Re-read up to 100 dirty leads, decide each, write them; False if Airtable failed."""
    names = [spec.airtable_name for spec in repo.mapping.fields]
    try:
        result.reread_requests += 1
        fresh = airtable.get_records([lead.record_id for lead in chunk], fields=names)
    except Exception as error:  # noqa: BLE001 — a failed read leaves the leads dirty
        message = f"re-read failed: {describe(error)}; left dirty"
        logger.warning("Stage 2: %s (%d leads)", message, len(chunk))
        plans = [LeadPlan(lead=lead, error=message) for lead in chunk]
        _record_failures(repo, plans, run)
        _tally(result, plans, set())
        return False
    by_id = {r["id"]: r for r in fresh if isinstance(r, dict) and isinstance(r.get("id"), str)}
    plans = [_plan(repo, lead, by_id[lead.record_id]) for lead in chunk if lead.record_id in by_id]
    gone = [lead for lead in chunk if lead.record_id not in by_id]
    if after_read is not None:
        after_read(plans)
    if run.dry_run:
        result.deleted += len(gone)
        _tally(result, plans, set())
        return True
    _soft_delete_gone(repo, gone, run, result)
    _finish_without_sending(repo, [p for p in plans if not p.send], run)
    quarantined, ok = _send(repo, airtable, [p for p in plans if p.send], run, result)
    _tally(result, plans, quarantined)
    return ok


def _soft_delete_gone(
    repo: Repository, gone: Sequence[DirtyLead], run: RunContext, result: PushResult
) -> None:
    """Records the by-id read proved gone from Airtable: soft-deleted now (DESIGN §3.7), not
    failed on every tick until the sweep."""
    if not gone:
        return
    ids = [lead.record_id for lead in gone]

    def apply() -> None:
        with repo.reconciler_transaction() as conn:
            newly = repo.soft_delete(conn, ids, deleted=True)
            repo.insert_history(
                conn,
                [
                    {
                        "record_id": rid,
                        "field": "*",
                        "old": None,
                        "new": {"deleted": True},
                        "direction": AIRTABLE_TO_POSTGRES,
                        "reason": "deleted_in_airtable",
                    }
                    for rid in ids
                ],
                run,
            )
            repo.insert_push_results(
                conn,
                [
                    {
                        "record_id": lead.record_id,
                        "outcome": "deleted",
                        "fields_sent": None,
                        "counter_sent": lead.counter,
                        "error": None,
                    }
                    for lead in gone
                ],
                run,
            )
            logger.info("Stage 2: %d records are gone from Airtable; soft-deleted", newly)

    retry_on_contention(apply, what="Soft-deleting records gone from Airtable")
    result.deleted += len(gone)


def _plan(repo: Repository, lead: DirtyLead, record: dict) -> "LeadPlan":
    """Decide every mapped field of one dirty lead against Airtable's fresh record."""
    plan = LeadPlan(lead=lead)
    fields = record.get("fields")
    values, problems = record_values(repo.mapping, fields)
    reasons = {p.column: p.reason for p in problems}
    raw_fields = fields if isinstance(fields, dict) else {}
    for spec in repo.mapping.fields:
        column = spec.column
        portal = lead.portal_values[column]
        if not spec.portal_owned:
            if column in values and values[column] != portal:
                plan.postgres_writes[column] = values[column]
                plan.reverts.add(column)
            continue
        base = lead.base_values.get(column, MISSING)
        if column not in values:
            # Airtable holds a value we cannot read: never overwrite it. If the portal changed
            # the field, that is a conflict Airtable wins; the base stays where it was.
            if base is MISSING or portal != base:
                reason = reasons.get(column) or reasons.get(RECORD, "unreadable")
                plan.conflicts.append(
                    {
                        "record_id": lead.record_id,
                        "field": column,
                        "base": None if base is MISSING else base,
                        "airtable": storable_raw(raw_fields.get(spec.airtable_name)),
                        "portal": portal,
                        "decided": None,
                        "policy": spec.policy.value,
                        "decision": "airtable_wins",
                        "recommendation": f"Airtable holds a value this mapping cannot read "
                        f"({reason}); it was not overwritten. Fix it in Airtable, or resolve "
                        "with the portal's value",
                    }
                )
            continue
        airtable = values[column]
        plan.airtable[column] = airtable
        merged = merge_field(base, airtable, portal, spec.policy)
        plan.base[column] = merged.base
        if merged.action is Action.TAKE_AIRTABLE or merged.postgres_value != portal:
            plan.postgres_writes[column] = merged.postgres_value
        if merged.needs_push:
            problem = portal_value_problem(spec, merged.push_value)
            if problem is not None:
                plan.held[column] = (problem, merged.push_value)
                if base is MISSING:
                    plan.base.pop(column, None)
                else:
                    plan.base[column] = base
            else:
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
    """Write Airtable-won values (and reverts of portal writes to Airtable-owned columns) into
    PostgreSQL, only where the portal has not written since the read (compare-and-set on both
    counters). Records conflicts and holds. Returns the record ids whose counters moved."""
    ids = sorted(p.lead.record_id for p in plans)
    # Lead rows first, then sync state: the order a portal UPDATE (and its capture trigger)
    # takes them, so the two never wait on each other in a cycle (DESIGN §3.4).
    repo.lock_leads(conn, ids)
    states = repo.lock_states(conn, ids)
    moved = {
        p.lead.record_id
        for p in plans
        if states[p.lead.record_id].portal_change_counter != p.lead.counter
        or states[p.lead.record_id].owned_write_counter != p.lead.owned_counter
    }
    rows, history, conflicts, holds, releases = [], [], [], [], []
    for plan in plans:
        rid = plan.lead.record_id
        holds.extend(
            {
                "record_id": rid,
                "field": column,
                "reason": f"not sent: {reason}",
                "raw": storable_raw(value),
            }
            for column, (reason, value) in plan.held.items()
        )
        releases.extend(
            (rid, spec.column)
            for spec in repo.mapping.portal_fields
            if spec.column not in plan.held
        )
        if rid in moved:
            continue
        if not plan.error:
            releases.append((rid, RECORD))  # a record Airtable rejected, settled since
        conflicts.extend(plan.conflicts)
        if plan.postgres_writes:
            rows.append({repo.mapping.key_column: rid, **plan.postgres_writes})
            history.extend(
                {
                    "record_id": rid,
                    "field": col,
                    "old": plan.lead.portal_values[col],
                    "new": value,
                    "direction": AIRTABLE_TO_POSTGRES,
                    "reason": (
                        "reverted_portal_write"
                        if col in plan.reverts and plan.lead.portal_wrote(col)
                        else "airtable_owned"
                        if col in plan.reverts
                        else "push_time_merge"
                    ),
                }
                for col, value in plan.postgres_writes.items()
            )
    repo.update_leads(conn, rows)
    repo.insert_history(conn, history, run)
    repo.insert_conflicts(conn, conflicts, run)
    repo.quarantine(conn, holds, "push", run)
    repo.release_quarantine(conn, releases, "push")
    return moved


def _mark_row(plan: LeadPlan, moved: set[str], sent: bool) -> dict:
    rid = plan.lead.record_id
    settled = rid not in moved
    return {
        "record_id": rid,
        # Airtable now holds what was sent whatever happened meanwhile: the base moves for the
        # fields sent; for the others only if the portal did not write meanwhile.
        "base": plan.base if settled else {c: v for c, v in plan.base.items() if c in plan.send},
        "sent": plan.send if sent else {},
        "counter": plan.lead.counter,
        # Reverts were applied only when nothing moved; otherwise they stay pending.
        "owned_counter": plan.lead.owned_counter if settled else None,
    }


def _finish_without_sending(repo: Repository, plans: Sequence[LeadPlan], run: RunContext) -> None:
    """Leads with nothing to send: agree the base, mark the counter, record the outcome."""
    if not plans:
        return

    def apply() -> None:
        with repo.reconciler_transaction() as conn:
            moved = _apply_postgres_side(repo, conn, plans, run)
            repo.mark_pushed(
                conn,
                [_mark_row(p, moved, sent=False) for p in plans if p.lead.record_id not in moved],
            )
            repo.insert_push_results(conn, [_result_row(p) for p in plans], run)

    retry_on_contention(apply, what="Stage 2 settling leads with nothing to send")


def _send(
    repo: Repository,
    airtable: AirtablePort,
    plans: list[LeadPlan],
    run: RunContext,
    result: PushResult,
) -> tuple[set[str], bool]:
    """PATCH the plans 10 a request; returns the record ids quarantined by Airtable's 422s and
    whether every batch went through."""
    quarantined: set[str] = set()
    all_ok = True
    for start in range(0, len(plans), UPDATE_BATCH):
        batch = plans[start : start + UPDATE_BATCH]
        ok = _send_batch(repo, airtable, batch, run, result, quarantined)
        all_ok = all_ok and ok
    return quarantined, all_ok


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
    def apply() -> None:
        with repo.reconciler_transaction() as conn:
            moved = _apply_postgres_side(repo, conn, batch, run)
            repo.mark_pushed(conn, [_mark_row(p, moved, sent=True) for p in batch])
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
            repo.release_quarantine(conn, [(p.lead.record_id, RECORD) for p in batch], "push")
            repo.insert_push_results(conn, [_result_row(p) for p in batch], run)

    # Airtable accepted the batch: recording it must not fail on a busy row.
    retry_on_contention(apply, what="Stage 2 recording a sent batch")


def _quarantine(repo, plan: LeadPlan, reason: str, payload: dict, run: RunContext) -> None:
    plan.error = f"rejected by Airtable: {reason}"
    with repo.reconciler_transaction() as conn:
        repo.quarantine(
            conn,
            [
                {
                    "record_id": plan.lead.record_id,
                    "field": RECORD,
                    "reason": reason,
                    "raw": storable_raw(payload),
                }
            ],
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
            elif outcome in ("skipped", "held"):
                result.skipped += 1
            else:
                result.updated += int(bool(plan.send))
                result.skipped += int(not plan.send and outcome != "conflict")
        result.held += int(bool(plan.held))
        result.reverted += sum(plan.lead.portal_wrote(column) for column in plan.reverts)
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
