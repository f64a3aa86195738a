"""Change capture installed from the project file (DESIGN §3.2). No Dagster here.

The capture function (`reconcile.capture_portal_change`) is versioned with the migrations; which
tables call it, and with which arguments, is configuration: `reconcile db upgrade` puts the
trigger on every table the project file declares (table key and key column as its arguments),
writes the columns it watches with their owners (`reconcile.tracked_columns`), and takes the
trigger off tables the file no longer declares. Everything is compared first and changed only
when it differs, so a second upgrade changes nothing.

`capture_problems` is what a run checks before it starts: a table without its trigger would
have its portal edits silently never pushed.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from reconcile_pipeline.config.load import ConfigError, Project
from reconcile_pipeline.db.schema_names import ORIGIN_RECONCILER, ORIGIN_SETTING
from reconcile_pipeline.engine.mapping import TableMapping
from reconcile_pipeline.engine.repository import Repository

TRIGGER_NAME = "reconcile_capture_portal_change"
FUNCTION = "reconcile.capture_portal_change"
# pg_trigger.tgtype bits (PostgreSQL's pg_trigger.h): ROW 1, BEFORE 2, INSERT 4, DELETE 8,
# UPDATE 16, TRUNCATE 32, INSTEAD 64. Ours: AFTER INSERT OR UPDATE FOR EACH ROW.
TGTYPE = 1 | 4 | 16
UPGRADE_HINT = "run `reconcile db upgrade` (with the same DATABASE_URL and project file)"
# Serialises concurrent installs (two `reconcile db upgrade` at once).
_LOCK = "reconcile_pipeline.install_capture"


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def relation(mapping: TableMapping) -> str:
    """The table as people write it (schema.table)."""
    return f"{mapping.postgres_schema}.{mapping.postgres_table}"


def trigger_name(mapping: TableMapping) -> str:
    """A table of one client has one trigger, `reconcile_capture_portal_change`; a table
    several clients share has one per client, `reconcile_capture_<client>`."""
    return TRIGGER_NAME if mapping.client_column is None else f"reconcile_capture_{mapping.client}"


def trigger_arguments(mapping: TableMapping) -> tuple[str, ...]:
    """The capture function's arguments: client, table key, key column (migration 0005)."""
    return (mapping.client, mapping.name, mapping.key_column)


def _client_condition(mapping: TableMapping) -> str:
    if mapping.client_column is None or mapping.client_value is None:
        return ""
    return f"AND (NEW.{_quote(mapping.client_column)})::text = {_literal(mapping.client_value)}"


def trigger_sql(mapping: TableMapping) -> str:
    """The CREATE TRIGGER statement for `mapping`'s table (identifiers and arguments quoted).

    The WHEN condition skips the reconciler's own writes before they queue an after-trigger
    event (migration 0002); the function checks the tag again itself. On a table several
    clients share, it also keeps each client's trigger to the rows of that client.
    """
    table = f"{_quote(mapping.postgres_schema)}.{_quote(mapping.postgres_table)}"
    arguments = ", ".join(_literal(a) for a in trigger_arguments(mapping))
    return (
        f"CREATE TRIGGER {_quote(trigger_name(mapping))} AFTER INSERT OR UPDATE ON {table} "
        f"FOR EACH ROW WHEN (current_setting({_literal(ORIGIN_SETTING)}, true) "
        f"IS DISTINCT FROM {_literal(ORIGIN_RECONCILER)} {_client_condition(mapping)}) "
        f"EXECUTE FUNCTION {FUNCTION}({arguments})"
    )


