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

from reconcile_pipeline.config.load import ConfigError, Project, table_mapping
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


def trigger_sql(mapping: TableMapping) -> str:
    """The CREATE TRIGGER statement for `mapping`'s table (identifiers and arguments quoted).

    The WHEN condition skips the reconciler's own writes before they queue an after-trigger
    event (migration 0002); the function checks the tag again itself.
    """
    table = f"{_quote(mapping.postgres_schema)}.{_quote(mapping.postgres_table)}"
    return (
        f"CREATE TRIGGER {_quote(TRIGGER_NAME)} AFTER INSERT OR UPDATE ON {table} "
        f"FOR EACH ROW WHEN (current_setting({_literal(ORIGIN_SETTING)}, true) "
        f"IS DISTINCT FROM {_literal(ORIGIN_RECONCILER)}) "
        f"EXECUTE FUNCTION {FUNCTION}({_literal(mapping.name)}, {_literal(mapping.key_column)})"
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
    def table_key(self) -> str | None:
        return self.arguments[0] if self.arguments else None

    def drop_sql(self) -> str:
        return f"DROP TRIGGER {_quote(self.name)} ON {self.qualified_table}"

    def differences(self, mapping: TableMapping) -> list[str]:
        """How this trigger differs from the one `trigger_sql(mapping)` creates (the enabled
        state apart)."""
        found = []
        if not self.calls_capture:
            found.append("calls another function")
        expected = (mapping.name, mapping.key_column)
        if self.arguments != expected:
            found.append(f"has arguments {_shown(self.arguments)}, expected {_shown(expected)}")
        if self.tgtype != TGTYPE:
            found.append("does not fire AFTER INSERT OR UPDATE FOR EACH ROW")
        if "WHEN (" not in self.definition or _literal(ORIGIN_SETTING) not in self.definition:
            found.append("lacks the WHEN condition on reconcile.origin")
        return found


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


def _tracked(conn: Connection, table_key: str) -> dict[str, str]:
    if conn.execute(text("SELECT to_regclass('reconcile.tracked_columns')")).scalar() is None:
        return {}
    rows = conn.execute(
        text("SELECT column_name, owner FROM reconcile.tracked_columns WHERE table_key = :t"),
        {"t": table_key},
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
                if t.name == TRIGGER_NAME
            ),
            None,
        )
    if found is None:
        return [f"the capture trigger is missing on {where}"]
    problems = []
    expected = (mapping.name, mapping.key_column)
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
        if trigger.name == TRIGGER_NAME
        for difference in trigger.differences(mapping)
        if not difference.startswith("has arguments")  # capture_problems says it
    ]
    found += [
        f"another trigger on {where}, {trigger.name}, also calls {FUNCTION} (an edit would "
        "count twice)"
        for trigger in triggers
        if trigger.name != TRIGGER_NAME and trigger.calls_capture
    ]
    return found


def tracked_problems(engine: Engine, mapping: TableMapping) -> list[str]:
    """How the columns the trigger watches for `mapping`'s table differ from the mapped
    columns and their owners (reconcile.tracked_columns)."""
    with engine.connect() as conn:
        actual = _tracked(conn, mapping.name)
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
    mappings = [
        table_mapping(key, table)
        for client in project.config.clients.values()
        for key, table in client.tables.items()
    ]
    _check_distinct(mappings, str(project.path))
    return mappings


def _check_distinct(mappings: Iterable[TableMapping], source: str = "the project file") -> None:
    keys: dict[str, TableMapping] = {}
    tables: dict[tuple[str, str], TableMapping] = {}
    for mapping in mappings:
        if mapping.name in keys:
            raise ConfigError(
                f"{source}: table key {mapping.name!r} is declared twice (by two clients): "
                "table keys name the sync's bookkeeping and must be unique in one database"
            )
        where = (mapping.postgres_schema, mapping.postgres_table)
        if where in tables:
            raise ConfigError(
                f"{source}: tables {tables[where].name!r} and {mapping.name!r} both sync "
                f"{relation(mapping)}: one PostgreSQL table syncs with one Airtable table"
            )
        keys[mapping.name] = mapping
        tables[where] = mapping


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
    return None


