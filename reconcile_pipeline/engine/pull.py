"""Stage 1 — apply pulled Airtable records to PostgreSQL (set-based, three-way, audited).

Re-running a window is safe: applying the same records again finds every value equal, writes
nothing to the portal table and records no change (the merge base already equals Airtable).
"""

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconcile_pipeline.engine.context import RunContext
from reconcile_pipeline.engine.convert import (
    RECORD,
    FieldProblem,
    InvalidValue,
    PulledRecord,
    from_airtable,
    modified_time,
    parse_airtable_time,
    portal_value_problem,
    pulled_record,
    storable_raw,
)
from reconcile_pipeline.engine.merge import MISSING, Action, merge_field
from reconcile_pipeline.engine.repository import Repository, SyncState
from reconcile_pipeline.engine.retry import retry_on_contention

logger = logging.getLogger(__name__)

AIRTABLE_TO_POSTGRES = "airtable_to_postgres"
BATCH_SIZE = 2000
PREVIEW_LIMIT = 1000


@dataclass
class PullResult:
    """Counts and a bounded preview of what stage 1 did (or would do, in a dry run)."""

    pulled: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    conflicts: int = 0
    quarantined: int = 0  # records with at least one field held
    quarantined_fields: int = 0
    released: int = 0
    reverted: int = 0  # portal writes to Airtable-owned columns put back
    links_resolved: int = 0  # held links whose linked record arrived
    echoes: int = 0
    duplicates_in_pull: int = 0
    stale_skipped: int = 0
    restored: int = 0
    dry_run: bool = False
    transaction_ids: list[str] = field(default_factory=list, repr=False)
    high_water_mark: dt.datetime | None = None
    # The records merged, converted once (one per id: the copy that won `dedupe`), for the
    # preview frame and the drift check; set by whoever merged them (`absorb` leaves it).
    records: list[PulledRecord] = field(default_factory=list, repr=False)
    changes: list[dict] = field(default_factory=list, repr=False)
    conflict_rows: list[dict] = field(default_factory=list, repr=False)
    quarantine_rows: list[dict] = field(default_factory=list, repr=False)

    def counts(self) -> dict[str, int]:
        return {
            "pulled": self.pulled,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "conflicts": self.conflicts,
            "quarantined": self.quarantined,
            "quarantined_fields": self.quarantined_fields,
            "released": self.released,
            "reverted": self.reverted,
            "links_resolved": self.links_resolved,
            "echoes": self.echoes,
            "duplicates_in_pull": self.duplicates_in_pull,
            "stale_skipped": self.stale_skipped,
            "restored": self.restored,
        }

    def absorb(self, other: "PullResult") -> None:
        """Add `other`'s counts, transactions and previews."""
        for name, value in other.counts().items():
            setattr(self, name, getattr(self, name) + value)
        self.transaction_ids.extend(other.transaction_ids)
        for attr in ("changes", "conflict_rows", "quarantine_rows"):
            room = PREVIEW_LIMIT - len(getattr(self, attr))
            getattr(self, attr).extend(getattr(other, attr)[: max(room, 0)])


def readable(records: Iterable[Any]) -> tuple[list[dict], int]:
    """The records that carry an id (what every row is keyed by); returns them and how many
    did not (kept in the raw snapshot, reported, never merged)."""
    kept, unreadable = [], 0
    for record in records:
        if isinstance(record, dict) and isinstance(record.get("id"), str) and record["id"]:
            kept.append(record)
        else:
            unreadable += 1
    if unreadable:
        logger.warning(
            "Stage 1: %d records without an id were kept in the snapshot only", unreadable
        )
    return kept, unreadable


def replaces(later: dt.datetime | None, earlier: dt.datetime | None) -> bool:
    """Whether a record's copy listed later in one pull replaces the copy listed earlier: yes,
    unless both carry a modified time and the later one's is older."""
    return later is None or earlier is None or later >= earlier


