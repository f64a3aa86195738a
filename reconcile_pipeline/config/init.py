"""`reconcile init`: a starter project file from a live Airtable table and a PostgreSQL table.

The pure part (no I/O): match Airtable fields to columns, pick each field's type and check it
against its column, and render a commented reconcile.yaml that `config.load.parse` accepts.
Matching is by exact name, then ignoring case and punctuation ("E-mail" ↔ email,
"Assigned To" ↔ assigned_to); the rest only get suggestions (difflib), written as comments,
never as mappings. Portal ownership is never guessed: every field starts `owner: airtable`.

The I/O part (reading Airtable's metadata API and PostgreSQL's information_schema, writing the
file) is at the end; the `reconcile init` command wires it up. No Dagster here.
"""

import difflib
import os
import re
import tempfile
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reconcile_pipeline.config.model import BASE_ID, ENV_NAME, KEY
from reconcile_pipeline.engine.mapping import AIRTABLE_TYPES, POSTGRES_TYPES, FieldKind

DEFAULT_KEY_COLUMN = "airtable_record_id"

# Types whose values Airtable computes: never written, so never synced by default.
COMPUTED_TYPES = frozenset(
    {
        "formula",
        "rollup",
        "lookup",
        "multipleLookupValues",
        "count",
        "autoNumber",
        "createdTime",
        "lastModifiedTime",
        "createdBy",
        "lastModifiedBy",
        "button",
        "aiText",
    }
)

# The kinds a field of each Airtable type can sync as, preferred first (`number` depends on its
# precision). A type absent here is not supported by the sync.
_KINDS: dict[str, tuple[FieldKind, ...]] = {
    "singleLineText": (FieldKind.TEXT,),
    "multilineText": (FieldKind.TEXT,),
    "richText": (FieldKind.TEXT,),
    "email": (FieldKind.TEXT,),
    "url": (FieldKind.TEXT,),
    "phoneNumber": (FieldKind.TEXT,),
    "currency": (FieldKind.FLOAT,),
    "percent": (FieldKind.FLOAT,),
    "duration": (FieldKind.FLOAT,),
    "rating": (FieldKind.INTEGER,),
    "checkbox": (FieldKind.BOOLEAN,),
    "date": (FieldKind.DATE,),
    "dateTime": (FieldKind.DATETIME,),
    "singleSelect": (FieldKind.SELECT,),
    "multipleSelects": (FieldKind.JSON,),
    "multipleRecordLinks": (FieldKind.JSON,),
    "multipleAttachments": (FieldKind.ATTACHMENTS,),
}

# Boolean columns that say "the record still exists in Airtable" (compared ignoring case and
# punctuation), best first. An inverted flag (is_deleted) is not one: the sync sets it false.
_SOFT_DELETE_NAMES = (
    "isactive",
    "active",
    "isinairtable",
    "inairtable",
    "existsinairtable",
    "ispresent",
    "present",
)

_TEXT_TYPES = POSTGRES_TYPES[FieldKind.TEXT]


class InitError(ValueError):
    """`reconcile init` cannot write a useful file; the message says what to set or pass."""


# ----- the two sides ----------------------------------------------------------------------


@dataclass(frozen=True)
class AirtableField:
    id: str
    name: str
    type: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> "AirtableField":
        """A field as the metadata API returns it (`{"id", "name", "type", "options"}`)."""
        return cls(
            id=str(meta["id"]),
            name=str(meta["name"]),
            type=str(meta.get("type", "")),
            options=dict(meta.get("options") or {}),
        )

    @property
    def computed(self) -> bool:
        return self.type in COMPUTED_TYPES

    @property
    def choices(self) -> list[str]:
        return [str(c.get("name")) for c in self.options.get("choices", []) if "name" in c]


@dataclass(frozen=True)
class AirtableTable:
    id: str
    name: str
    fields: tuple[AirtableField, ...]

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> "AirtableTable":
        """A table as the metadata API returns it."""
        return cls(
            id=str(meta["id"]),
            name=str(meta["name"]),
            fields=tuple(AirtableField.from_meta(f) for f in meta.get("fields", [])),
        )