@dataclass(frozen=True)
class Trigger:
    """A capture trigger found in the database: named ours, or calling our function."""

    schema: str
    table: str
    name: str
    arguments: tuple[str, ...]
    enabled: str  # pg_trigger.tgenabled: O (on), D (disabled), R (replica only), A (always)
    tgtype: int
    calls_capture: bool  # executes reconcile.capture_portal_change
    definition: str  # pg_get_triggerdef

    @property
    def qualified_table(self) -> str:
        return f"{_quote(self.schema)}.{_quote(self.table)}"

    @property
    def scope(self) -> tuple[str, str] | None:
        """(client, table key) of the bookkeeping it writes to."""
        return (self.arguments[0], self.arguments[1]) if len(self.arguments) == 3 else None

    @property
    def table_key(self) -> str | None:
        return self.arguments[1] if len(self.arguments) == 3 else None

    def drop_sql(self) -> str:
        return f"DROP TRIGGER {_quote(self.name)} ON {self.qualified_table}"

    def differences(self, mapping: TableMapping) -> list[str]:
        """How this trigger differs from the one `trigger_sql(mapping)` creates (the enabled
        state apart)."""
        found = []
        if not self.calls_capture:
            found.append("calls another function")
        expected = trigger_arguments(mapping)
        if self.arguments != expected:
            found.append(f"has arguments {_shown(self.arguments)}, expected {_shown(expected)}")
        if self.tgtype != TGTYPE:
            found.append("does not fire AFTER INSERT OR UPDATE FOR EACH ROW")
        if "WHEN (" not in self.definition or _literal(ORIGIN_SETTING) not in self.definition:
            found.append("lacks the WHEN condition on reconcile.origin")
        if mapping.client_value is not None and (
            _literal(mapping.client_value) not in self.definition
            or mapping.client_column not in self.definition
        ):
            found.append(f"does not keep to the rows of client {mapping.client}")
        return found


def _other_client(trigger: Trigger, mapping: TableMapping) -> bool:
    return trigger.scope is not None and trigger.scope[0] != mapping.client


def _shown(arguments: Sequence[str]) -> str:
    return "(" + ", ".join(_literal(a) for a in arguments) + ")"


_TRIGGERS = """
SELECT n.nspname, c.relname, t.tgname, t.tgnargs, t.tgargs, t.tgenabled, t.tgtype,
       t.tgfoid = CAST(to_regproc(:function) AS oid) AS calls_capture,
       pg_get_triggerdef(t.oid) AS definition
  FROM pg_trigger t
  JOIN pg_class c ON c.oid = t.tgrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE NOT t.tgisinternal
   AND (t.tgname = :name OR t.tgfoid = CAST(to_regproc(:function) AS oid))
"""


def _triggers(conn: Connection, schema: str | None = None, table: str | None = None) -> list:
    """Triggers named ours or calling our function (on one table when given)."""
    sql = _TRIGGERS
    params = {"function": FUNCTION, "name": TRIGGER_NAME}
    if schema is not None:
        sql += " AND n.nspname = :schema AND c.relname = :table"
        params |= {"schema": schema, "table": table}
    rows = conn.execute(text(sql + " ORDER BY 1, 2, 3"), params).all()
    return [
        Trigger(
            schema=row.nspname,
            table=row.relname,
            name=row.tgname,
            arguments=tuple(
                a.decode("utf-8") for a in bytes(row.tgargs).split(b"\x00")[: row.tgnargs]
            ),
            enabled=str(row.tgenabled),
            tgtype=int(row.tgtype),
            calls_capture=bool(row.calls_capture),
            definition=row.definition,
        )
        for row in rows
    ]


def _function_exists(conn: Connection) -> bool:
    return conn.execute(text("SELECT to_regproc(:f) IS NOT NULL"), {"f": FUNCTION}).scalar_one()


def _table_columns(conn: Connection, mapping: TableMapping) -> set[str] | None:
    """The columns of `mapping`'s table, or None when it is not an ordinary or partitioned
    table (absent, or a view)."""
    kind = conn.execute(
        text(
            "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :s AND c.relname = :t"
        ),
        {"s": mapping.postgres_schema, "t": mapping.postgres_table},
    ).scalar_one_or_none()
    if kind not in ("r", "p"):
        return None
    return set(
        conn.execute(
            text(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = :s AND table_name = :t"
            ),
            {"s": mapping.postgres_schema, "t": mapping.postgres_table},
        ).scalars()
    )


def _tracked(conn: Connection, mapping: TableMapping) -> dict[str, str]:
    if conn.execute(text("SELECT to_regclass('reconcile.tracked_columns')")).scalar() is None:
        return {}
    rows = conn.execute(
        text(
            "SELECT column_name, owner FROM reconcile.tracked_columns "
            "WHERE client = :c AND table_key = :t"
        ),
        {"c": mapping.client, "t": mapping.name},
    ).all()
    return {name: owner for name, owner in rows}


def _expected_tracked(mapping: TableMapping) -> dict[str, str]:
    return {spec.column: spec.owner.value for spec in mapping.fields}


