"""`reconcile doctor`: everything a run needs, checked one thing at a time (DESIGN §3.10).

Each check is a pure function returning `Check`s: what was checked, whether it holds, and what
to do when it does not. `diagnose` runs them in order (project file, database, schema, each
table's PostgreSQL side, each client's Airtable side) and yields each result as it comes, so
the command can print while slow network checks run. No Dagster here; tokens are never shown
(Airtable's errors are redacted by `translate_error`).
"""

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from reconcile_pipeline.airtable.client import DEFAULT_ENDPOINT, AirtableClient, clean_token
from reconcile_pipeline.airtable.errors import AirtableConfigError, translate_error
from reconcile_pipeline.config.install import (
    UPGRADE_HINT,
    capture_differences,
    capture_problems,
    relation,
    tracked_problems,
    tracked_summary,
)
from reconcile_pipeline.config.load import CONFIG_ENV, DEFAULT_FILE, Project
from reconcile_pipeline.config.model import ClientConfig
from reconcile_pipeline.db import urls as url_tools
from reconcile_pipeline.db.migrate import current_revision, head_revision
from reconcile_pipeline.engine.mapping import TableMapping
from reconcile_pipeline.engine.repository import Repository
from reconcile_pipeline.engine.validate import (
    MappingError,
    airtable_problems,
    coverage,
    validate_postgres,
)

ENDPOINT_ENV = "AIRTABLE_ENDPOINT_URL"
TOKEN_SCOPES = "schema.bases:read, data.records:read and data.records:write"


@dataclass(frozen=True)
class Check:
    """One check's outcome: `subject` (what), `ok`, and `message` (what was found; for a
    failure, also what to do)."""

    ok: bool
    subject: str
    message: str

    def line(self, marks: tuple[str, str] = ("✓", "✗")) -> str:
        first, *rest = self.message.splitlines() or [""]
        text_ = f"{marks[0] if self.ok else marks[1]} {self.subject}: {first}"
        return "\n".join([text_, *(f"    {line}" for line in rest)])


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    message = str(orig if orig is not None else exc).strip()
    return message.splitlines()[0] if message else type(exc).__name__


# ----- the project file and the database -------------------------------------------------------


def check_project(project: Project) -> Check:
    clients = project.config.clients
    tables = sum(len(c.tables) for c in clients.values())
    found = (
        f"{project.path} is valid: {len(clients)} client{'s' * (len(clients) != 1)}, "
        f"{tables} table{'s' * (tables != 1)}"
    )
    if project.is_demo:
        found += (
            f" (the demo's, shipped with the package: set {CONFIG_ENV} or create "
            f"./{DEFAULT_FILE} to use yours)"
        )
    return Check(True, "project file", found)


def check_database(url: str, embedded: bool) -> tuple[Check, Engine | None]:
    """Whether PostgreSQL answers at `url`; the engine when it does (dispose it)."""
    source = "embedded server: DATABASE_URL is not set" if embedded else "DATABASE_URL"
    shown = url_tools.redact(url)
    engine = create_engine(url, pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        engine.dispose()
        return (
            Check(
                False,
                "database",
                f"cannot connect to {shown} ({source}): {_first_line(exc)}. Set DATABASE_URL to "
                "a reachable PostgreSQL database, or unset it to use the embedded one.",
            ),
            None,
        )
    return Check(True, "database", f"{shown} is reachable ({source})"), engine


def check_schema(engine: Engine) -> Check:
    revision, head = current_revision(engine), head_revision()
    if revision == head:
        return Check(True, "schema", f"at revision {head} (the newest)")
    found = f"at revision {revision}" if revision else "never migrated"
    return Check(False, "schema", f"{found}, this code needs {head}: {UPGRADE_HINT}")


# ----- one table's PostgreSQL side -------------------------------------------------------------


def _unique_index(engine: Engine, mapping: TableMapping) -> str | None:
    """The name of a unique index on exactly the key column (no predicate), if any."""
    qualified = Repository(engine, mapping).table_sql
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
                "JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = x.indkey[0] "
                "WHERE x.indrelid = to_regclass(:t) AND x.indisunique AND x.indpred IS NULL "
                "AND x.indnkeyatts = 1 AND a.attname = :c ORDER BY 1 LIMIT 1"
            ),
            {"t": qualified, "c": mapping.key_column},
        ).scalar_one_or_none()


def _duplicate_keys(engine: Engine, mapping: TableMapping) -> int:
    repo = Repository(engine, mapping)
    with engine.connect() as conn:
        return conn.execute(
            text(
                f"SELECT count(*) FROM (SELECT 1 FROM {repo.table_sql} "
                f"WHERE {repo.key_sql} IS NOT NULL GROUP BY {repo.key_sql} "
                "HAVING count(*) > 1) AS d"
            )
        ).scalar_one()