def dedupe(repo: Repository, records: Iterable[dict]) -> tuple[list[dict], int]:
    """One record per id (the most recently modified); returns the records and the repeats."""
    by_id: dict[str, dict] = {}
    repeats = 0
    for record in records:
        previous = by_id.get(record["id"])
        if previous is not None:
            repeats += 1
            later = modified_time(repo.mapping, record)
            if not replaces(later, modified_time(repo.mapping, previous)):
                continue
        by_id[record["id"]] = record
    return list(by_id.values()), repeats


def snapshot_pulled(
    repo: Repository, run_id: str, record_ids: Sequence[str] | None = None
) -> list[PulledRecord]:
    """The records run `run_id` pulled (only `record_ids`' when given), read back from its
    snapshot, one per id as the merge took them, converted: for a check run apart from the
    pull. A run that still holds its `PullResult.records` needs neither the read nor the
    conversion."""
    with repo.engine.connect() as conn:
        records = repo.snapshot_records(conn, run_id, record_ids)
    unique, _ = dedupe(repo, readable(records)[0])
    return [pulled_record(repo.mapping, record) for record in unique]


def _stamp_times(repo: Repository, records: Sequence[dict]) -> None:
    """Parsed modified/created times on each record, for the snapshot's typed columns."""
    for record in records:
        if not isinstance(record, dict):
            continue
        modified = modified_time(repo.mapping, record)
        created = parse_airtable_time(record.get("createdTime"))
        record["_modified_time"] = modified.isoformat() if modified else None
        record["_created_time"] = created.isoformat() if created else None


def store_snapshot(repo: Repository, records: Sequence[dict], run: RunContext) -> None:
    """Persist the raw records as pulled (the audit trail, and what a check run apart from the
    pull reads back), losslessly: whatever jsonb refuses is kept as text (DESIGN §3.5)."""
    # Copies: the typed times are added for the snapshot's columns, not to the caller's records.
    records = [dict(r) if isinstance(r, dict) else {"id": None, "fields": r} for r in records]
    _stamp_times(repo, records)
    with repo.reconciler_transaction() as conn:
        repo.insert_snapshots(conn, records, run)


def apply_records(
    repo: Repository,
    records: Iterable[dict],
    run: RunContext,
    *,
    batch_size: int = BATCH_SIZE,
) -> PullResult:
    """Store the snapshot of Airtable records and merge them into PostgreSQL, one transaction
    per batch of `batch_size`; a batch that meets concurrent portal writes (deadlock, lock
    timeout) is retried whole."""
    records = list(records)
    store_snapshot(repo, records, run)
    merge = StreamedMerge(repo, run, batch_size=batch_size)
    merge.add(records)
    return merge.finish()


class StreamedMerge:
    """Stage 1 over a pull that arrives in parts (pages as the listing returns them): each part
    is converted once and merged as it comes, one transaction per `batch_size` records.

    Within a part, `dedupe` keeps one copy per id. A record listed again in a later part (the
    listing shifted) follows the same rule across parts: an older copy is skipped, any other is
    merged again over the copy already merged (so the later copy wins, as with `dedupe`); both
    count as repeats. The merge is idempotent, so a part merged by a pull that then failed is
    merged again harmlessly by the next run.
    """

    def __init__(self, repo: Repository, run: RunContext, *, batch_size: int = BATCH_SIZE):
        self.repo, self.run, self.batch_size = repo, run, batch_size
        self.result = PullResult(dry_run=run.dry_run)
        self._merged: dict[str, PulledRecord] = {}

    def add(self, records: Sequence[Any]) -> None:
        """Convert and merge one part of the pull (records without an id are left out)."""
        unique, repeats = dedupe(self.repo, readable(records)[0])
        fresh: list[PulledRecord] = []
        for record in unique:
            earlier = self._merged.get(record["id"])
            if earlier is not None:
                repeats += 1
                if not replaces(modified_time(self.repo.mapping, record), earlier.modified):
                    continue
            fresh.append(pulled_record(self.repo.mapping, record))
            self._merged[record["id"]] = fresh[-1]
        self.result.duplicates_in_pull += repeats
        for start in range(0, len(fresh), self.batch_size):
            batch = fresh[start : start + self.batch_size]
            self.result.absorb(
                retry_on_contention(
                    lambda batch=batch: _apply_batch(self.repo, batch, self.run),
                    what=f"Stage 1 batch of {len(batch)} records",
                )
            )
            if len(fresh) > self.batch_size:
                logger.info("Stage 1: merged %d/%d records", start + len(batch), len(fresh))

    def finish(self) -> PullResult:
        """The whole pull's result: `pulled` counts each record once, `records` holds the
        copies merged last."""
        self.result.records = list(self._merged.values())
        self.result.pulled = len(self.result.records)
        return self.result