@dataclass(frozen=True)
class Column:
    name: str
    data_type: str  # information_schema.columns.data_type
    nullable: bool = True
    has_default: bool = False
    max_length: int | None = None  # character_maximum_length: varchar(n), char(n)
    unique: bool = False  # a single-column unique index or constraint
    generated: bool = False  # GENERATED ALWAYS AS (…): PostgreSQL computes it, nobody writes it

    @property
    def shown(self) -> str:
        length = f"({self.max_length})" if self.max_length else ""
        generated = ", generated" if self.generated else ""
        return f"{self.name} ({self.data_type}{length}{generated})"


@dataclass(frozen=True)
class PostgresTable:
    schema: str
    name: str
    columns: tuple[Column, ...]

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)


# ----- matching ---------------------------------------------------------------------------


def normalize(name: str) -> str:
    """The name compared ignoring case, accents and punctuation: "E-mail" and `email`,
    "Assigned To" and `assigned_to` are equal."""
    decomposed = unicodedata.normalize("NFKD", name).casefold()
    return "".join(ch for ch in decomposed if ch.isalnum())


def snake_key(name: str, fallback: str = "main") -> str:
    """A lower_snake_case key (the project file's client and table keys) from a name."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    key = re.sub(r"[^a-z0-9]+", "_", ascii_name.lower()).strip("_")
    if not key:
        key = fallback
    if not key[0].isalpha():
        key = f"t_{key}"
    key = key[:63].rstrip("_")
    return key if KEY.match(key) else fallback


def similar(name: str, candidates: Iterable[str], limit: int = 3) -> list[str]:
    """The candidates closest to `name` ignoring case and punctuation (difflib), best first."""
    wanted = normalize(name)
    scored = []
    for candidate in dict.fromkeys(candidates):
        ratio = difflib.SequenceMatcher(None, wanted, normalize(candidate)).ratio()
        if ratio >= 0.6:
            scored.append((-ratio, candidate))
    return [candidate for _, candidate in sorted(scored)[:limit]]


def kinds_for(airtable_field: AirtableField) -> tuple[FieldKind, ...]:
    """The kinds the field can sync as, preferred first; empty when the sync cannot."""
    if airtable_field.type == "number":
        precision = airtable_field.options.get("precision")
        if precision == 0:
            kinds: tuple[FieldKind, ...] = (FieldKind.INTEGER, FieldKind.FLOAT)
        elif precision is None:
            kinds = (FieldKind.FLOAT, FieldKind.INTEGER)
        else:
            kinds = (FieldKind.FLOAT,)
    else:
        kinds = _KINDS.get(airtable_field.type, ())
    return tuple(k for k in kinds if airtable_field.type in AIRTABLE_TYPES[k])


def choose_kind(airtable_field: AirtableField, column: Column) -> tuple[FieldKind | None, str]:
    """The field's type in the project file for this column, or None and why they cannot sync."""
    kinds = kinds_for(airtable_field)
    if not kinds:
        return None, f"Airtable type {airtable_field.type} is not supported by the sync"
    for kind in kinds:
        if column.data_type in POSTGRES_TYPES[kind]:
            return kind, ""
    accepted = sorted(set().union(*(POSTGRES_TYPES[k] for k in kinds)))
    described = airtable_field.type
    if airtable_field.type == "number" and airtable_field.options.get("precision"):
        described += f" with {airtable_field.options['precision']} decimals"
    return None, (
        f"{described} syncs as {' or '.join(k.value for k in kinds)}, which needs a "
        f"column of type {', '.join(accepted)}; {column.name} is {column.data_type}"
    )


@dataclass(frozen=True)
class Mapped:
    """A field mapped to a column."""

    field: AirtableField
    column: Column
    kind: FieldKind
    how: str  # "exact" or "normalized"


@dataclass(frozen=True)
class Mismatch:
    """A field whose name matches a column whose type cannot hold it (left commented out)."""

    field: AirtableField
    column: Column
    kind: FieldKind | None  # the kind it would sync as, when the sync supports its type
    reason: str


@dataclass(frozen=True)
class UnmappedField:
    field: AirtableField
    suggestions: tuple[str, ...]  # column names, best first
    reason: str


@dataclass(frozen=True)
class IgnoredField:
    field: AirtableField
    reason: str
    column_hint: str | None = None  # a free column its name matches


@dataclass(frozen=True)
class UnmappedColumn:
    column: Column
    suggestions: tuple[str, ...]  # Airtable field names, best first


