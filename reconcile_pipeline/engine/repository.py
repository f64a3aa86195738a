"""All SQL the engine runs: set-based statements over the portal table and our bookkeeping.

Rows travel to PostgreSQL as one JSON array bound to one parameter and are unpacked with
`jsonb_to_recordset`, so each write is one statement per batch however many rows it carries
(stage and merge, no round trip per row). Identifiers come from the mapping and are quoted;
values are always bound parameters.
"""

import contextlib
import datetime as dt
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from reconcile_pipeline.db.schema_names import ORIGIN_RECONCILER, ORIGIN_SETTING
from reconcile_pipeline.engine.context import RunContext
from reconcile_pipeline.engine.convert import from_postgres
from reconcile_pipeline.engine.mapping import STAGING_SQL_TYPES, TableMapping


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


# A list of ids bound as one JSON text: psycopg adapts a Python list element by element, which
# costs more than PostgreSQL parsing the JSON.
_IDS_ARRAY = "ARRAY(SELECT jsonb_array_elements_text(CAST(:ids AS jsonb)))"


def _json(rows: Any) -> str:
    return json.dumps(rows, default=str, separators=(",", ":"))


@dataclass
class SyncState:
    """The reconciler's memory of one record."""

    record_id: str
    base_values: dict[str, Any]
    portal_change_counter: int = 0
    pushed_counter: int = 0
    airtable_modified_at: dt.datetime | None = None
    last_pushed_values: dict[str, Any] | None = None
    echo_pending: bool = False
    deleted_at: dt.datetime | None = None

    @property
    def dirty(self) -> bool:
        return self.portal_change_counter > self.pushed_counter


@dataclass(frozen=True)
class DirtyLead:
    """A lead whose portal change counter is ahead of the counter last pushed."""

    record_id: str
    counter: int
    portal_values: dict[str, Any]  # canonical, portal-owned columns only
    base_values: dict[str, Any]


