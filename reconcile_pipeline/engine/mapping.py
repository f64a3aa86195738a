"""The declarative field mapping: one place that says what is synced, how, and who owns it.

Mappings come from the project file (`config/load.py`); tests may build them in code. Each
field declares its Airtable field (id or name) and type, its PostgreSQL column and type, its
owner, whether it is required, and (for portal-owned fields) the conflict policy applied when
both sides changed it since they agreed.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class Owner(StrEnum):
    AIRTABLE = "airtable"  # pulled only; the portal never writes it
    PORTAL = "portal"  # written by the portal, pushed; also pulled (Airtable wins conflicts)


class ConflictPolicy(StrEnum):
    AIRTABLE_WINS = "airtable_wins"
    MERGE_LINES = "merge_lines"  # keep both sides' appended lines (notes)


class FieldKind(StrEnum):
    """How a value is converted; several Airtable types share one kind."""

    TEXT = "text"
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    DATE = "date"
    DATETIME = "datetime"
    SELECT = "select"
    JSON = "json"  # multipleSelects, linked records, attachments: stored as jsonb
    # Attachments as stable [{id, filename, size, type}], never Airtable's expiring URLs.
    ATTACHMENTS = "attachments"
    # A link to one record of another synced table, stored as that row's key (never a list).
    LINK = "link"


# Airtable types accepted for each kind (read-only computed types are Airtable-owned only).
AIRTABLE_TYPES: dict[FieldKind, frozenset[str]] = {
    FieldKind.TEXT: frozenset(
        {
            "singleLineText",
            "multilineText",
            "richText",
            "email",
            "url",
            "phoneNumber",
            "formula",
            "autoNumber",
        }
    ),
    FieldKind.INTEGER: frozenset({"number", "autoNumber", "count", "rating", "formula"}),
    FieldKind.FLOAT: frozenset({"number", "currency", "percent", "duration", "formula"}),
    FieldKind.BOOLEAN: frozenset({"checkbox", "formula"}),
    FieldKind.DATE: frozenset({"date", "formula"}),
    FieldKind.DATETIME: frozenset({"dateTime", "createdTime", "lastModifiedTime", "formula"}),
    FieldKind.SELECT: frozenset({"singleSelect"}),
    FieldKind.JSON: frozenset(
        {"multipleSelects", "multipleRecordLinks", "multipleAttachments", "multipleLookupValues"}
    ),
    FieldKind.ATTACHMENTS: frozenset({"multipleAttachments"}),
    FieldKind.LINK: frozenset({"multipleRecordLinks"}),
}

# PostgreSQL column types (information_schema.columns.data_type) accepted for each kind.
POSTGRES_TYPES: dict[FieldKind, frozenset[str]] = {
    FieldKind.TEXT: frozenset({"text", "character varying", "character"}),
    FieldKind.INTEGER: frozenset({"integer", "bigint", "smallint", "numeric"}),
    FieldKind.FLOAT: frozenset({"double precision", "real", "numeric"}),
    FieldKind.BOOLEAN: frozenset({"boolean"}),
    FieldKind.DATE: frozenset({"date"}),
    FieldKind.DATETIME: frozenset({"timestamp with time zone"}),
    FieldKind.SELECT: frozenset({"text", "character varying"}),
    FieldKind.JSON: frozenset({"jsonb", "json"}),
    FieldKind.ATTACHMENTS: frozenset({"jsonb", "json"}),
    FieldKind.LINK: frozenset({"text", "character varying"}),
}

# The SQL type used to read staged JSON rows back into typed values (jsonb_to_recordset).
STAGING_SQL_TYPES: dict[FieldKind, str] = {
    FieldKind.TEXT: "text",
    FieldKind.INTEGER: "bigint",
    FieldKind.FLOAT: "double precision",
    FieldKind.BOOLEAN: "boolean",
    FieldKind.DATE: "date",
    FieldKind.DATETIME: "timestamptz",
    FieldKind.SELECT: "text",
    FieldKind.JSON: "jsonb",
    FieldKind.ATTACHMENTS: "jsonb",
    FieldKind.LINK: "text",
}


@dataclass(frozen=True)
class LinkTarget:
    """Where a link field's linked rows live: their table and key column in PostgreSQL."""

    schema: str
    table: str
    key_column: str