@dataclass(frozen=True)
class Matching:
    mapped: tuple[Mapped, ...]
    mismatches: tuple[Mismatch, ...]
    unmapped_fields: tuple[UnmappedField, ...]
    ignored: tuple[IgnoredField, ...]
    unmapped_columns: tuple[UnmappedColumn, ...]


def match_fields(
    fields: Sequence[AirtableField],
    columns: Sequence[Column],
    soft_delete_column: str | None = None,
) -> Matching:
    """Match Airtable fields to columns: exact name first, then ignoring case and punctuation
    (only when exactly one field and one column share that form); the rest get suggestions.

    `columns` are the ones fields may map to (not the key or soft-delete column). A syncable
    field named like `soft_delete_column` is ignored: the sync owns that column. Computed fields
    are ignored, with the free column their name matches as a hint.
    """
    order = {f.id: index for index, f in enumerate(fields)}
    free = {c.name: c for c in columns if not c.generated}  # a generated column is not writable
    ignored: list[IgnoredField] = []
    syncable: list[AirtableField] = []
    for candidate in fields:
        if candidate.computed:
            continue
        if soft_delete_column is not None and normalize(candidate.name) == normalize(
            soft_delete_column
        ):
            ignored.append(
                IgnoredField(
                    candidate,
                    f"its column {soft_delete_column} is the soft-delete column, which the sync "
                    "owns",
                )
            )
        else:
            syncable.append(candidate)

    pairs: dict[str, tuple[Column, str]] = {}
    for candidate in syncable:
        if candidate.name in free:
            pairs[candidate.id] = (free.pop(candidate.name), "exact")
    by_form: dict[str, list[AirtableField]] = {}
    for candidate in syncable:
        if candidate.id not in pairs:
            by_form.setdefault(normalize(candidate.name), []).append(candidate)
    columns_by_form: dict[str, list[Column]] = {}
    for column in free.values():
        columns_by_form.setdefault(normalize(column.name), []).append(column)
    ambiguous: dict[str, tuple[str, ...]] = {}
    for form, matching_fields in by_form.items():
        matching_columns = columns_by_form.get(form, []) if form else []
        if len(matching_fields) == 1 and len(matching_columns) == 1:
            pairs[matching_fields[0].id] = (free.pop(matching_columns[0].name), "normalized")
        elif matching_columns:
            for candidate in matching_fields:
                ambiguous[candidate.id] = tuple(c.name for c in matching_columns)

    mapped: list[Mapped] = []
    mismatches: list[Mismatch] = []
    unmapped: list[UnmappedField] = []
    for candidate in syncable:
        if candidate.id in pairs:
            column, how = pairs[candidate.id]
            kind, reason = choose_kind(candidate, column)
            if kind is None:
                kinds = kinds_for(candidate)
                mismatches.append(Mismatch(candidate, column, kinds[0] if kinds else None, reason))
            else:
                mapped.append(Mapped(candidate, column, kind, how))
        elif candidate.id in ambiguous:
            names = ambiguous[candidate.id]
            others = [f.name for f in by_form[normalize(candidate.name)] if f is not candidate]
            reason = (
                "ambiguous: ignoring case and punctuation it matches "
                + ("column " if len(names) == 1 else "columns ")
                + ", ".join(names)
                + (f", as does {', '.join(others)}" if others else "")
            )
            unmapped.append(UnmappedField(candidate, names, reason))
        else:
            suggestions = tuple(similar(candidate.name, free))
            if not kinds_for(candidate):
                reason = f"Airtable type {candidate.type} is not supported by the sync"
            elif suggestions:
                reason = "no column has its name"
            else:
                reason = "no column has a similar name"
            unmapped.append(UnmappedField(candidate, suggestions, reason))

    for candidate in fields:
        if not candidate.computed:
            continue
        hint = next(
            (
                name
                for name in free
                if name == candidate.name or normalize(name) == normalize(candidate.name)
            ),
            None,
        )
        ignored.append(IgnoredField(candidate, f"computed by Airtable ({candidate.type})", hint))
    ignored.sort(key=lambda item: order[item.field.id])

    left = [u.field.name for u in unmapped] + [i.field.name for i in ignored]
    unmapped_columns = tuple(
        UnmappedColumn(column, tuple(similar(column.name, left)))
        for column in columns
        if column.name in free or column.generated
    )
    return Matching(
        mapped=tuple(mapped),
        mismatches=tuple(mismatches),
        unmapped_fields=tuple(unmapped),
        ignored=tuple(ignored),
        unmapped_columns=unmapped_columns,
    )


