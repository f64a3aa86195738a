"""The typed schema of the project file.

Clients (one Airtable base each, and the *name* of the environment variable holding its token),
their synced tables (Airtable table id, PostgreSQL schema/table/key/soft-delete column) and the
fields, keyed by Airtable field id (names are for display), so renames in Airtable change
nothing. Unknown keys are errors: a typo must not silently fall back to a default.
"""

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from reconcile_pipeline.engine.mapping import ConflictPolicy, FieldKind, Owner

FIELD_ID = re.compile(r"^fld[A-Za-z0-9]{14}$")
TABLE_ID = re.compile(r"^tbl[A-Za-z0-9]{14}$")
BASE_ID = re.compile(r"^app[A-Za-z0-9]{14}$")
KEY = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# A client key names its trigger (reconcile_capture_<client>, 63 bytes at most) and prefixes its
# asset keys, jobs and pools.
CLIENT_KEY = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class FieldConfig(_Strict):
    """One synced field, keyed in the file by its Airtable field id."""

    name: str = Field(description="Airtable's name for the field (display only).")
    column: str = Field(description="The PostgreSQL column it syncs with.")
    type: FieldKind = Field(description="How values convert: text, integer, float, ...")
    owner: Owner = Owner.AIRTABLE
    policy: ConflictPolicy = ConflictPolicy.AIRTABLE_WINS
    required: bool = False
    max_length: int | None = Field(default=None, gt=0)
    choices: list[str] | None = Field(
        default=None,
        description="Restrict a select to these options (default: the options Airtable's "
        "schema has at run time).",
    )
    links_to: str | None = Field(
        default=None,
        description="type link: the key of the synced table whose record it links to (synced "
        "first; the link is stored as that row's key).",
    )

    @model_validator(mode="after")
    def _coherent(self) -> "FieldConfig":
        if self.policy is ConflictPolicy.MERGE_LINES and self.type is not FieldKind.TEXT:
            raise ValueError("policy merge_lines needs type text")
        if self.policy is not ConflictPolicy.AIRTABLE_WINS and self.owner is not Owner.PORTAL:
            raise ValueError(
                "a conflict policy only applies to portal-owned fields (set owner: portal)"
            )
        if self.choices is not None and self.type is not FieldKind.SELECT:
            raise ValueError("choices only apply to type select")
        if (self.type is FieldKind.LINK) != (self.links_to is not None):
            raise ValueError("type link needs links_to (a table key), and only links have one")
        if self.type is FieldKind.LINK and self.owner is Owner.PORTAL:
            raise ValueError("links are pulled only (owner: airtable) in this version")
        if self.type is FieldKind.ATTACHMENTS and self.owner is Owner.PORTAL:
            raise ValueError(
                "attachments are pulled only (owner: airtable): files are not pushed to Airtable"
            )
        return self


class PostgresTableConfig(_Strict):
    schema_name: str = Field(default="public", alias="schema")
    table: str
    key_column: str = "airtable_record_id"
    soft_delete_column: str | None = Field(
        default=None,
        description="A boolean column the sync sets false when the record is deleted in "
        "Airtable and true when it reappears (e.g. is_active).",
    )
    client_column: str | None = Field(
        default=None,
        description="A column naming the client each row belongs to (e.g. client_id), for a "
        "table several clients share: the sync fills it with the client's portal_client_id on "
        "the rows it inserts and reads, sweeps and captures only that client's rows.",
    )


class TableConfig(_Strict):
    """One synced table, keyed in the file by the name of its bookkeeping (e.g. `leads`)."""

    airtable_table: str = Field(description="The tbl… id of the Airtable table.")
    name: str | None = Field(default=None, description="Airtable's name (display only).")
    postgres: PostgresTableConfig
    modified_time_field: str | None = Field(
        default=None,
        description="The fld… id of a lastModifiedTime field: an older snapshot then never "
        "overwrites a newer one.",
    )
    fields: dict[str, FieldConfig]
    ignored_fields: list[str] = Field(
        default_factory=list,
        description="Airtable field ids deliberately not synced (coverage lists them apart).",
    )

    @field_validator("airtable_table")
    @classmethod
    def _table_id(cls, value: str) -> str:
        if not TABLE_ID.match(value):
            raise ValueError(f"{value!r} is not an Airtable table id (tbl followed by 14 letters)")
        return value

    @field_validator("fields")
    @classmethod
    def _field_ids(cls, fields: dict[str, FieldConfig]) -> dict[str, FieldConfig]:
        bad = [key for key in fields if not FIELD_ID.match(key)]
        if bad:
            raise ValueError(
                f"fields are keyed by Airtable field id (fld followed by 14 letters), not {bad}"
            )
        if not fields:
            raise ValueError("a table needs at least one field")
        columns = [f.column for f in fields.values()]
        doubled = sorted({c for c in columns if columns.count(c) > 1})
        if doubled:
            raise ValueError(f"columns mapped twice: {doubled}")
        return fields

    @model_validator(mode="after")
    def _soft_delete_not_mapped(self) -> "TableConfig":
        column = self.postgres.soft_delete_column
        if column is not None and column in {f.column for f in self.fields.values()}:
            raise ValueError(
                f"soft_delete_column {column} is also a mapped field's column: the sync owns it"
            )
        client_column = self.postgres.client_column
        if client_column is not None and client_column in {f.column for f in self.fields.values()}:
            raise ValueError(
                f"client_column {client_column} is also a mapped field's column: the sync fills "
                "it from the client's portal_client_id (drop the field, or sync it elsewhere)"
            )
        if self.modified_time_field is not None and not FIELD_ID.match(self.modified_time_field):
            raise ValueError("modified_time_field must be an Airtable field id (fld…)")
        return self