def _quarantine_row(record_id: str, problem: FieldProblem) -> dict:
    return {
        "record_id": record_id,
        "field": problem.column,
        "reason": problem.reason,
        "raw": storable_raw(problem.raw),
    }


def _apply_batch(repo: Repository, records: list[PulledRecord], run: RunContext) -> PullResult:
    mapping = repo.mapping
    result = PullResult(pulled=len(records), dry_run=run.dry_run)
    # Copies of the values: a held link is dropped from them for this merge only.
    converted: dict[str, tuple[dict, PulledRecord]] = {}
    quarantine_rows: list[dict] = []
    valid_fields: list[tuple[str, str]] = []
    for record in records:
        rid = record.record_id
        converted[rid] = (dict(record.values), record)
        quarantine_rows.extend(_quarantine_row(rid, p) for p in record.problems)
        valid_fields.extend((rid, column) for column in record.values)
        if not any(p.column == RECORD for p in record.problems):
            valid_fields.append((rid, RECORD))
    applied: set[str] = set()  # records not skipped as stale: only they hold or release
    push_released: list[tuple[str, str]] = []

    insert_rows: list[dict] = []
    update_rows: list[dict] = []
    state_rows: list[dict] = []
    touched: list[dict] = []
    history: list[dict] = []
    conflicts: list[dict] = []
    restored: list[str] = []

    with repo.reconciler_transaction(dry_run=run.dry_run) as conn:
        result.transaction_ids.append(repo.transaction_id(conn))
        held_links = _hold_unresolved_links(repo, conn, converted)
        if held_links:
            quarantine_rows.extend(held_links)
            unresolved = {(q["record_id"], q["field"]) for q in held_links}
            valid_fields = [pair for pair in valid_fields if pair not in unresolved]
        ids = sorted(converted)
        leads = repo.lock_leads(conn, ids)
        states = repo.lock_states(conn, ids)
        for record_id, (values, record) in converted.items():
            state = states.get(record_id)
            modified = record.modified
            if (
                state is not None
                and state.airtable_modified_at is not None
                and modified is not None
                and modified < state.airtable_modified_at
            ):
                result.stale_skipped += 1  # an older snapshot than one already applied
                continue
            applied.add(record_id)
            current = leads.get(record_id)
            created = record.created
            if current is None:
                insert_rows.append({mapping.key_column: record_id, **values})
                history.append(
                    {
                        "record_id": record_id,
                        "field": "*",
                        "old": None,
                        "new": values,
                        "direction": AIRTABLE_TO_POSTGRES,
                        "reason": "inserted",
                    }
                )
                state_rows.append(
                    _state_row(
                        record_id,
                        {
                            f.column: values[f.column]
                            for f in mapping.portal_fields
                            if f.column in values
                        },
                        modified,
                        created,
                        bump=0,
                        echo_pending=False,
                    )
                )
                result.inserted += 1
                continue
            outcome = _merge_lead(repo, record_id, values, current, state)
            push_released.extend((record_id, column) for column in outcome["airtable_took"])
            history.extend(outcome["history"])
            conflicts.extend(outcome["conflicts"])
            result.conflicts += len(outcome["conflicts"])
            result.echoes += outcome["echo"]
            result.reverted += outcome["reverted"]
            if outcome["row"] is not None:
                update_rows.append(outcome["row"])
                result.updated += 1
            else:
                result.unchanged += 1
            if state is not None and state.deleted_at is not None:
                result.restored += 1
                restored.append(record_id)
            if outcome["state_changed"] or state is None or state.deleted_at is not None:
                state_rows.append(
                    _state_row(
                        record_id,
                        outcome["base"],
                        modified,
                        created,
                        bump=outcome["bump"],
                        echo_pending=False,
                    )
                )
            elif modified is not None and modified != state.airtable_modified_at:
                touched.append(
                    {
                        "record_id": record_id,
                        "modified_at": modified.isoformat(),
                        "created_at": created.isoformat() if created else None,
                    }
                )
        repo.insert_leads(conn, insert_rows)
        repo.update_leads(conn, update_rows)
        repo.upsert_states(conn, state_rows)
        repo.touch_states(conn, touched)
        repo.show_soft_delete(conn, restored, deleted=False)
        # A stale snapshot neither holds nor releases: it was not applied.
        quarantine_rows = [q for q in quarantine_rows if q["record_id"] in applied]
        valid_fields = [pair for pair in valid_fields if pair[0] in applied]
        result.quarantined = len({q["record_id"] for q in quarantine_rows})
        result.quarantined_fields = len(quarantine_rows)
        result.quarantine_rows = quarantine_rows[:PREVIEW_LIMIT]
        repo.insert_history(conn, history, run)
        repo.insert_conflicts(conn, conflicts, run)
        repo.quarantine(conn, quarantine_rows, "pull", run)
        result.released = repo.release_quarantine(conn, valid_fields, "pull")
        # A portal value held for push that Airtable's value has now replaced is gone.
        repo.release_quarantine(conn, push_released, "push")
    result.changes = history[:PREVIEW_LIMIT]
    result.conflict_rows = conflicts[:PREVIEW_LIMIT]
    return result