def find_soft_delete_column(columns: Sequence[Column]) -> Column | None:
    """An `is_active`-like boolean column: true while the record exists in Airtable."""
    booleans = {normalize(c.name): c for c in columns if c.data_type == "boolean"}
    return next((booleans[name] for name in _SOFT_DELETE_NAMES if name in booleans), None)


def find_modified_time_field(fields: Sequence[AirtableField]) -> AirtableField | None:
    """A lastModifiedTime field that watches every field (no `referencedFieldIds`)."""
    return next(
        (
            f
            for f in fields
            if f.type == "lastModifiedTime" and not f.options.get("referencedFieldIds")
        ),
        None,
    )


def choose_table(
    tables: Sequence[Mapping[str, Any]], wanted: str | None, base_id: str, postgres_table: str
) -> Mapping[str, Any]:
    """The Airtable table: `wanted` (name or tbl… id), else the base's only table, else the one
    named like the PostgreSQL table (ignoring case and punctuation)."""
    listed = ", ".join(f"{t['name']} ({t['id']})" for t in tables) or "none"
    if wanted is not None:
        for table in tables:
            if wanted in (table["id"], table["name"]):
                return table
        close = [t for t in tables if normalize(t["name"]) == normalize(wanted)]
        if len(close) == 1:
            return close[0]
        raise InitError(
            f"Airtable table {wanted!r} was not found in base {base_id}: pass --table with "
            f"one of: {listed}."
        )
    if len(tables) == 1:
        return tables[0]
    named = [t for t in tables if normalize(t["name"]) == normalize(postgres_table)]
    if len(named) == 1:
        return named[0]
    raise InitError(
        f"Base {base_id} has {len(tables)} tables: pass --table with one of: {listed}."
        if tables
        else f"Base {base_id} has no tables."
    )


def parse_postgres_table(value: str) -> tuple[str, str]:
    """`schema.table` (or `table`, in public) as (schema, table)."""
    schema, dot, table = value.strip().partition(".")
    if not dot:
        schema, table = "public", schema
    if not schema or not table:
        raise InitError(f"--postgres-table {value!r}: write it as schema.table (public.leads).")
    return schema, table


# ----- the starter file -------------------------------------------------------------------


@dataclass(frozen=True)
class Starter:
    """Everything the starter file says."""

    client_key: str
    client_name: str | None
    base_id: str
    token_env: str
    table_key: str
    airtable: AirtableTable
    postgres: PostgresTable
    key_column: Column
    soft_delete_column: Column | None
    modified_time_field: AirtableField | None
    matching: Matching


def _key_column(postgres: PostgresTable, wanted: str | None) -> Column:
    text_columns = [c.name for c in postgres.columns if c.data_type in _TEXT_TYPES]
    hint = ", ".join(similar(DEFAULT_KEY_COLUMN, text_columns) or text_columns[:5]) or "none"
    name = wanted or DEFAULT_KEY_COLUMN
    column = postgres.column(name)
    if column is None:
        if wanted:
            raise InitError(
                f"--key-column {wanted}: {postgres.qualified} has no such column (text "
                f"columns: {hint})."
            )
        raise InitError(
            f"{postgres.qualified} has no {DEFAULT_KEY_COLUMN} column: pass --key-column naming "
            f"the text column that holds the Airtable record id (rec…) (text columns: {hint})."
        )
    if column.data_type not in _TEXT_TYPES:
        raise InitError(
            f"Key column {postgres.qualified}.{column.name} is {column.data_type}; it holds the "
            "Airtable record id (rec…), so it must be text: pass --key-column naming a text "
            f"column (text columns: {hint})."
        )
    return column


def check_arguments(base_id: str, token_env: str, client_key: str | None = None) -> None:
    """Refuse a malformed base id, variable name or client key before any request.

    Raises:
        InitError: says which option is wrong and what it should look like.
    """
    if not BASE_ID.match(base_id):
        raise InitError(
            f"--base {_safe(base_id)!r} is not an Airtable base id: pass the app… id from the "
            "base's URL (app followed by 14 letters and digits)."
        )
    if not ENV_NAME.match(token_env):
        # Never echo it: someone may have pasted the token itself.
        raise InitError(
            "--token-env is not an environment variable name: pass the NAME of the variable "
            "that holds the token (e.g. AIRTABLE_API_KEY), never the token."
        )
    if client_key is not None and not KEY.match(client_key):
        raise InitError(
            f"--client {_safe(client_key)!r}: write a lower_snake_case key (e.g. acme)."
        )


