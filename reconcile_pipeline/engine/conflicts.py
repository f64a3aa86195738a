"""The conflict queue: review what the merge decided and, where it was wrong, choose again.

A resolution is applied through the normal paths: choosing the portal's (or a custom) value is
an ordinary portal write (the capture trigger marks the lead dirty and stage 2 pushes it), and
it is audited in the change history.
"""

import json
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import text

from reconcile_pipeline.engine.repository import Repository, _quote

Choice = Literal["airtable", "portal", "custom"]


@dataclass(frozen=True)
class OpenConflict:
    id: int
    record_id: str
    field: str
    base_value: Any
    airtable_value: Any
    portal_value: Any
    decided_value: Any
    decision: str
    recommendation: str | None


def list_open(repo: Repository, limit: int = 100) -> list[OpenConflict]:
    with repo.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, airtable_record_id, field, base_value, airtable_value, portal_value, "
                "decided_value, decision, recommendation FROM reconcile.conflicts "
                "WHERE client = :c AND "
                "table_key = :t AND status = 'open' ORDER BY detected_at, id LIMIT :limit"
            ),
            {"c": repo.mapping.client, "t": repo.mapping.name, "limit": limit},
        ).all()
    return [OpenConflict(*row) for row in rows]


def owns(repo: Repository, conflict_id: int) -> bool:
    """Whether conflict `conflict_id` belongs to `repo`'s table."""
    with repo.engine.connect() as conn:
        return bool(
            conn.execute(
                text(
                    "SELECT 1 FROM reconcile.conflicts WHERE id = :id AND client = :c AND "
                    "table_key = :t"
                ),
                {"id": conflict_id, "c": repo.mapping.client, "t": repo.mapping.name},
            ).first()
        )


def resolve(repo: Repository, conflict_id: int, choice: Choice, value: Any = None) -> Any:
    """Resolve one open conflict; returns the value the field now holds in the portal."""
    with repo.engine.begin() as conn:
        row = conn.execute(
            text(
                "SELECT airtable_record_id, field, airtable_value, portal_value, decided_value "
                "FROM reconcile.conflicts WHERE id = :id AND client = :c AND "
                "table_key = :t AND status = 'open' "
                "FOR UPDATE"
            ),
            {"id": conflict_id, "c": repo.mapping.client, "t": repo.mapping.name},
        ).one_or_none()
        if row is None:
            raise LookupError(f"No open conflict {conflict_id}")
        record_id, column, airtable_value, portal_value, decided = row
        chosen = {"airtable": airtable_value, "portal": portal_value, "custom": value}[choice]
        if column not in repo.mapping.by_column():
            raise ValueError(f"Conflict {conflict_id} is on unmapped column {column}")
        if chosen != decided:
            # An untagged write: the portal's own edit, captured and pushed like any other.
            table = repo.table_sql
            conn.execute(
                text(
                    f"UPDATE {table} SET {_quote(column)} = "
                    f"(jsonb_populate_record(NULL::{table}, "
                    "jsonb_build_object(CAST(:col AS text), CAST(:value AS jsonb))))."
                    f"{_quote(column)} "
                    f"WHERE {repo.key_sql} = :rid"
                ),
                {"col": column, "value": json.dumps(chosen), "rid": record_id},
            )
        conn.execute(
            text(
                "UPDATE reconcile.conflicts SET status = 'resolved', resolved_value = "
                "CAST(:value AS jsonb), resolution = :choice, resolved_at = now() WHERE id = :id"
            ),
            {"value": json.dumps(chosen), "choice": choice, "id": conflict_id},
        )
        conn.execute(
            text(
                "INSERT INTO reconcile.change_history (client, "
                "table_key, airtable_record_id, field, "
                "old_value, new_value, direction, reason) VALUES (:c, :t, :rid, :field, "
                "CAST(:old AS jsonb), CAST(:new AS jsonb), :direction, :reason)"
            ),
            {
                "c": repo.mapping.client,
                "t": repo.mapping.name,
                "rid": record_id,
                "field": column,
                "old": json.dumps(decided),
                "new": json.dumps(chosen),
                "reason": f"conflict_resolution:{choice}",
                # Airtable's value comes to the portal; the portal's or a custom value goes to
                # Airtable (pushed by the next run).
                "direction": "airtable_to_postgres"
                if choice == "airtable"
                else "postgres_to_airtable",
            },
        )
    return chosen


def accept_all_recommendations(repo: Repository) -> int:
    """Accept the merge's decision for every open conflict (the values already applied)."""
    with repo.engine.begin() as conn:
        return conn.execute(
            text(
                "UPDATE reconcile.conflicts SET status = 'resolved', resolved_value = "
                "decided_value, resolution = 'accepted', resolved_at = now() "
                "WHERE client = :c AND table_key = :t AND status = 'open'"
            ),
            {"c": repo.mapping.client, "t": repo.mapping.name},
        ).rowcount