def check_table(engine: Engine, mapping: TableMapping) -> list[Check]:
    """The PostgreSQL side of one configured table: columns, key, soft-delete column, capture
    trigger and the columns it watches."""
    subject = f"{mapping.name} ({relation(mapping)})"
    columns = Repository(engine, mapping).postgres_column_types()
    if not columns:
        return [
            Check(
                False,
                subject,
                "the table does not exist: create it (the sync never creates portal tables) or "
                "set `postgres:` of this table in the project file",
            )
        ]
    checks = []
    try:  # the mapped columns; the soft-delete column has a line of its own below
        validate_postgres(Repository(engine, dataclasses.replace(mapping, soft_delete_column=None)))
        checks.append(
            Check(True, subject, f"the {len(mapping.fields)} mapped columns exist, types match")
        )
    except MappingError as exc:
        message = str(exc).split(": ", 1)[-1]
        checks.append(
            Check(False, subject, f"{message}: fix the table or the project file's fields")
        )

    key = mapping.key_column
    if key not in columns:
        checks.append(
            Check(
                False,
                subject,
                f"key column {key} is missing: add it (text, the Airtable record id) or set "
                "`key_column` in the project file",
            )
        )
    elif index := _unique_index(engine, mapping):
        checks.append(Check(True, subject, f"key column {key} is unique (unique index {index})"))
    elif duplicates := _duplicate_keys(engine, mapping):
        checks.append(
            Check(
                False,
                subject,
                f"key column {key} has {duplicates} value(s) on more than one row (no unique "
                "index): remove the duplicate rows, then add CREATE UNIQUE INDEX on it",
            )
        )
    else:
        checks.append(
            Check(
                True,
                subject,
                f"key column {key} has no duplicates (no unique index: CREATE UNIQUE INDEX on "
                "it keeps it so)",
            )
        )

    soft = mapping.soft_delete_column
    if soft is None:
        checks.append(
            Check(
                True,
                subject,
                "no soft-delete column declared (records deleted in Airtable are not shown to "
                "the portal)",
            )
        )
    elif columns.get(soft) == "boolean":
        checks.append(Check(True, subject, f"soft-delete column {soft} is boolean"))
    else:
        found = columns.get(soft)
        checks.append(
            Check(
                False,
                subject,
                f"soft-delete column {soft} is {found or 'missing'}, expected boolean: add it "
                "(boolean NOT NULL DEFAULT true) or fix `soft_delete_column` in the project file",
            )
        )

    if problems := capture_problems(engine, mapping):
        checks.append(
            Check(
                False,
                subject,
                f"{'; '.join(problems)}: {UPGRADE_HINT}; until then runs of this table refuse "
                "to start (its portal edits would never be pushed)",
            )
        )
    elif differences := capture_differences(engine, mapping):
        checks.append(
            Check(False, subject, f"{'; '.join(differences)}: {UPGRADE_HINT} to replace it")
        )
    else:
        checks.append(
            Check(
                True,
                subject,
                f"capture trigger installed and enabled ('{mapping.name}', '{key}')",
            )
        )
    tracked = tracked_problems(engine, mapping)
    if tracked:
        checks.append(
            Check(
                False,
                subject,
                f"the trigger watches the wrong columns: {'; '.join(tracked)}: {UPGRADE_HINT}",
            )
        )
    else:
        checks.append(
            Check(
                True,
                subject,
                f"the trigger watches exactly the mapped columns with their owners "
                f"({tracked_summary(mapping)})",
            )
        )
    return checks


# ----- one client's Airtable side --------------------------------------------------------------


def check_token(
    client_key: str,
    client: ClientConfig,
    environ: Mapping[str, str],
    emulator_url: str | None = None,
) -> tuple[Check, str | None]:
    """Whether the client's token variable holds a usable token (never shown); the token."""
    subject = f"client {client_key}"
    variable = client.token_env
    value = environ.get(variable)
    if value is None or not value.strip():
        return (
            Check(
                False,
                subject,
                f"{variable} is not set: set it to a personal access token (pat…) with the "
                f"{TOKEN_SCOPES} scopes on base {client.base_id} (the project file names "
                "this variable in `token_env`)",
            ),
            None,
        )
    try:
        token = clean_token(value, variable)
    except AirtableConfigError as exc:  # names the variable and the position, never the value
        return Check(False, subject, str(exc)), None
    if emulator_url is not None:
        message = (
            f"{variable} is not set: the embedded Airtable emulator answers (at {emulator_url}); "
            f"set {variable} to check your base"
        )
    else:
        message = f"{variable} is set (the value is not shown)"
    return Check(True, subject, message), token


def _airtable_error(exc: requests.RequestException, token: str) -> tuple[int | None, str]:
    error = translate_error(exc, secrets=(token,))
    return error.status_code, str(error)