# ----- checks (a run's gate, and `reconcile doctor`) ------------------------------------------


def capture_problems(engine: Engine, mapping: TableMapping) -> list[str]:
    """Why `mapping`'s table would not capture portal edits: its trigger is missing, has the
    wrong arguments, or is disabled. Empty when it captures them. (A trigger that differs in
    other ways still captures; `install_capture` replaces it, `reconcile doctor` reports it.)"""
    where = relation(mapping)
    with engine.connect() as conn:
        if not _function_exists(conn):
            return [
                f"the capture function {FUNCTION} is missing (the database schema is not migrated)"
            ]
        if _table_columns(conn, mapping) is None:
            return [
                f"the capture trigger is missing on {where}, which is not a table of the "
                "database (create it first)"
            ]
        found = next(
            (
                t
                for t in _triggers(conn, mapping.postgres_schema, mapping.postgres_table)
                if t.name == trigger_name(mapping)
            ),
            None,
        )
    if found is None:
        return [f"the capture trigger is missing on {where}"]
    problems = []
    expected = trigger_arguments(mapping)
    if found.arguments != expected:
        problems.append(
            f"the capture trigger on {where} has the wrong arguments {_shown(found.arguments)}, "
            f"expected {_shown(expected)}"
        )
    if found.enabled == "D":
        problems.append(f"the capture trigger on {where} is disabled")
    elif found.enabled == "R":
        problems.append(
            f"the capture trigger on {where} fires only in replica sessions (ENABLE REPLICA)"
        )
    return problems


def capture_differences(engine: Engine, mapping: TableMapping) -> list[str]:
    """How the trigger on `mapping`'s table differs from what `install_capture` creates, beyond
    `capture_problems` (another function, other events, no WHEN condition), and other triggers
    on it calling the capture function (each would count an edit again)."""
    with engine.connect() as conn:
        if not _function_exists(conn):
            return []
        triggers = _triggers(conn, mapping.postgres_schema, mapping.postgres_table)
    where = relation(mapping)
    found = [
        f"the capture trigger on {where} {difference}"
        for trigger in triggers
        if trigger.name == trigger_name(mapping)
        for difference in trigger.differences(mapping)
        if not difference.startswith("has arguments")  # capture_problems says it
    ]
    found += [
        f"another trigger on {where}, {trigger.name}, also calls {FUNCTION} (an edit would "
        "count twice)"
        for trigger in triggers
        if trigger.name != trigger_name(mapping)
        and trigger.calls_capture
        # On a shared table, the other clients' triggers are theirs.
        and not (mapping.client_column is not None and _other_client(trigger, mapping))
    ]
    return found


def tracked_problems(engine: Engine, mapping: TableMapping) -> list[str]:
    """How the columns the trigger watches for `mapping`'s table differ from the mapped
    columns and their owners (reconcile.tracked_columns)."""
    with engine.connect() as conn:
        actual = _tracked(conn, mapping)
    expected = _expected_tracked(mapping)
    problems = []
    missing = sorted(set(expected) - set(actual))
    if missing:
        problems.append(f"mapped columns not watched: {', '.join(missing)}")
    extra = sorted(set(actual) - set(expected))
    if extra:
        problems.append(f"watched columns no longer mapped: {', '.join(extra)}")
    for column in sorted(set(expected) & set(actual)):
        if expected[column] != actual[column]:
            problems.append(
                f"{column} is watched as {actual[column]}-owned, the project file says "
                f"{expected[column]}"
            )
    return problems


def tracked_summary(mapping: TableMapping) -> str:
    portal = len(mapping.portal_fields)
    return f"{len(mapping.fields)} mapped columns, {portal} portal-owned"


# ----- installation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TableInstall:
    """What `install_capture` did for one table."""

    table_key: str
    relation: str
    trigger: str  # installed, replaced (why), re-enabled, unchanged, removed, not installed
    tracked: str  # what happened to its tracked columns
    tracked_changed: bool = False
    problem: str | None = None  # set when the table could not be installed

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def changed(self) -> bool:
        return self.problem is None and (self.trigger != "unchanged" or self.tracked_changed)

    def line(self) -> str:
        if self.problem is not None:
            return f"{self.table_key} ({self.relation}): NOT INSTALLED: {self.problem}"
        return f"{self.table_key} ({self.relation}): capture trigger {self.trigger}; {self.tracked}"