class Repository:
    """The engine's PostgreSQL access for one mapping."""

    def __init__(self, engine: Engine, mapping: TableMapping) -> None:
        self.engine = engine
        self.mapping = mapping
        self.table_sql = f"{_quote(mapping.postgres_schema)}.{_quote(mapping.postgres_table)}"
        self.key_sql = _quote(mapping.key_column)
        self._columns = [f.column for f in mapping.fields]
        self._staging_types = {f.column: STAGING_SQL_TYPES[f.kind] for f in mapping.fields}
        self._record_def = self._staging_def(self._columns)

    # -- transactions ---------------------------------------------------------------------

    @contextlib.contextmanager
    def reconciler_transaction(self, dry_run: bool = False) -> Iterator[Connection]:
        """A transaction tagged as the reconciler's own: the capture trigger ignores its writes.

        set_config(..., true) is SET LOCAL: the tag ends with the transaction, so a pooled
        connection never carries it into a portal write. A dry run does the same reads, locks
        and writes, then rolls back: the plan is exact and nothing is kept.
        """
        with self.engine.connect() as conn:
            transaction = conn.begin()
            try:
                conn.execute(
                    text("SELECT set_config(:name, :value, true)"),
                    {"name": ORIGIN_SETTING, "value": ORIGIN_RECONCILER},
                )
                yield conn
            except BaseException:
                transaction.rollback()
                raise
            if dry_run:
                transaction.rollback()
            else:
                transaction.commit()

    @contextlib.contextmanager
    def push_lock(self, lock_name: str) -> Iterator[None]:
        """Hold the per-base push lock (a session advisory lock) for the block.

        Two pushes for the same base never run at once; the second waits for the first.
        """
        with self.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(hashtextextended(:n, 0))"), {"n": lock_name})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(
                    text("SELECT pg_advisory_unlock(hashtextextended(:n, 0))"), {"n": lock_name}
                )
                conn.commit()

    # -- configuration --------------------------------------------------------------------

    def register_tracked_columns(self) -> None:
        """Make the capture trigger watch exactly the mapping's portal-owned columns."""
        columns = [f.column for f in self.mapping.portal_fields]
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "DELETE FROM reconcile.tracked_columns WHERE table_key = :t "
                    "AND NOT (column_name = ANY(:cols))"
                ),
                {"t": self.mapping.name, "cols": columns},
            )
            conn.execute(
                text(
                    "INSERT INTO reconcile.tracked_columns (table_key, column_name) "
                    "SELECT :t, unnest(CAST(:cols AS text[])) ON CONFLICT DO NOTHING"
                ),
                {"t": self.mapping.name, "cols": columns},
            )

    def postgres_column_types(self) -> dict[str, str]:
        """Column name → information_schema data_type of the mapped table (empty if absent)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = :s AND table_name = :t"
                ),
                {"s": self.mapping.postgres_schema, "t": self.mapping.postgres_table},
            ).all()
        return {name: data_type for name, data_type in rows}

    # -- reads ----------------------------------------------------------------------------

    def lock_leads(
        self, conn: Connection, record_ids: Sequence[str], lock: bool = True
    ) -> dict[str, dict]:
        """Current canonical values of the mapped columns; rows locked until commit unless
        `lock` is False (read-only callers such as the checks)."""
        select_list = ", ".join([self.key_sql] + [_quote(c) for c in self._columns])
        rows = conn.execute(
            text(
                f"SELECT {select_list} FROM {self.table_sql} "
                f"WHERE {self.key_sql} = ANY({_IDS_ARRAY}){' FOR UPDATE' if lock else ''}"
            ),
            {"ids": _json(list(record_ids))},
        ).all()
        specs = self.mapping.fields
        return {
            row[0]: {spec.column: from_postgres(spec, row[i + 1]) for i, spec in enumerate(specs)}
            for row in rows
        }

    def lock_states(
        self, conn: Connection, record_ids: Sequence[str], lock: bool = True
    ) -> dict[str, SyncState]:
        rows = conn.execute(
            text(
                "SELECT airtable_record_id, base_values, portal_change_counter, pushed_counter, "
                "airtable_modified_at, last_pushed_values, echo_pending, deleted_at "
                "FROM reconcile.sync_state WHERE table_key = :t "
                f"AND airtable_record_id = ANY({_IDS_ARRAY})" + (" FOR UPDATE" if lock else "")
            ),
            {"t": self.mapping.name, "ids": _json(list(record_ids))},
        ).all()
        return {row[0]: SyncState(*row) for row in rows}

    def dirty_leads(
        self, conn: Connection, as_of: dt.datetime | None = None, limit: int | None = None
    ) -> list[DirtyLead]:
        """Leads with unpushed portal changes (made before `as_of` when given), oldest first."""
        portal = self.mapping.portal_fields
        select_list = ", ".join(f"l.{_quote(f.column)}" for f in portal)
        rows = conn.execute(
            text(
                f"SELECT s.airtable_record_id, s.portal_change_counter, s.base_values, "
                f"{select_list} FROM reconcile.sync_state s "
                f"JOIN {self.table_sql} l ON l.{self.key_sql} = s.airtable_record_id "
                "WHERE s.table_key = :t AND s.portal_change_counter > s.pushed_counter "
                "AND s.deleted_at IS NULL "
                "AND (CAST(:as_of AS timestamptz) IS NULL OR s.portal_changed_at < :as_of) "
                "ORDER BY s.portal_changed_at NULLS FIRST, s.airtable_record_id "
                "LIMIT :limit"
            ),
            {"t": self.mapping.name, "as_of": as_of, "limit": limit},
        ).all()
        return [
            DirtyLead(
                record_id=row[0],
                counter=row[1],
                base_values=row[2] or {},
                portal_values={
                    spec.column: from_postgres(spec, row[3 + i]) for i, spec in enumerate(portal)
                },
            )
            for row in rows
        ]

    def count_dirty(self, as_of: dt.datetime | None = None) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                text(
                    "SELECT count(*) FROM reconcile.sync_state WHERE table_key = :t "
                    "AND portal_change_counter > pushed_counter AND deleted_at IS NULL "
                    "AND (CAST(:as_of AS timestamptz) IS NULL OR portal_changed_at < :as_of)"
                ),
                {"t": self.mapping.name, "as_of": as_of},
            ).scalar_one()

    def linked_record_ids(self, conn: Connection) -> list[str]:
        return list(
            conn.execute(
                text(
                    f"SELECT {self.key_sql} FROM {self.table_sql} WHERE {self.key_sql} IS NOT NULL"
                )
            ).scalars()
        )

    def all_leads(self, conn: Connection) -> dict[str, dict]:
        """Every linked lead's canonical mapped values (for the full reconcile's comparison)."""
        select_list = ", ".join([self.key_sql] + [_quote(c) for c in self._columns])
        rows = conn.execute(
            text(f"SELECT {select_list} FROM {self.table_sql} WHERE {self.key_sql} IS NOT NULL")
        ).all()
        specs = self.mapping.fields
        return {
            row[0]: {spec.column: from_postgres(spec, row[i + 1]) for i, spec in enumerate(specs)}
            for row in rows
        }

    # -- writes ---------------------------------------------------------------------------

    def insert_leads(self, conn: Connection, rows: Sequence[dict]) -> int:
        """Insert new leads (key + mapped columns); a key that exists already is left alone."""
        if not rows:
            return 0
        columns = ", ".join([self.key_sql] + [_quote(c) for c in self._columns])
        result = conn.execute(
            text(
                # NOT EXISTS rather than ON CONFLICT: a portal table need not have a unique
                # constraint on the key (the duplicate check reports it if so).
                f"INSERT INTO {self.table_sql} ({columns}) SELECT {columns} "
                f"FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS s({self._record_def}) "
                f"WHERE NOT EXISTS (SELECT 1 FROM {self.table_sql} AS l "
                f"WHERE l.{self.key_sql} = s.{self.key_sql})"
            ),
            {"rows": _json(rows)},
        )
        return result.rowcount

    def update_leads(self, conn: Connection, rows: Sequence[dict]) -> int:
        """Write the mapped columns each row carries to existing leads; columns a row does not
        carry, and unmapped columns, are never touched.

        Rows are grouped by the set of columns they carry, one statement per set: a pull where
        Airtable changed one field on 10k records sends and parses that field alone, not the
        whole row. (A single statement choosing per row with `CASE` would need a common type
        for the staged and the stored value, which json and jsonb columns do not have.)
        """
        shapes: dict[tuple[str, ...], list[dict]] = {}
        for row in rows:
            shape = tuple(c for c in self._columns if c in row)
            if shape:
                shapes.setdefault(shape, []).append(row)
        return sum(self._update_shape(conn, shape, group) for shape, group in shapes.items())

    def _staging_def(self, columns: Sequence[str]) -> str:
        return ", ".join(
            [f"{self.key_sql} text"] + [f"{_quote(c)} {self._staging_types[c]}" for c in columns]
        )

    def _update_shape(self, conn: Connection, shape: Sequence[str], rows: Sequence[dict]) -> int:
        key = self.mapping.key_column
        assignments = ", ".join(f"{_quote(c)} = s.{_quote(c)}" for c in shape)
        payload = [{key: row[key]} | {c: row[c] for c in shape} for row in rows]
        return conn.execute(
            text(
                f"UPDATE {self.table_sql} AS l SET {assignments} "
                f"FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS s({self._staging_def(shape)}) "
                f"WHERE l.{self.key_sql} = s.{self.key_sql}"
            ),
            {"rows": _json(payload)},
        ).rowcount

    def upsert_states(self, conn: Connection, rows: Sequence[dict]) -> None:
        """Rows: record_id, base_values, modified_at, created_at, bump, echo_pending, deleted_at."""
        if not rows:
            return
        conn.execute(
            text(
                "INSERT INTO reconcile.sync_state AS st (table_key, airtable_record_id, "
                "base_values, airtable_modified_at, airtable_created_at, last_pulled_at, "
                "portal_change_counter, portal_changed_at, echo_pending, deleted_at) "
                "SELECT :t, s.record_id, s.base_values, s.modified_at, s.created_at, now(), "
                "s.bump, CASE WHEN s.bump > 0 THEN now() END, s.echo_pending, s.deleted_at "
                "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS s(record_id text, "
                "base_values jsonb, modified_at timestamptz, created_at timestamptz, bump int, "
                "echo_pending boolean, deleted_at timestamptz) "
                "ON CONFLICT (table_key, airtable_record_id) DO UPDATE SET "
                "base_values = excluded.base_values, "
                "airtable_modified_at = coalesce(excluded.airtable_modified_at, "
                "st.airtable_modified_at), "
                "airtable_created_at = coalesce(excluded.airtable_created_at, "
                "st.airtable_created_at), "
                "last_pulled_at = now(), "
                "portal_change_counter = st.portal_change_counter + excluded.portal_change_counter,"
                " portal_changed_at = coalesce(excluded.portal_changed_at, st.portal_changed_at), "
                "echo_pending = excluded.echo_pending, deleted_at = excluded.deleted_at"
            ),
            {"t": self.mapping.name, "rows": _json(rows)},
        )

    def touch_states(self, conn: Connection, rows: Sequence[dict]) -> None:
        """Record that Airtable modified records without moving their merge base.

        Rows: record_id, modified_at, created_at (ISO strings). The common case of a pull
        (Airtable-owned fields changed) needs only these timestamps, the stale-snapshot guard's
        input, so it skips the upsert's base rewrite.
        """
        if not rows:
            return
        conn.execute(
            text(
                "UPDATE reconcile.sync_state AS st SET airtable_modified_at = s.modified_at, "
                "airtable_created_at = coalesce(st.airtable_created_at, s.created_at), "
                "last_pulled_at = now() "
                "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS s(record_id text, "
                "modified_at timestamptz, created_at timestamptz) "
                "WHERE st.table_key = :t AND st.airtable_record_id = s.record_id"
            ),
            {"t": self.mapping.name, "rows": _json(rows)},
        )

    def mark_pushed(self, conn: Connection, rows: Sequence[dict]) -> None:
        """After Airtable accepted a lead's fields (or nothing needed sending): move the base and
        mark the counter.

        Compare-and-set on the counter that was read: pushed_counter becomes the counter sent
        (never lower than it was), so an edit that landed while the request was in flight keeps
        the lead dirty and goes out next time. Rows: record_id, base (column → agreed value,
        merged into the base), sent (column → value sent; {} when nothing was), counter.
        """
        if not rows:
            return
        conn.execute(
            text(
                "UPDATE reconcile.sync_state AS st SET "
                "base_values = st.base_values || s.base, "
                "pushed_counter = GREATEST(st.pushed_counter, s.counter), "
                "last_pushed_at = CASE WHEN s.sent = '{}'::jsonb THEN st.last_pushed_at "
                "ELSE now() END, "
                "last_pushed_values = CASE WHEN s.sent = '{}'::jsonb THEN st.last_pushed_values "
                "ELSE s.sent END, "
                "echo_pending = st.echo_pending OR s.sent <> '{}'::jsonb "
                "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS s(record_id text, base jsonb, "
                "sent jsonb, counter bigint) "
                "WHERE st.table_key = :t AND st.airtable_record_id = s.record_id"
            ),
            {"t": self.mapping.name, "rows": _json(rows)},
        )

    def soft_delete(self, conn: Connection, record_ids: Sequence[str], deleted: bool) -> int:
        """Mark records gone from Airtable (or back again). Never deletes a lead row."""
        if not record_ids:
            return 0
        if deleted:
            statement = (
                "INSERT INTO reconcile.sync_state (table_key, airtable_record_id, deleted_at) "
                "SELECT :t, unnest(CAST(:ids AS text[])), now() "
                "ON CONFLICT (table_key, airtable_record_id) DO UPDATE "
                "SET deleted_at = now() WHERE sync_state.deleted_at IS NULL"
            )
        else:
            statement = (
                "UPDATE reconcile.sync_state SET deleted_at = NULL WHERE table_key = :t "
                "AND airtable_record_id = ANY(:ids) AND deleted_at IS NOT NULL"
            )
        return conn.execute(
            text(statement), {"t": self.mapping.name, "ids": list(record_ids)}
        ).rowcount

    def deleted_record_ids(self, conn: Connection) -> set[str]:
        return set(
            conn.execute(
                text(
                    "SELECT airtable_record_id FROM reconcile.sync_state "
                    "WHERE table_key = :t AND deleted_at IS NOT NULL"
                ),
                {"t": self.mapping.name},
            ).scalars()
        )

    def snapshot_records(
        self, conn: Connection, run_id: str, record_ids: Sequence[str] | None = None
    ) -> list[dict]:
        """The raw records a run pulled (only `record_ids`' when given), in API shape, in the
        order they were stored.

        Ordered here rather than by `ORDER BY id`: the rows are wide, and sorting 10k of them
        in PostgreSQL spills past the default work_mem to disk.
        """
        params = {"t": self.mapping.name, "run": run_id}
        only_ids = ""
        if record_ids is not None:
            only_ids = f"AND airtable_record_id = ANY({_IDS_ARRAY})"
            params["ids"] = _json(list(record_ids))
        rows = conn.execute(
            text(
                "SELECT id, airtable_record_id, fields, created_time "
                "FROM reconcile.airtable_snapshots WHERE table_key = :t AND run_id = :run "
                + only_ids
            ),
            params,
        ).all()
        rows.sort(key=lambda row: row[0])
        return [
            {
                "id": rid,
                "fields": fields,
                "createdTime": created.isoformat().replace("+00:00", "Z") if created else None,
            }
            for _, rid, fields, created in rows
        ]

    # -- audit ----------------------------------------------------------------------------

    def insert_snapshots(self, conn: Connection, records: Sequence[dict], run: RunContext) -> None:
        """The raw Airtable records as pulled: the audit trail of what Airtable said."""
        if not records:
            return
        rows = [
            {
                "record_id": r["id"],
                "fields": r.get("fields", {}),
                "created_time": r.get("createdTime"),
                "modified_time": r.get("_modified_time"),
            }
            for r in records
        ]
        conn.execute(
            text(
                "INSERT INTO reconcile.airtable_snapshots (table_key, airtable_record_id, fields, "
                "created_time, modified_time, run_id, window_start, window_end) "
                "SELECT :t, s.record_id, s.fields, s.created_time, s.modified_time, :run_id, "
                ":window_start, :window_end FROM jsonb_to_recordset(CAST(:rows AS jsonb)) "
                "AS s(record_id text, fields jsonb, created_time timestamptz, "
                "modified_time timestamptz)"
            ),
            {"t": self.mapping.name, "rows": _json(rows), **self._audit_params(run)},
        )

    def insert_history(self, conn: Connection, rows: Sequence[dict], run: RunContext) -> None:
        """Rows: record_id, field, old, new, direction, reason."""
        if not rows:
            return
        conn.execute(
            text(
                "INSERT INTO reconcile.change_history (table_key, airtable_record_id, field, "
                "old_value, new_value, direction, reason, run_id, window_start, window_end) "
                "SELECT :t, s.record_id, s.field, s.old, s.new, s.direction, s.reason, :run_id, "
                ":window_start, :window_end FROM jsonb_to_recordset(CAST(:rows AS jsonb)) "
                "AS s(record_id text, field text, old jsonb, new jsonb, direction text, "
                "reason text)"
            ),
            {"t": self.mapping.name, "rows": _json(rows), **self._audit_params(run)},
        )

    def insert_conflicts(self, conn: Connection, rows: Sequence[dict], run: RunContext) -> None:
        """Rows: record_id, field, base, airtable, portal, decided, policy, decision,
        recommendation."""
        if not rows:
            return
        conn.execute(
            text(
                "INSERT INTO reconcile.conflicts (table_key, airtable_record_id, field, "
                "base_value, airtable_value, portal_value, decided_value, policy, decision, "
                "recommendation, run_id, window_start, window_end) "
                "SELECT :t, s.record_id, s.field, s.base, s.airtable, s.portal, s.decided, "
                "s.policy, s.decision, s.recommendation, :run_id, :window_start, :window_end "
                "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS s(record_id text, field text, "
                "base jsonb, airtable jsonb, portal jsonb, decided jsonb, policy text, "
                "decision text, recommendation text)"
            ),
            {"t": self.mapping.name, "rows": _json(rows), **self._audit_params(run)},
        )

    def quarantine(
        self, conn: Connection, rows: Sequence[dict], direction: str, run: RunContext
    ) -> None:
        """Rows: record_id, reason, payload. A record already held is updated, not duplicated."""
        if not rows:
            return
        conn.execute(
            text(
                "INSERT INTO reconcile.quarantine AS q (table_key, airtable_record_id, "
                "direction, reason, raw_payload, run_id) "
                "SELECT :t, s.record_id, :direction, s.reason, s.payload, :run_id "
                "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS s(record_id text, "
                "reason text, payload jsonb) "
                "ON CONFLICT (table_key, airtable_record_id, direction) "
                "WHERE released_at IS NULL DO UPDATE SET reason = excluded.reason, "
                "raw_payload = excluded.raw_payload, attempts = q.attempts + 1, "
                "last_seen_at = now(), run_id = excluded.run_id"
            ),
            {
                "t": self.mapping.name,
                "rows": _json(rows),
                "direction": direction,
                "run_id": run.run_id,
            },
        )

    def release_quarantine(
        self, conn: Connection, record_ids: Iterable[str], direction: str
    ) -> int:
        """Release the held records among `record_ids` (they came back valid).

        Reads the few open holds first and updates only those it finds: a 2000-record batch
        with nothing quarantined costs one small index read, not a 2000-id probe.
        """
        held = set(
            conn.execute(
                text(
                    "SELECT airtable_record_id FROM reconcile.quarantine WHERE table_key = :t "
                    "AND direction = :d AND released_at IS NULL"
                ),
                {"t": self.mapping.name, "d": direction},
            ).scalars()
        )
        ids = [record_id for record_id in record_ids if record_id in held]
        if not ids:
            return 0
        return conn.execute(
            text(
                "UPDATE reconcile.quarantine SET released_at = now() WHERE table_key = :t "
                "AND direction = :d AND airtable_record_id = ANY(:ids) AND released_at IS NULL"
            ),
            {"t": self.mapping.name, "d": direction, "ids": ids},
        ).rowcount

    def insert_push_results(self, conn: Connection, rows: Sequence[dict], run: RunContext) -> None:
        """Rows: record_id, outcome, fields_sent, counter_sent, error."""
        if not rows:
            return
        conn.execute(
            text(
                "INSERT INTO reconcile.push_results (table_key, airtable_record_id, outcome, "
                "fields_sent, counter_sent, error, run_id, window_start, window_end) "
                "SELECT :t, s.record_id, s.outcome, s.fields_sent, s.counter_sent, s.error, "
                ":run_id, :window_start, :window_end FROM jsonb_to_recordset(CAST(:rows AS "
                "jsonb)) AS s(record_id text, outcome text, fields_sent jsonb, "
                "counter_sent bigint, error text)"
            ),
            {"t": self.mapping.name, "rows": _json(rows), **self._audit_params(run)},
        )

    def record_run(self, stage: str, run: RunContext, stats: dict, started_at: dt.datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO reconcile.runs (table_key, stage, run_id, window_start, "
                    "window_end, dry_run, stats, started_at) VALUES (:t, :stage, :run_id, "
                    ":window_start, :window_end, :dry_run, CAST(:stats AS jsonb), :started_at)"
                ),
                {
                    "t": self.mapping.name,
                    "stage": stage,
                    "stats": _json(stats),
                    "dry_run": run.dry_run,
                    "started_at": started_at,
                    **self._audit_params(run),
                },
            )

    @staticmethod
    def _audit_params(run: RunContext) -> dict:
        return {
            "run_id": run.run_id,
            "window_start": run.window_start,
            "window_end": run.window_end,
        }
