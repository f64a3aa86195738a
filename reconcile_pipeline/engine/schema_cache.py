"""Airtable's table schema, fetched at most once a day (DESIGN §4: an idle sync must cost next to
nothing; Airtable plans cap API calls per month).

A run validates the mapping against the schema cached in PostgreSQL when it is younger than
`MAX_AGE`; it fetches it again (one metadata call) when the cache is older, absent, or when the
run meets something the cached schema does not know: a field in the pulled records, a select
option, or Airtable refusing the listing's field list (422 UNKNOWN_FIELD_NAME: a mapped field was
deleted). A field retyped in Airtable between two checks makes its values unreadable: they are
held in field-level quarantine (nothing is lost) until the next check names the field and fails
the run with what to change. No Dagster here.
"""

import datetime as dt
import hashlib
import json
from collections.abc import Iterable
from typing import Any, Protocol

from sqlalchemy import text

from reconcile_pipeline.engine.mapping import FieldKind
from reconcile_pipeline.engine.repository import Repository

MAX_AGE = dt.timedelta(days=1)

# The JSON shape Airtable sends for each kind of field; another shape suggests a retyped field.
SHAPES: dict[FieldKind, tuple[type, ...]] = {
    FieldKind.TEXT: (str,),
    FieldKind.SELECT: (str,),
    FieldKind.INTEGER: (int, float),
    FieldKind.FLOAT: (int, float),
    FieldKind.BOOLEAN: (bool,),
    FieldKind.DATE: (str,),
    FieldKind.DATETIME: (str,),
    FieldKind.ATTACHMENTS: (list,),
    FieldKind.LINK: (list,),
}


class SchemaSource(Protocol):
    """What the cache needs from an Airtable table client."""

    def table_schema(self, refresh: bool = False) -> dict[str, Any]: ...

    def use_schema(self, schema: dict[str, Any]) -> None: ...


def fingerprint(schema: dict[str, Any]) -> str:
    """A digest of what the mapping depends on: field ids, names, types and options."""
    fields = sorted(
        (
            f.get("id"),
            f.get("name"),
            f.get("type"),
            json.dumps(f.get("options"), sort_keys=True),
        )
        for f in schema.get("fields", [])
    )
    return hashlib.sha256(json.dumps([schema.get("id"), fields]).encode()).hexdigest()[:16]


def _load(repo: Repository) -> tuple[dict, dt.datetime] | None:
    with repo.engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT schema, fetched_at FROM reconcile.airtable_schemas "
                "WHERE client = :c AND table_key = :t"
            ),
            {"c": repo.mapping.client, "t": repo.mapping.name},
        ).one_or_none()
    return (row[0], row[1]) if row is not None else None


def store(repo: Repository, schema: dict[str, Any]) -> None:
    with repo.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO reconcile.airtable_schemas (client, table_key, schema, fingerprint, "
                "fetched_at) VALUES (:c, :t, CAST(:schema AS jsonb), :fp, now()) "
                "ON CONFLICT (client, table_key) DO UPDATE SET schema = excluded.schema, "
                "fingerprint = excluded.fingerprint, fetched_at = excluded.fetched_at"
            ),
            {
                "c": repo.mapping.client,
                "t": repo.mapping.name,
                "schema": json.dumps(schema),
                "fp": fingerprint(schema),
            },
        )


def current_schema(
    repo: Repository, airtable: SchemaSource, now: dt.datetime | None = None
) -> tuple[dict[str, Any], bool]:
    """The schema to validate against, and whether it was fetched now (a metadata call)."""
    now = now or dt.datetime.now(dt.UTC)
    cached = _load(repo)
    if cached is not None and now - cached[1] < MAX_AGE:
        airtable.use_schema(cached[0])
        return cached[0], False
    return refresh(repo, airtable), True


def refresh(repo: Repository, airtable: SchemaSource) -> dict[str, Any]:
    """Fetch the schema from Airtable now and cache it."""
    schema = airtable.table_schema(refresh=True)
    store(repo, schema)
    return schema


def unknown_to(schema: dict[str, Any], repo: Repository, records: Iterable[dict]) -> list[str]:
    """What pulled `records` hold that `schema` does not know: fields it does not list, and
    select options it does not offer (each once, described for the log)."""
    fields = schema.get("fields", [])
    known = {f.get("id") for f in fields} | {f.get("name") for f in fields}
    options: dict[str, set[str]] = {}
    for field in fields:
        if field.get("type") == "singleSelect":
            names = {c.get("name") for c in (field.get("options") or {}).get("choices", [])}
            options[field.get("id")] = names
            options[field.get("name")] = names
    selects = [s.airtable_name for s in repo.mapping.fields if s.kind is FieldKind.SELECT]
    shapes = {s.airtable_name: SHAPES[s.kind] for s in repo.mapping.fields if s.kind in SHAPES}
    found: list[str] = []
    for record in records:
        values = record.get("fields") or {}
        for key, value in values.items():
            if key not in known and f"field {key}" not in found:
                found.append(f"field {key}")
            expected = shapes.get(key)
            if expected is not None and not isinstance(value, expected):
                # Perhaps retyped in Airtable since the schema was cached (or a hostile value:
                # then the re-read changes nothing and quarantine holds it).
                shown = f"a {type(value).__name__} in {key}"
                if shown not in found:
                    found.append(shown)
        for key in selects:
            value = values.get(key)
            if isinstance(value, str) and key in options and value not in options[key]:
                if f"option {value!r} of {key}" not in found:
                    found.append(f"option {value!r} of {key}")
    return found