def _hold_unresolved_links(repo: Repository, conn, converted: dict) -> list[dict]:
    """Links to a record the linked table does not have yet: the field is held (retried every
    run by `resolve_held_links`), the record's other fields sync."""
    holds: list[dict] = []
    for spec in repo.mapping.link_fields:
        if spec.link_target is None:
            continue
        wanted = {
            values[spec.column]
            for values, _ in converted.values()
            if values.get(spec.column) is not None
        }
        found = repo.existing_keys(conn, spec.link_target, sorted(wanted))
        for record_id, (values, _) in converted.items():
            linked = values.get(spec.column)
            if linked is not None and linked not in found:
                del values[spec.column]
                holds.append(
                    {
                        "record_id": record_id,
                        "field": spec.column,
                        "reason": f"{spec.display}: links to {spec.links_to} record {linked}, "
                        "not synced yet (retried every run)",
                        "raw": [linked],
                    }
                )
    return holds


def resolve_held_links(repo: Repository, run: RunContext) -> int:
    """Held links whose linked record has arrived since: written to their rows (audited as
    `link_resolved`) and released. Returns how many."""
    resolved = 0
    for spec in repo.mapping.link_fields:
        if spec.link_target is None:
            continue
        with repo.reconciler_transaction(dry_run=run.dry_run) as conn:
            held = repo.held_values(conn, spec.column)
            wanted: dict[str, str] = {}
            for record_id, raw in held.items():
                try:
                    linked = from_airtable(spec, raw)
                except InvalidValue:
                    continue  # still not a link we can store: stays held
                if linked is not None:
                    wanted[record_id] = linked
            found = repo.existing_keys(conn, spec.link_target, sorted(set(wanted.values())))
            ready = {rid: key for rid, key in wanted.items() if key in found}
            if not ready:
                continue
            current = repo.lock_leads(conn, sorted(ready))
            rows = [{repo.mapping.key_column: rid, spec.column: key} for rid, key in ready.items()]
            repo.update_leads(conn, rows)
            repo.insert_history(
                conn,
                [
                    {
                        "record_id": rid,
                        "field": spec.column,
                        "old": current.get(rid, {}).get(spec.column),
                        "new": key,
                        "direction": AIRTABLE_TO_POSTGRES,
                        "reason": "link_resolved",
                    }
                    for rid, key in ready.items()
                ],
                run,
            )
            repo.release_quarantine(conn, [(rid, spec.column) for rid in ready], "pull")
            resolved += len(ready)
    if resolved:
        logger.info("Stage 1: %d held links resolved", resolved)
    return resolved