def install_capture(engine: Engine, mappings: Sequence[TableMapping]) -> InstallReport:
    """Install change capture for exactly `mappings` (a project file's tables), idempotently.

    - Each table gets the trigger `reconcile_capture_portal_change` calling
      `reconcile.capture_portal_change('<table key>', '<key column>')`; one that differs is
      replaced, a disabled one enabled, an identical one left alone.
    - `reconcile.tracked_columns` for the table key becomes every mapped column with its owner.
    - Triggers calling the capture function anywhere else (a table no longer configured, a
      second trigger on a configured one) are dropped, and the tracked columns of table keys
      no longer configured deleted.

    A table that does not exist, or lacks its key column, is reported and skipped; the others
    are installed. The DDL runs in one transaction under an advisory lock; tracked columns are
    written after it. Needs the schema migrated (the capture function exists).
    """
    _check_distinct(mappings)
    report = InstallReport()
    installable: list[TableMapping] = []
    dropped_keys: set[str] = set()
    removed: list[Trigger] = []
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:lock))"), {"lock": _LOCK})
        if not _function_exists(conn):
            raise ConfigError(
                f"The capture function {FUNCTION} does not exist: the database schema is not "
                "migrated (`reconcile db upgrade` migrates it first)."
            )
        triggers = _triggers(conn)
        configured = {(m.postgres_schema, m.postgres_table): m for m in mappings}
        for mapping in mappings:
            problem = _install_problem(conn, mapping)
            if problem is not None:
                report.tables.append(
                    TableInstall(
                        mapping.name, relation(mapping), "not installed", "", False, problem
                    )
                )
                continue
            installable.append(mapping)
            current = next(
                (
                    t
                    for t in triggers
                    if (t.schema, t.table, t.name)
                    == (mapping.postgres_schema, mapping.postgres_table, TRIGGER_NAME)
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
                if current.table_key and current.table_key != mapping.name:
                    dropped_keys.add(current.table_key)
            elif current.enabled not in ("O", "A"):
                conn.execute(
                    text(
                        f"ALTER TABLE {current.qualified_table} ENABLE TRIGGER "
                        f"{_quote(TRIGGER_NAME)}"
                    )
                )
                action = "re-enabled (it was disabled)"
            else:
                action = "unchanged"
            report.tables.append(TableInstall(mapping.name, relation(mapping), action, ""))
        for trigger in triggers:
            ours = configured.get((trigger.schema, trigger.table))
            if trigger.name == TRIGGER_NAME and ours is not None:
                continue  # handled above
            if not trigger.calls_capture:
                continue  # named like ours but not ours: not ours to drop
            conn.execute(text(trigger.drop_sql()))
            removed.append(trigger)
            if trigger.table_key:
                dropped_keys.add(trigger.table_key)
    tracked = {m.name: _register_tracked(engine, m) for m in installable}
    configured_keys = {m.name for m in mappings}
    deleted = _delete_tracked(engine, dropped_keys - configured_keys)
    report.tables = [
        TableInstall(t.table_key, t.relation, t.trigger, *tracked.get(t.table_key, ("", False)))
        if t.ok
        else t
        for t in report.tables
    ]
    for trigger in removed:
        key = trigger.table_key or "?"
        if (trigger.schema, trigger.table) not in configured:
            action = "removed (the table is no longer in the project file)"
        else:
            action = f"{trigger.name} removed (a second trigger calling {FUNCTION})"
        count = deleted.pop(key, 0)
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
        before = _tracked(conn, mapping.name)
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


def _delete_tracked(engine: Engine, table_keys: set[str]) -> dict[str, int]:
    if not table_keys:
        return {}
    with engine.begin() as conn:
        rows = conn.execute(
            text(
                "DELETE FROM reconcile.tracked_columns WHERE table_key = ANY(:keys) "
                "RETURNING table_key"
            ),
            {"keys": sorted(table_keys)},
        ).scalars()
        counts: dict[str, int] = {}
        for key in rows:
            counts[key] = counts.get(key, 0) + 1
    return counts