@dataclass
class InstallReport:
    tables: list[TableInstall] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tables)

    @property
    def changed(self) -> bool:
        return any(t.changed for t in self.tables)

    def lines(self) -> list[str]:
        return [t.line() for t in self.tables]


def project_mappings(project: Project) -> list[TableMapping]:
    """Every table of every client of the project file, as engine mappings."""
    mappings = project.all_mappings()
    _check_distinct(mappings, str(project.path))
    return mappings


def _check_distinct(mappings: Iterable[TableMapping], source: str = "the project file") -> None:
    """Each (client, table key) once; a PostgreSQL table shared only by clients that each
    tell their rows apart with a client column (the project file's schema checks the rest)."""
    keys: dict[tuple[str, str], TableMapping] = {}
    tables: dict[tuple[str, str], list[TableMapping]] = {}
    for mapping in mappings:
        scope = (mapping.client, mapping.name)
        if scope in keys:
            raise ConfigError(
                f"{source}: client {mapping.client!r} declares table key {mapping.name!r} twice"
            )
        keys[scope] = mapping
        tables.setdefault((mapping.postgres_schema, mapping.postgres_table), []).append(mapping)
    for sharing in tables.values():
        if len(sharing) < 2:
            continue
        if any(m.client_column is None for m in sharing) or len({m.client for m in sharing}) < len(
            sharing
        ):
            first, second = sharing[0], sharing[1]
            raise ConfigError(
                f"{source}: {first.client}.{first.name} and {second.client}.{second.name} both "
                f"sync {relation(first)}: a table several clients share needs "
                "postgres.client_column on each (and one table per client)"
            )


def _label(mapping: TableMapping, clients: set[str]) -> str:
    return mapping.name if len(clients) == 1 else f"{mapping.client}.{mapping.name}"


def _install_problem(conn: Connection, mapping: TableMapping) -> str | None:
    columns = _table_columns(conn, mapping)
    if columns is None:
        return (
            f"{relation(mapping)} is not a table of this database: create it (the sync never "
            "creates portal tables) or fix `postgres:` in the project file, then run "
            "`reconcile db upgrade` again"
        )
    if mapping.key_column not in columns:
        return (
            f"key column {mapping.key_column} is missing from {relation(mapping)}: add it (text, "
            "holding the Airtable record id) or fix `key_column` in the project file"
        )
    if mapping.client_column is not None and mapping.client_column not in columns:
        return (
            f"client column {mapping.client_column} is missing from {relation(mapping)}: add "
            "it or fix `client_column` in the project file"
        )
    return None