def _state_row(record_id, base, modified, created, *, bump, echo_pending) -> dict:
    return {
        "record_id": record_id,
        "base_values": base,
        "modified_at": modified.isoformat() if modified else None,
        "created_at": created.isoformat() if created else None,
        "bump": bump,
        "echo_pending": echo_pending,
        "deleted_at": None,
    }


def _merge_lead(
    repo: Repository,
    record_id: str,
    airtable_values: dict[str, Any],
    current: dict[str, Any],
    state: SyncState | None,
) -> dict:
    """Decide every mapped field of one existing lead."""
    base_values = dict(state.base_values) if state else {}
    changed: dict[str, Any] = {}  # column → the value PostgreSQL takes (only where it differs)
    new_base = dict(base_values)
    history: list[dict] = []
    conflicts: list[dict] = []
    needs_push = False
    reverted = 0
    airtable_took: list[str] = []  # portal-owned columns that now hold Airtable's value
    for spec in repo.mapping.fields:
        column = spec.column
        if column not in airtable_values:
            continue  # held in quarantine: PostgreSQL and the base keep what they had
        airtable, portal = airtable_values[column], current[column]
        if not spec.portal_owned:
            if airtable != portal:
                changed[column] = airtable
                portal_wrote = state is not None and state.portal_wrote(column)
                reverted += int(portal_wrote)
                history.append(
                    {
                        "record_id": record_id,
                        "field": column,
                        "old": portal,
                        "new": airtable,
                        "direction": AIRTABLE_TO_POSTGRES,
                        # A portal write to a column Airtable owns, put back (DESIGN §3.1).
                        "reason": "reverted_portal_write" if portal_wrote else "airtable_owned",
                    }
                )
            continue
        base = base_values.get(column, MISSING)
        merged = merge_field(base, airtable, portal, spec.policy)
        new_base[column] = merged.base
        # A portal value the mapping rejects is held by the push, never sent: it must not make
        # the lead dirty again on every pull.
        needs_push = needs_push or (
            merged.needs_push and portal_value_problem(spec, merged.push_value) is None
        )
        if merged.postgres_value != portal:
            changed[column] = merged.postgres_value
            airtable_took.append(column)
            history.append(
                {
                    "record_id": record_id,
                    "field": column,
                    "old": portal,
                    "new": merged.postgres_value,
                    "direction": AIRTABLE_TO_POSTGRES,
                    "reason": merged.action.value,
                }
            )
        if merged.action is Action.CONFLICT:
            conflicts.append(
                conflict_row(
                    record_id,
                    spec,
                    None if base is MISSING else base,
                    airtable,
                    portal,
                    merged,
                )
            )
    echo = 0
    if state is not None and state.echo_pending and state.last_pushed_values:
        echo = int(all(airtable_values.get(c) == v for c, v in state.last_pushed_values.items()))
    # A value that must reach Airtable needs the lead dirty; the portal's own edit usually made it
    # so already, a merge_lines result may not have.
    bump = int(needs_push and not (state is not None and state.dirty))
    return {
        "row": {repo.mapping.key_column: record_id, **changed} if changed else None,
        "base": new_base,
        "history": history,
        "conflicts": conflicts,
        "echo": echo,
        "reverted": reverted,
        "airtable_took": airtable_took,
        "bump": bump,
        "state_changed": new_base != base_values
        or bump > 0
        or (state is not None and state.echo_pending),
    }


def conflict_row(record_id, spec, base, airtable, portal, merged) -> dict:
    decision = "merged" if merged.postgres_value not in (airtable,) else "airtable_wins"
    recommendation = (
        "Both sides' lines kept; review the merged text"
        if decision == "merged"
        else "Airtable's value was kept; resolve with the portal's value if it was right"
    )
    return {
        "record_id": record_id,
        "field": spec.column,
        "base": base,
        "airtable": airtable,
        "portal": portal,
        "decided": merged.postgres_value,
        "policy": spec.policy.value,
        "decision": decision,
        "recommendation": recommendation,
    }