@dataclass(frozen=True)
class FieldSpec:
    """One synced field."""

    airtable_name: str
    column: str
    kind: FieldKind
    owner: Owner = Owner.AIRTABLE
    required: bool = False
    policy: ConflictPolicy = ConflictPolicy.AIRTABLE_WINS
    max_length: int | None = None  # for text: longer values are quarantined, never truncated
    choices: frozenset[str] | None = None  # for selects: other options are quarantined
    # Airtable's name, when `airtable_name` holds the field id (a project file's mapping):
    # messages show it, API payloads use the id (renames in Airtable change nothing).
    label: str | None = None
    # For links: the linked synced table (its key, and where its rows live in PostgreSQL).
    links_to: str | None = None
    link_target: "LinkTarget | None" = None

    @property
    def portal_owned(self) -> bool:
        return self.owner is Owner.PORTAL

    @property
    def display(self) -> str:
        """The field as people know it: its name (and id when it is addressed by id)."""
        if self.label and self.label != self.airtable_name:
            return f"{self.label} ({self.airtable_name})"
        return self.airtable_name


@dataclass(frozen=True)
class TableMapping:
    """A synced table: the Airtable table, the PostgreSQL table and key, and the fields."""

    name: str  # the table key used in the reconciler's bookkeeping
    airtable_table: str
    postgres_table: str
    fields: tuple[FieldSpec, ...]
    postgres_schema: str = "public"
    key_column: str = "airtable_record_id"
    # An Airtable lastModifiedTime field, when the table has one: recorded per record so that an
    # older snapshot never overwrites a newer one (same clock, so comparing is sound).
    modified_time_field: str | None = None
    # A boolean column of the portal table that shows the portal whether the record still
    # exists in Airtable (the seeds' `is_active`): false once the record is deleted there, true
    # again when it reappears. Never a mapped field (the sync owns it). None: not shown.
    soft_delete_column: str | None = None
    ignored_airtable_fields: frozenset[str] = field(default_factory=frozenset)
    # True when fields are addressed by Airtable field id (records are requested keyed by id).
    fields_by_id: bool = False
    airtable_table_name: str | None = None  # Airtable's name of the table, for display
    # The client (one Airtable base) this table belongs to: with `name`, the key of every row of
    # the reconciler's bookkeeping, so two clients syncing tables of the same name never meet.
    client: str = "default"
    # A portal table several clients share: the column telling their rows apart and this
    # client's value in it. The sync fills it on the rows it inserts and reads, sweeps and
    # captures only the rows holding `client_value`. None: the table is this client's alone.
    client_column: str | None = None
    client_value: str | None = None

    def __post_init__(self) -> None:
        columns = [f.column for f in self.fields]
        if len(set(columns)) != len(columns):
            raise ValueError(f"Mapping {self.name}: a PostgreSQL column is mapped twice")
        names = [f.airtable_name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"Mapping {self.name}: an Airtable field is mapped twice")
        if (self.client_column is None) != (self.client_value is None):
            raise ValueError(f"Mapping {self.name}: client_column and client_value go together")
        if self.client_column is not None and self.client_column in columns:
            raise ValueError(
                f"Mapping {self.name}: the client column {self.client_column} is also a mapped "
                "field; the sync fills it from the client's declaration"
            )
        if self.soft_delete_column is not None and self.soft_delete_column in columns:
            raise ValueError(
                f"Mapping {self.name}: the soft-delete column {self.soft_delete_column} is also "
                "a mapped field; the sync owns it: map the Airtable field elsewhere or not at all"
            )

    @property
    def link_fields(self) -> tuple[FieldSpec, ...]:
        return tuple(f for f in self.fields if f.kind is FieldKind.LINK)

    @property
    def portal_fields(self) -> tuple[FieldSpec, ...]:
        return tuple(f for f in self.fields if f.portal_owned)

    @property
    def airtable_field_names(self) -> list[str]:
        names = [f.airtable_name for f in self.fields]
        if self.modified_time_field and self.modified_time_field not in names:
            names.append(self.modified_time_field)
        return names

    def by_column(self) -> Mapping[str, FieldSpec]:
        return {f.column: f for f in self.fields}