def install_capture(engine: Engine, mappings: Sequence[TableMapping]) -> InstallReport:
    """Install change capture for exactly `mappings` (a project file's tables), idempotently.

    - Each table gets its trigger (`trigger_name`: one per table, or one per client on a table
      several clients share) calling `reconcile.capture_portal_change('<client>', '<table
      key>', '<key column>')`; one that differs is replaced, a disabled one enabled, an
      identical one left alone.
    - `reconcile.tracked_columns` for the client's table key becomes every mapped column with
      its owner.
    - Triggers calling the capture function anywhere else (a table no longer configured, a
      second trigger on a configured one) are dropped, and the tracked columns of (client,
      table key) pairs no longer configured deleted.

    A table that does not exist, or lacks its key column, is reported and skipped; the others
    are installed. The DDL runs in one transaction under an advisory lock; tracked columns are
    written after it. Needs the schema migrated (the capture function exists).
    """
    _check_distinct(mappings)
    clients = {m.client for m in mappings}
    report = InstallReport()
    installable: list[TableMapping] = []
    dropped: set[tuple[str, str]] = set()
    removed: list[Trigger] = []
    expected_triggers = {
        (m.postgres_schema, m.postgres_table, trigger_name(m)): m for m in mappings
    }
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:lock))"), {"lock": _LOCK})
        if not _function_exists(conn):
            raise ConfigError(
                f"The capture function {FUNCTION} does not exist: the database schema is not "
                "migrated (`reconcile db upgrade` migrates it first)."
            )
        triggers = _triggers(conn)
        configured = {(m.postgres_schema, m.postgres_table) for m in mappings}
        for mapping in mappings:
            label = _label(mapping, clients)
            problem = _install_problem(conn, mapping)
            if problem is not None:
                report.tables.append(
                    TableInstall(label, relation(mapping), "not installed", "", False, problem)
                )
                continue
            installable.append(mapping)
            name = trigger_name(mapping)
            current = next(
                (
                    t
                    for t in triggers
                    if (t.schema, t.table, t.name)
                    == (mapping.postgres_schema, mapping.postgres_table, name)
                ),
                None,
            )
            if current is None:
                conn.execute(text(trigger_sql(mapping)))
                action = "installed"
            elif differences := current.differences(mapping):
                conn.execute(text(current.drop_sql()))
                conn.execute(text(trigger_sql(mapping)))
                action = f"replaced (it {'; it '.join(differences)})"
                if current.scope and current.scope != (mapping.client, mapping.name):
                    dropped.add(current.scope)
            elif current.enabled not in ("O", "A"):
                conn.execute(
                    text(f"ALTER TABLE {current.qualified_table} ENABLE TRIGGER {_quote(name)}")
                )
                action = "re-enabled (it was disabled)"
            else:
                action = "unchanged"
            report.tables.append(TableInstall(label, relation(mapping), action, ""))
        for trigger in triggers:
            if (trigger.schema, trigger.table, trigger.name) in expected_triggers:
                continue  # handled above
            if not trigger.calls_capture:
                continue  # named like ours but not ours: not ours to drop
            conn.execute(text(trigger.drop_sql()))
            removed.append(trigger)
            if trigger.scope:
                dropped.add(trigger.scope)
    tracked = {_label(m, clients): _register_tracked(engine, m) for m in installable}
    configured_scopes = {(m.client, m.name) for m in mappings}
    deleted = _delete_tracked(engine, dropped - configured_scopes)
    report.tables = [
        TableInstall(t.table_key, t.relation, t.trigger, *tracked.get(t.table_key, ("", False)))
        if t.ok
        else t
        for t in report.tables
    ]
    for trigger in removed:
        scope = trigger.scope
        key = "?" if scope is None else (scope[1] if len(clients) == 1 else ".".join(scope))
        if (trigger.schema, trigger.table) not in configured:
            action = "removed (the table is no longer in the project file)"
        else:
            action = f"{trigger.name} removed (a second trigger calling {FUNCTION})"
        count = deleted.pop(scope, 0) if scope else 0
        report.tables.append(
            TableInstall(
                key,
                f"{trigger.schema}.{trigger.table}",
                action,
                f"{count} tracked columns deleted" if count else "no tracked columns to delete",
                bool(count),
            )
        )
    return report


def _register_tracked(engine: Engine, mapping: TableMapping) -> tuple[str, bool]:
    """Write the table's tracked columns when they differ; say what changed, and whether."""
    expected = _expected_tracked(mapping)
    with engine.connect() as conn:
        before = _tracked(conn, mapping)
    if before == expected:
        return f"tracked columns unchanged ({tracked_summary(mapping)})", False
    Repository(engine, mapping).register_tracked_columns()
    added = len(set(expected) - set(before))
    removed = len(set(before) - set(expected))
    reowned = sum(1 for c in set(expected) & set(before) if expected[c] != before[c])
    parts = [
        f"{n} {what}"
        for n, what in ((added, "added"), (reowned, "owner changed"), (removed, "removed"))
        if n
    ]
    return f"tracked columns written: {', '.join(parts)} ({tracked_summary(mapping)})", True


def _delete_tracked(engine: Engine, scopes: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
    if not scopes:
        return {}
    ordered = sorted(scopes)
    with engine.begin() as conn:
        rows = conn.execute(
            text(
                "DELETE FROM reconcile.tracked_columns t USING unnest(CAST(:clients AS text[]), "
                "CAST(:keys AS text[])) AS gone(client, table_key) "
                "WHERE t.client = gone.client AND t.table_key = gone.table_key "
                "RETURNING t.client, t.table_key"
            ),
            {"clients": [c for c, _ in ordered], "keys": [k for _, k in ordered]},
        ).all()
        counts: dict[tuple[str, str], int] = {}
        for client, key in rows:
            counts[(client, key)] = counts.get((client, key), 0) + 1
    return counts
