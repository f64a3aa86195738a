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
from reconcile_pipeline.engine.convert import parse_airtable_time, record_values
from reconcile_pipeline.engine.merge import MISSING, Action, merge_field
from reconcile_pipeline.engine.repository import Repository, SyncState

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
    quarantined: int = 0
    released: int = 0
    echoes: int = 0
    duplicates_in_pull: int = 0
    stale_skipped: int = 0
    restored: int = 0
    dry_run: bool = False
    airtable_values: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
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
            "released": self.released,
            "echoes": self.echoes,
            "duplicates_in_pull": self.duplicates_in_pull,
            "stale_skipped": self.stale_skipped,
            "restored": self.restored,
        }

    def absorb(self, other: "PullResult") -> None:
        for name, value in other.counts().items():
            setattr(self, name, getattr(self, name) + value)
        self.airtable_values.update(other.airtable_values)
        for attr in ("changes", "conflict_rows", "quarantine_rows"):
            room = PREVIEW_LIMIT - len(getattr(self, attr))
            getattr(self, attr).extend(getattr(other, attr)[: max(room, 0)])


def modified_time(repo: Repository, record: dict) -> dt.datetime | None:
    field_name = repo.mapping.modified_time_field
    if not field_name:
        return None
    return parse_airtable_time(record.get("fields", {}).get(field_name))


def dedupe(repo: Repository, records: Iterable[dict]) -> tuple[list[dict], int]:
    """One record per id (the most recently modified); returns the records and the repeats."""
    by_id: dict[str, dict] = {}
    repeats = 0
    for record in records:
        previous = by_id.get(record["id"])
        if previous is not None:
            repeats += 1
            newer, older = modified_time(repo, record), modified_time(repo, previous)
            if newer is not None and older is not None and newer < older:
                continue
        by_id[record["id"]] = record
    return list(by_id.values()), repeats


def pulled_portal_values(
    repo: Repository, run_id: str, record_ids: Sequence[str] | None = None
) -> dict[str, dict]:
    """Airtable's canonical values (every mapped column) of the valid records run `run_id`
    pulled, only `record_ids`' when given: the push's "current values" and the drift check's
    reference."""
    with repo.engine.connect() as conn:
        records = repo.snapshot_records(conn, run_id, record_ids)
    unique, _ = dedupe(repo, records)
    values: dict[str, dict] = {}
    for record in unique:
        mapped, problems = record_values(repo.mapping, record["fields"])
        if not problems:
            values[record["id"]] = mapped
    return values


def store_snapshot(repo: Repository, records: Sequence[dict], run: RunContext) -> None:
    """Persist the raw records as pulled (the audit trail and the merge's input)."""
    for record in records:
        modified = modified_time(repo, record)
        record["_modified_time"] = modified.isoformat() if modified else None
    with repo.reconciler_transaction() as conn:
        repo.insert_snapshots(conn, records, run)


def apply_records(
    repo: Repository,
    records: Iterable[dict],
    run: RunContext,
    *,
    store_snapshots: bool = True,
    batch_size: int = BATCH_SIZE,
) -> PullResult:
    """Merge Airtable records into PostgreSQL, one transaction per batch of `batch_size`."""
    unique, repeats = dedupe(repo, records)
    total = PullResult(dry_run=run.dry_run, duplicates_in_pull=repeats)
    for start in range(0, len(unique), batch_size):
        batch = unique[start : start + batch_size]
        total.absorb(_apply_batch(repo, batch, run, store_snapshots))
        if len(unique) > batch_size:
            logger.info("Stage 1: merged %d/%d records", start + len(batch), len(unique))
    return total


def _apply_batch(
    repo: Repository, records: list[dict], run: RunContext, store_snapshots: bool
) -> PullResult:
    mapping = repo.mapping
    result = PullResult(pulled=len(records), dry_run=run.dry_run)
    valid: dict[str, tuple[dict, dict]] = {}
    quarantine_rows: list[dict] = []
    for record in records:
        values, problems = record_values(mapping, record.get("fields", {}))
        if problems:
            quarantine_rows.append(
                {"record_id": record["id"], "reason": "; ".join(problems), "payload": record}
            )
        else:
            valid[record["id"]] = (values, record)
    result.quarantined = len(quarantine_rows)
    result.quarantine_rows = quarantine_rows[:PREVIEW_LIMIT]

    insert_rows: list[dict] = []
    update_rows: list[dict] = []
    state_rows: list[dict] = []
    touched: list[dict] = []
    history: list[dict] = []
    conflicts: list[dict] = []

    with repo.reconciler_transaction(dry_run=run.dry_run) as conn:
        if store_snapshots:
            for record in records:
                modified = modified_time(repo, record)
                record["_modified_time"] = modified.isoformat() if modified else None
            repo.insert_snapshots(conn, records, run)
        ids = list(valid)
        leads = repo.lock_leads(conn, ids)
        states = repo.lock_states(conn, ids)
        for record_id, (values, record) in valid.items():
            result.airtable_values[record_id] = values
            state = states.get(record_id)
            modified = modified_time(repo, record)
            if (
                state is not None
                and state.airtable_modified_at is not None
                and modified is not None
                and modified < state.airtable_modified_at
            ):
                result.stale_skipped += 1  # an older snapshot than one already applied
                continue
            current = leads.get(record_id)
            created = parse_airtable_time(record.get("createdTime"))
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
                        {f.column: values[f.column] for f in mapping.portal_fields},
                        modified,
                        created,
                        bump=0,
                        echo_pending=False,
                    )
                )
                result.inserted += 1
                continue
            outcome = _merge_lead(repo, record_id, values, current, state)
            history.extend(outcome["history"])
            conflicts.extend(outcome["conflicts"])
            result.conflicts += len(outcome["conflicts"])
            result.echoes += outcome["echo"]
            if outcome["row"] is not None:
                update_rows.append(outcome["row"])
                result.updated += 1
            else:
                result.unchanged += 1
            if state is not None and state.deleted_at is not None:
                result.restored += 1
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
        repo.insert_history(conn, history, run)
        repo.insert_conflicts(conn, conflicts, run)
        repo.quarantine(conn, quarantine_rows, "pull", run)
        result.released = repo.release_quarantine(conn, valid, "pull")
    result.changes = history[:PREVIEW_LIMIT]
    result.conflict_rows = conflicts[:PREVIEW_LIMIT]
    return result


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
    for spec in repo.mapping.fields:
        column = spec.column
        airtable, portal = airtable_values[column], current[column]
        if not spec.portal_owned:
            if airtable != portal:
                changed[column] = airtable
                history.append(
                    {
                        "record_id": record_id,
                        "field": column,
                        "old": portal,
                        "new": airtable,
                        "direction": AIRTABLE_TO_POSTGRES,
                        "reason": "airtable_owned",
                    }
                )
            continue
        base = base_values.get(column, MISSING)
        merged = merge_field(base, airtable, portal, spec.policy)
        new_base[column] = merged.base
        needs_push = needs_push or merged.needs_push
        if merged.postgres_value != portal:
            changed[column] = merged.postgres_value
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