def plan_starter(
    *,
    base_id: str,
    base_name: str | None,
    airtable: AirtableTable,
    postgres: PostgresTable,
    token_env: str = "AIRTABLE_API_KEY",
    client_key: str | None = None,
    key_column: str | None = None,
) -> Starter:
    """Decide what the starter file says.

    Raises:
        InitError: a bad id, key or variable name, no usable key column, or no field matching
            any column (a file without fields would not load).
    """
    check_arguments(base_id, token_env, client_key)
    key = _key_column(postgres, key_column)
    soft_delete = find_soft_delete_column([c for c in postgres.columns if c is not key])
    reserved = {key.name} | ({soft_delete.name} if soft_delete else set())
    matching = match_fields(
        airtable.fields,
        [c for c in postgres.columns if c.name not in reserved],
        soft_delete.name if soft_delete else None,
    )
    if not matching.mapped:
        raise InitError(
            f"No field of Airtable table {airtable.name} ({airtable.id}) can map to a column of "
            f"{postgres.qualified} ({len(matching.mismatches)} type mismatches): check --table "
            "and --postgres-table; nothing was written."
        )
    return Starter(
        client_key=client_key or snake_key(base_name or "", fallback=snake_key(base_id)),
        client_name=base_name,
        base_id=base_id,
        token_env=token_env,
        table_key=snake_key(postgres.name, fallback="table"),
        airtable=airtable,
        postgres=postgres,
        key_column=key,
        soft_delete_column=soft_delete,
        modified_time_field=find_modified_time_field(airtable.fields),
        matching=matching,
    )


def _scalar(value: str) -> str:
    """A YAML scalar on one line that reads back as `value`."""
    text = yaml.safe_dump(value, allow_unicode=True, width=10**9).removesuffix("\n...\n")
    text = text.rstrip("\n")
    if "\n" in text or not all(ch.isprintable() for ch in text):
        text = yaml.safe_dump(value, allow_unicode=True, width=10**9, default_style='"')
        text = text.rstrip("\n")
    return text


def _safe(text: str) -> str:
    """Text for a comment: one line whatever it holds (a name cannot end the comment)."""
    return "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in text)


def _shorten(items: Sequence[str], width: int = 70) -> str:
    text = ", ".join(items)
    return text if len(text) <= width else text[: width - 1].rstrip(", ") + "…"


def _field_lines(
    field_id: str, name: str, column: str, kind: FieldKind, extra: Sequence[str] = ()
) -> list[str]:
    return [
        f"{field_id}:",
        f"  name: {_scalar(name)}",
        f"  column: {_scalar(column)}",
        f"  type: {kind.value}",
        *extra,
        "  owner: airtable",
    ]


def _mapped_lines(item: Mapped) -> list[str]:
    extra = []
    if item.kind is FieldKind.TEXT and item.column.max_length:
        extra.append(f"  max_length: {item.column.max_length}  # {item.column.shown}")
    if not item.column.nullable and not item.column.has_default:
        extra.append(f"  required: true  # {item.column.name} is NOT NULL without a default")
    lines = _field_lines(item.field.id, item.field.name, item.column.name, item.kind, extra)
    notes = [item.field.type]
    if item.how == "normalized" and snake_key(item.field.name, "") != item.column.name:
        notes.append("name matched ignoring case and punctuation")
    if item.kind is FieldKind.SELECT and item.field.choices:
        notes.append(f"options (read at run time): {_shorten(item.field.choices, 50)}")
    lines[0] += f"  # {_safe('; '.join(notes))}"
    return lines