def check_airtable(
    client_key: str,
    client: ClientConfig,
    mappings: Sequence[TableMapping],
    token: str,
    endpoint_url: str,
) -> Iterator[Check]:
    """The token is accepted, the base is reachable, each table is readable by id and has
    every mapped field with a compatible type. Stops at the first failure that makes the
    rest unknowable."""
    subject = f"client {client_key}"
    api_client = AirtableClient(
        token,
        client.base_id,
        mappings[0].airtable_table if mappings else "-",
        endpoint_url=endpoint_url,
        requests_per_second=5.0,
        timeout_seconds=15.0,
        max_retries=2,
        backoff_factor=0.5,
        backoff_max_seconds=2.0,
        fields_by_id=True,
    )
    api = api_client.api
    with contextlib.closing(api_client):
        try:
            api.get(api.build_url("meta/bases"))
        except requests.RequestException as exc:
            status, message = _airtable_error(exc, token)
            if status == 401:
                yield Check(
                    False,
                    subject,
                    f"Airtable ({endpoint_url}) rejects the token in {client.token_env} (401): "
                    f"set {client.token_env} to a valid personal access token",
                )
            elif status is None:
                yield Check(
                    False,
                    subject,
                    f"Airtable does not answer at {endpoint_url}: {message}. Check the network, "
                    f"or set {ENDPOINT_ENV} (unset means {DEFAULT_ENDPOINT})",
                )
            else:
                yield Check(
                    False,
                    subject,
                    f"Airtable ({endpoint_url}) refused to list bases with this token: {message}."
                    f" Give the token the {TOKEN_SCOPES} scopes",
                )
            return
        yield Check(True, subject, f"Airtable ({endpoint_url}) accepts the token")

        try:
            tables = api.get(api.build_url("meta/bases", client.base_id, "tables"))["tables"]
        except requests.RequestException as exc:
            _, message = _airtable_error(exc, token)
            yield Check(
                False,
                subject,
                f"base {client.base_id} is not reachable: {message}. Set the client's `base_id` "
                "in the project file to the app… id of your base, and give the token access to "
                "it",
            )
            return
        name = f" ({client.name})" if client.name else ""
        yield Check(True, subject, f"base {client.base_id}{name} is reachable")

        by_id = {t["id"]: t for t in tables}
        for mapping in mappings:
            yield from _check_airtable_table(api, client, mapping, by_id, token)


def _check_airtable_table(api, client, mapping, by_id, token) -> Iterator[Check]:
    subject = f"{mapping.name} (Airtable)"
    schema = by_id.get(mapping.airtable_table)
    if schema is None:
        available = ", ".join(f"{t['name']} ({t['id']})" for t in by_id.values()) or "none"
        yield Check(
            False,
            subject,
            f"base {client.base_id} has no table {mapping.airtable_table}: set `airtable_table` "
            f"of {mapping.name} in the project file to one of: {available}",
        )
        return
    shown = f"{schema['name']} ({schema['id']})"
    try:
        api.table(client.base_id, mapping.airtable_table).first()
    except requests.RequestException as exc:
        _, message = _airtable_error(exc, token)
        yield Check(
            False,
            subject,
            f"records of table {shown} cannot be read: {message}. Give the token the "
            f"data.records:read scope on base {client.base_id}",
        )
    else:
        yield Check(True, subject, f"table {shown} is readable")
    problems = airtable_problems(mapping, schema)
    if problems:
        yield Check(False, subject, f"table {shown}: {'; '.join(problems)}")
    else:
        report = coverage(mapping, schema.get("fields", []))
        yield Check(
            True,
            subject,
            f"all {len(mapping.fields)} mapped fields present with compatible types "
            f"({report.summary()})",
        )


# ----- everything, in order --------------------------------------------------------------------


@dataclass(frozen=True)
class Database:
    """Where the CLI found the database: a URL, or why there is none."""

    url: str | None
    embedded: bool = False
    error: str | None = None


def diagnose(
    project: Project,
    database: Database,
    environ: Mapping[str, str],
    emulator_url: str | None = None,
) -> Iterator[Check]:
    """Every check, in order. `emulator_url`: the embedded emulator answers (the demo project
    without its token: the CLI started it and exported its token)."""
    yield check_project(project)
    engine = None
    if database.url is None:
        yield Check(False, "database", database.error or "no database configured")
    else:
        check, engine = check_database(database.url, database.embedded)
        yield check
    clients = project.config.clients
    try:
        if engine is not None:
            yield check_schema(engine)
            for key in clients:
                for mapping in project.mappings(key):
                    yield from check_table(engine, mapping)
    finally:
        if engine is not None:
            engine.dispose()
    for key, client in clients.items():
        check, token = check_token(key, client, environ, emulator_url)
        yield check
        if token is None:
            continue
        endpoint = emulator_url or environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT
        yield from check_airtable(key, client, project.mappings(key), token, endpoint)