class ClientConfig(_Strict):
    """One client: one Airtable base."""

    name: str | None = None
    base_id: str
    portal_client_id: str | None = Field(
        default=None,
        description="The value of `client_column` on this client's rows of a shared portal "
        "table (default: the client's key).",
    )
    workspace: str | None = Field(
        default=None,
        description="The Airtable workspace of the base: clients naming the same one share its "
        "monthly API calls (default: the client's key, a workspace of its own).",
    )
    api_calls_per_month: int = Field(
        default=100_000,
        gt=0,
        description="The workspace plan's monthly API calls (Free 1,000; Team 100,000): the "
        "airtable_api_budget check warns at 80% and the schedule slows down instead of "
        "exceeding it.",
    )
    token_env: str = Field(
        default="AIRTABLE_API_KEY",
        description="The NAME of the environment variable holding the base's token (never the "
        "token itself).",
    )
    tables: dict[str, TableConfig]

    @field_validator("base_id")
    @classmethod
    def _base_id(cls, value: str) -> str:
        if not BASE_ID.match(value):
            raise ValueError(f"{value!r} is not an Airtable base id (app followed by 14 letters)")
        return value

    @field_validator("token_env")
    @classmethod
    def _token_env(cls, value: str) -> str:
        if value.startswith(("pat", "key")) and "." in value:
            raise ValueError(
                "token_env holds the NAME of an environment variable, never the token itself"
            )
        if not ENV_NAME.match(value):
            raise ValueError(
                f"{value!r} is not an environment variable name (e.g. AIRTABLE_API_KEY)"
            )
        return value

    @field_validator("tables")
    @classmethod
    def _table_keys(cls, tables: dict[str, TableConfig]) -> dict[str, TableConfig]:
        bad = [key for key in tables if not KEY.match(key)]
        if bad:
            raise ValueError(f"table keys must be lower_snake_case names, not {bad}")
        if not tables:
            raise ValueError("a client needs at least one table")
        for key, table in tables.items():
            for field_id, field in table.fields.items():
                if field.links_to is not None and field.links_to not in tables:
                    raise ValueError(
                        f"{key}.fields.{field_id}.links_to: {field.links_to!r} is not a table "
                        f"of this client ({', '.join(tables)})"
                    )
        dependency_order(tables)  # raises on a cycle
        return tables


def dependency_order(tables: dict[str, "TableConfig"]) -> list[str]:
    """Table keys, each after the tables it links to (the file's order otherwise)."""
    done: list[str] = []
    visiting: set[str] = set()

    def visit(key: str, path: tuple[str, ...]) -> None:
        if key in done:
            return
        if key in visiting:
            raise ValueError(f"links form a cycle: {' → '.join((*path, key))}")
        visiting.add(key)
        for field in tables[key].fields.values():
            if field.links_to is not None and field.links_to != key:
                visit(field.links_to, (*path, key))
        visiting.discard(key)
        done.append(key)

    for key in tables:
        visit(key, ())
    return done


class ProjectConfig(_Strict):
    version: Literal[1] = 1
    partitions_start: datetime | None = Field(
        default=None,
        description="The first reconcile window (UTC when no zone is given); default: the day "
        "of the first run this database recorded (README \"Partitions\").",
    )
    clients: dict[str, ClientConfig]

    @field_validator("clients")
    @classmethod
    def _client_keys(cls, clients: dict[str, ClientConfig]) -> dict[str, ClientConfig]:
        bad = [key for key in clients if not CLIENT_KEY.match(key)]
        if bad:
            raise ValueError(
                f"client keys must be lower_snake_case names of at most 40 characters, not {bad}"
            )
        if not clients:
            raise ValueError("declare at least one client")
        shared_tables(clients)  # raises when clients share a table without telling rows apart
        return clients


def portal_client_id(key: str, client: ClientConfig) -> str:
    return client.portal_client_id if client.portal_client_id is not None else key


def shared_tables(clients: dict[str, ClientConfig]) -> dict[tuple[str, str], list[str]]:
    """PostgreSQL tables more than one client syncs, with the clients; raises unless every
    client of a shared table declares the same `client_column` and key column, a distinct
    `portal_client_id`, and the same table key (the capture trigger's argument)."""
    users: dict[tuple[str, str], list[tuple[str, str, TableConfig]]] = {}
    for client_key, client in clients.items():
        for table_key, table in client.tables.items():
            where = (table.postgres.schema_name, table.postgres.table)
            users.setdefault(where, []).append((client_key, table_key, table))
    shared: dict[tuple[str, str], list[str]] = {}
    for (schema, name), entries in users.items():
        if len(entries) < 2:
            continue
        where = f"{schema}.{name}"
        owners = [c for c, _, _ in entries]
        if len(set(owners)) < len(owners):
            raise ValueError(f"client {owners[0]!r} syncs {where} twice")
        columns = {t.postgres.client_column for _, _, t in entries}
        if None in columns or len(columns) != 1:
            raise ValueError(
                f"clients {', '.join(owners)} share {where}: each must set the same "
                "postgres.client_column (the column telling their rows apart, e.g. client_id)"
            )
        if len({t.postgres.key_column for _, _, t in entries}) != 1:
            raise ValueError(f"clients {', '.join(owners)} share {where} with different key_column")
        values = [portal_client_id(c, clients[c]) for c in owners]
        if len(set(values)) != len(values):
            raise ValueError(
                f"clients {', '.join(owners)} share {where} with the same portal_client_id"
            )
        shared[(schema, name)] = owners
    return shared