def render(starter: Starter) -> str:
    """The starter reconcile.yaml: valid for `config.load.parse`, commented for a person."""
    s = starter
    m = s.matching
    out: list[str] = []

    def add(indent: int, line: str = "") -> None:
        out.append((" " * indent + line).rstrip() if line else "")

    def comment(indent: int, text: str) -> None:
        add(indent, f"# {_safe(text)}" if text else "#")

    header = [
        f"Written by `reconcile init` from Airtable table {s.airtable.name} ({s.airtable.id})",
        f"in base {s.base_id} and PostgreSQL table {s.postgres.qualified}.",
        "A starter: read it, edit it, then check it against both sides with `reconcile doctor`",
        "(README 'The project file').",
        "",
        f"Coverage: mapped {len(m.mapped)}, ignored {len(m.ignored)} (computed, or owned by the "
        f"sync), not mapped {len(m.unmapped_fields)},",
        f"type mismatches {len(m.mismatches)}; columns no field maps to: "
        f"{len(m.unmapped_columns)}.",
        "",
        "Fields are keyed by Airtable field id: renaming a field or table in Airtable changes",
        "nothing; `name` is for display only. Select options come from Airtable's schema at run",
        "time. The token is read from the variable named by token_env, never written here.",
        "",
        "OWNERSHIP IS YOURS TO DECIDE: reconcile init never guesses it, so every field below",
        "starts `owner: airtable` (pulled only; a portal write to its column is reverted to",
        "Airtable's value and counted in a check). On each field the portal writes, set:",
        "    owner: portal          # pushed to Airtable, and pulled too",
        "and, if you want, its conflict policy:",
        "    policy: airtable_wins  # the default: Airtable wins a true conflict",
        "    policy: merge_lines    # text only (e.g. notes): keep both sides' appended lines",
        "Columns no field maps to are local-only: the sync never reads or writes them.",
    ]
    for line in header:
        comment(0, line)
    add(0, "version: 1")
    add(0, "clients:")
    add(2, f"{_scalar(s.client_key)}:")  # `yes` must stay a string
    if s.client_name:
        add(4, f"name: {_scalar(s.client_name)}")
    add(4, f"base_id: {s.base_id}")
    add(4, f"token_env: {s.token_env}  # the NAME of the variable holding the token")
    add(4, "tables:")
    add(6, f"{_scalar(s.table_key)}:")
    add(8, f"airtable_table: {s.airtable.id}")
    add(8, f"name: {_scalar(s.airtable.name)}")
    add(8, "postgres:")
    add(10, f"schema: {_scalar(s.postgres.schema)}")
    add(10, f"table: {_scalar(s.postgres.name)}")
    key_note = "holds the Airtable record id (rec…)"
    if not s.key_column.unique:
        key_note += f"; it has no unique index: add one on {s.key_column.name}"
    add(10, f"key_column: {_scalar(s.key_column.name)}  # {_safe(key_note)}")
    if s.soft_delete_column is not None:
        add(
            10,
            f"soft_delete_column: {_scalar(s.soft_delete_column.name)}  # the sync sets it false "
            "once the record is deleted in Airtable, true when it reappears",
        )
    else:
        comment(
            10,
            "soft_delete_column: is_active  # none found: a boolean column the sync sets false "
            "once the record is deleted in Airtable; add one and uncomment this line",
        )
    if s.modified_time_field is not None:
        add(
            8,
            f"modified_time_field: {s.modified_time_field.id}  # "
            f"{_safe(s.modified_time_field.name)} (lastModifiedTime): an older snapshot never "
            "overwrites a newer one",
        )
    else:
        comment(
            8,
            "modified_time_field: fld…  # none found: add a Last modified time field (all "
            "fields) in Airtable and set its id here",
        )

    add(8, "fields:")
    for item in m.mapped:
        for line in _mapped_lines(item):
            add(10, line)
    if m.mismatches:
        add(0)
        comment(10, "TYPE MISMATCHES, left out: the field's type cannot sync into its column. Fix")
        comment(10, "the column (or map another one), then uncomment.")
        for mismatch in m.mismatches:
            comment(
                10,
                f"{mismatch.field.name} ({mismatch.field.type}) ↔ {mismatch.column.shown}: "
                f"{mismatch.reason}",
            )
            if mismatch.kind is not None:
                for line in _field_lines(
                    mismatch.field.id, mismatch.field.name, mismatch.column.name, mismatch.kind
                ):
                    comment(10, line)
    if m.unmapped_fields:
        add(0)
        comment(10, "NOT MAPPED: no column matched these fields by name. Uncomment a suggestion")
        comment(10, "to map it (check the column), or list the field under ignored_fields.")
        for unmapped in m.unmapped_fields:
            described = f"{unmapped.field.name} ({unmapped.field.type}): {unmapped.reason}"
            suggestion = next(
                (
                    (column, kind)
                    for name in unmapped.suggestions
                    if (column := s.postgres.column(name)) is not None
                    and (kind := choose_kind(unmapped.field, column)[0]) is not None
                ),
                None,
            )
            if suggestion is None:
                if unmapped.suggestions:
                    described += f"; similar columns: {', '.join(unmapped.suggestions)}"
                comment(10, f"{unmapped.field.id}: {described}")
                continue
            column, kind = suggestion
            comment(10, f"{described}; closest column: {column.shown}")
            for line in _field_lines(unmapped.field.id, unmapped.field.name, column.name, kind):
                comment(10, line)

    listed = [i for i in m.ignored if i.field is not s.modified_time_field]
    if listed:
        add(0)
        comment(8, "Not synced: Airtable computes these (the portal cannot write them), or the")
        comment(8, "sync owns their column. To pull a computed field into a column, move it under")
        comment(8, "fields with its type (owner: airtable).")
        add(8, "ignored_fields:")
        for ignored in listed:
            note = f"{ignored.field.name}: {ignored.reason}"
            if ignored.column_hint:
                note += f"; column {ignored.column_hint} has its name"
            add(10, f"- {ignored.field.id}  # {_safe(note)}")
    if m.unmapped_columns:
        add(0)
        comment(8, f"Columns of {s.postgres.qualified} no field maps to: local-only, never read or")
        comment(8, "written by the sync.")
        for unmapped_column in m.unmapped_columns:
            note = unmapped_column.column.shown
            if unmapped_column.suggestions:
                note += f": similar Airtable fields: {', '.join(unmapped_column.suggestions)}"
            comment(8, f"  {note}")
    return "\n".join(out) + "\n"


def coverage_report(starter: Starter) -> list[str]:
    """The lines `reconcile init` prints: mapped, ignored, unmapped fields and columns,
    type mismatches."""
    s = starter
    m = s.matching

    def section(title: str, items: Sequence[str]) -> list[str]:
        lines = [f"  {title}: {len(items)}"]
        lines.extend(f"    {_safe(item)}" for item in items)
        return lines

    lines = [
        f"Airtable table {_safe(s.airtable.name)} ({s.airtable.id}) of base {s.base_id} ↔ "
        f"PostgreSQL {s.postgres.qualified}:"
    ]
    lines += section(
        "mapped",
        [f"{i.field.name} → {i.column.name} ({i.kind.value})" for i in m.mapped],
    )
    ignored = []
    for item in m.ignored:
        if item.field is s.modified_time_field:
            ignored.append(f"{item.field.name}: modified_time_field")
        else:
            ignored.append(f"{item.field.name}: {item.reason}")
    lines += section("ignored Airtable fields", ignored)
    lines += section(
        "unmapped Airtable fields",
        [
            f"{u.field.name} ({u.field.type}): {u.reason}"
            + (f"; similar columns: {', '.join(u.suggestions)}" if u.suggestions else "")
            for u in m.unmapped_fields
        ],
    )
    lines += section(
        "unmapped columns (local-only)",
        [
            c.column.shown
            + (f"; similar Airtable fields: {', '.join(c.suggestions)}" if c.suggestions else "")
            for c in m.unmapped_columns
        ],
    )
    lines += section(
        "type mismatches (left commented out)",
        [f"{x.field.name} ({x.field.type}) ↔ {x.column.shown}: {x.reason}" for x in m.mismatches],
    )
    key = f"  key column: {s.key_column.name}"
    if not s.key_column.unique:
        key += " (no unique index: add one)"
    soft = s.soft_delete_column.name if s.soft_delete_column else "none found"
    modified = s.modified_time_field.name if s.modified_time_field else "none found"
    lines.append(f"{key}; soft-delete column: {soft}; modified time field: {_safe(modified)}")
    lines.append(
        "Every field is owner: airtable; set owner: portal on the fields the portal writes "
        "(see the file's comments)."
    )
    return lines


# ----- I/O: the two sides, and the file ---------------------------------------------------

_COLUMNS_SQL = """
SELECT column_name, data_type, is_nullable = 'YES' AS nullable,
       column_default IS NOT NULL OR is_identity = 'YES' AS has_default,
       character_maximum_length, is_generated <> 'NEVER' AS generated
FROM information_schema.columns
WHERE table_schema = :schema AND table_name = :table
ORDER BY ordinal_position
"""

_UNIQUE_SQL = """
SELECT a.attname
FROM pg_index i
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
WHERE i.indrelid = to_regclass(format('%I.%I', CAST(:schema AS text), CAST(:table AS text)))
  AND i.indisunique AND i.indnkeyatts = 1 AND i.indpred IS NULL
"""

_TABLES_SQL = """
SELECT table_schema || '.' || table_name FROM information_schema.tables
WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
"""


def read_postgres_table(engine: Any, schema: str, table: str) -> PostgresTable:
    """The table's columns from information_schema (an SQLAlchemy engine; read only).

    Raises:
        InitError: no such table (the message lists similar ones).
    """
    from sqlalchemy import text

    with engine.connect() as conn:
        for candidate_schema, candidate_table in dict.fromkeys(
            [(schema, table), (schema.lower(), table.lower())]
        ):
            params = {"schema": candidate_schema, "table": candidate_table}
            rows = conn.execute(text(_COLUMNS_SQL), params).all()
            if rows:
                unique = set(conn.execute(text(_UNIQUE_SQL), params).scalars())
                return PostgresTable(
                    candidate_schema,
                    candidate_table,
                    tuple(
                        Column(
                            name=name,
                            data_type=data_type,
                            nullable=bool(nullable),
                            has_default=bool(has_default),
                            max_length=max_length,
                            unique=name in unique,
                            generated=bool(generated),
                        )
                        for name, data_type, nullable, has_default, max_length, generated in rows
                    ),
                )
        existing = list(conn.execute(text(_TABLES_SQL)).scalars())
    close = similar(f"{schema}.{table}", existing)
    hint = f" (similar: {', '.join(close)})" if close else ""
    raise InitError(
        f"PostgreSQL table {schema}.{table} was not found{hint}: create it, or pass "
        "--postgres-table schema.table naming an existing table (DATABASE_URL says which "
        "database)."
    )


def read_airtable_base(api: Any, base_id: str, max_pages: int = 10) -> tuple[str | None, list]:
    """The base's name (None when the token cannot list bases) and its tables, through a
    pyairtable `Api` (an `AirtableClient.api`). Request errors propagate."""
    tables = api.get(api.build_url("meta/bases", base_id, "tables"))["tables"]
    name = None
    try:
        for page, response in enumerate(api.iterate_requests("GET", api.build_url("meta/bases"))):
            found = next((b for b in response.get("bases", []) if b.get("id") == base_id), None)
            if found is not None:
                name = found.get("name")
                break
            if page + 1 >= max_pages:
                break
    except Exception:  # the name is a nicety: a token that cannot list bases still works
        name = None
    return name, tables


def write_file(path: Path, text: str, force: bool) -> None:
    """Write `text` to `path`; never over an existing file unless `force` (then atomically).

    Raises:
        InitError: the file exists and `force` is false.
    """
    if not force:
        try:
            with path.open("x", encoding="utf-8") as handle:
                handle.write(text)
        except FileExistsError:
            raise InitError(refuse_overwrite_message(path)) from None
        return
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def refuse_overwrite_message(path: Path) -> str:
    return f"{path} already exists: pass --force to overwrite it, or --output another file."


def airtable_failure(error: Any, base_id: str, token_env: str, endpoint_url: str) -> str:
    """One line saying what to set when the metadata API refused or could not be reached
    (`error`: an `AirtableRequestError`, its message already free of the token)."""
    status = getattr(error, "status_code", None)
    kind = getattr(error, "error_type", type(error).__name__)
    if status == 401:
        return (
            f"Airtable rejected the token in {token_env} (401 {kind}): set {token_env} to a "
            "valid personal access token (pat…) with the schema.bases:read scope."
        )
    if status in (403, 404):
        return (
            f"Airtable base {base_id} was not found, or the token in {token_env} cannot read it "
            f"({status} {kind}): check --base (the app… id in the base's URL) and give the "
            "token the schema.bases:read scope on that base."
        )
    if status is None:
        return (
            f"Airtable at {endpoint_url} could not be reached ({kind}): check "
            "AIRTABLE_ENDPOINT_URL (unset: https://api.airtable.com) and the network."
        )
    return f"Airtable's metadata API failed for base {base_id}: {_safe(str(error))}"
