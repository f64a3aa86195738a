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
from operator import call
from typing import Any, NamedTuple

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from reconcile_pipeline.db.schema_names import ORIGIN_RECONCILER, ORIGIN_SETTING
from reconcile_pipeline.engine.context import RunContext
from reconcile_pipeline.engine.convert import ascii_json, jsonb_safe, postgres_reader
from reconcile_pipeline.engine.mapping import STAGING_SQL_TYPES, TableMapping


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


# How long a reconciler statement waits for a row lock before giving up (and retrying its
# batch). Shorter than PostgreSQL's default deadlock_timeout (1 s): in a lock cycle with a portal
# transaction, ours times out first and the portal's transaction goes through (DESIGN §3.4).
LOCK_TIMEOUT = "500ms"

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
    owned_write_counter: int = 0
    owned_reverted_counter: int = 0
    owned_write_columns: list[str] | None = None  # Airtable-owned columns the portal wrote

    @property
    def dirty(self) -> bool:
        return self.portal_change_counter > self.pushed_counter

    @property
    def owned_write_pending(self) -> bool:
        """The portal wrote an Airtable-owned column since the last revert."""
        return self.owned_write_counter > self.owned_reverted_counter

    def portal_wrote(self, column: str) -> bool:
        """Whether the portal wrote this Airtable-owned column since the last revert."""
        return self.owned_write_pending and column in (self.owned_write_columns or ())


class StateBrief(NamedTuple):
    """A record's sync state as the drift check reads it (`Repository.drift_rows`)."""

    airtable_modified_at: dt.datetime | None
    deleted: bool | None  # None (as dirty): the record has no sync state
    dirty: bool | None  # a portal edit waits to be pushed


@dataclass(frozen=True)
class DirtyLead:
    """A lead whose portal change counter is ahead of the counter last pushed, or whose
    Airtable-owned columns the portal wrote since the last revert."""

    record_id: str
    counter: int
    portal_values: dict[str, Any]  # canonical, every mapped column
    base_values: dict[str, Any]
    owned_counter: int = 0
    owned_write_pending: bool = False
    owned_write_columns: tuple[str, ...] = ()

    def portal_wrote(self, column: str) -> bool:
        """Whether the portal wrote this Airtable-owned column since the last revert."""
        return self.owned_write_pending and column in self.owned_write_columns


class Repository:
    """The engine's PostgreSQL access for one mapping."""

    def __init__(self, engine: Engine, mapping: TableMapping) -> None:
        self.engine = engine
        self.mapping = mapping
        self.table_sql = f"{_quote(mapping.postgres_schema)}.{_quote(mapping.postgres_table)}"
        self.key_sql = _quote(mapping.key_column)
        self._columns = [f.column for f in mapping.fields]
        # Each mapped column's PostgreSQL → canonical reader, in `_columns` order.
        self._reads = [postgres_reader(f) for f in mapping.fields]
        self._staging_types = {f.column: STAGING_SQL_TYPES[f.kind] for f in mapping.fields}
        self._record_def = self._staging_def(self._columns)
        self.client_params = {"client_value": mapping.client_value}

    def client_rows(self, alias: str | None = None) -> str:
        """A condition keeping a scan of the portal table to this client's rows (a table
        several clients share has a client column); always true otherwise. Bind
        `client_params`."""
        if self.mapping.client_column is None:
            return "TRUE"
        column = _quote(self.mapping.client_column)
        return f"{alias + '.' if alias else ''}{column}::text = :client_value"

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
                    text(
                        "SELECT set_config(:name, :value, true), "
                        "set_config('lock_timeout', :lock_timeout, true)"
                    ),
                    {
                        "name": ORIGIN_SETTING,
                        "value": ORIGIN_RECONCILER,
                        "lock_timeout": LOCK_TIMEOUT,
                    },
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

    @staticmethod
    def transaction_id(conn: Connection) -> str:
        """This transaction's id (assigned now if it had none): the loop check compares it with
        the transaction that last bumped a change counter."""
        return str(conn.execute(text("SELECT pg_current_xact_id()")).scalar_one())

    # -- configuration --------------------------------------------------------------------

    def register_tracked_columns(self) -> None:
        """Make the capture trigger watch exactly the mapping's columns, each with its owner:
        portal-owned changes are pushed, portal writes to Airtable-owned ones are reverted."""
        columns = [f.column for f in self.mapping.fields]
        owners = [f.owner.value for f in self.mapping.fields]
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "DELETE FROM reconcile.tracked_columns WHERE client = :c AND table_key = :t "
                    "AND NOT (column_name = ANY(:cols))"
                ),
                {"c": self.mapping.client, "t": self.mapping.name, "cols": columns},
            )
            conn.execute(
                text(
                    "INSERT INTO reconcile.tracked_columns (client, table_key, column_name, owner) "
                    "SELECT :c, :t, c, o FROM unnest(CAST(:cols AS text[]), "
                    "CAST(:owners AS text[])) "
                    "AS u(c, o) ON CONFLICT (client, table_key, column_name) DO UPDATE "
                    "SET owner = excluded.owner WHERE tracked_columns.owner <> excluded.owner"
                ),
                {
                    "c": self.mapping.client,
                    "t": self.mapping.name,
                    "cols": columns,
                    "owners": owners,
                },
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

    def _canonical_values(self, row: Sequence[Any], start: int) -> tuple:
        """The mapped columns of a row read from PostgreSQL (from index `start` to its end, in
        mapping order), canonical."""
        return tuple(map(call, self._reads, row[start:]))

    def _canonical(self, row: Sequence[Any], start: int) -> dict[str, Any]:
        """`_canonical_values` by column name."""
        return dict(zip(self._columns, self._canonical_values(row, start), strict=True))

    def _lead_rows(self, conn: Connection, ids: str, *, lock: bool) -> Sequence[Any]:
        """The leads of `ids` (a JSON array): the key, then the mapped columns as stored;
        locked until commit when `lock` is set."""
        select_list = ", ".join([self.key_sql] + [_quote(c) for c in self._columns])
        return conn.execute(
            text(
                f"SELECT {select_list} FROM {self.table_sql} "
                f"WHERE {self.key_sql} = ANY({_IDS_ARRAY}) "
                # Locks in key order: two transactions locking overlapping sets never wait on
                # each other in a cycle because of us.
                f"{f'ORDER BY {self.key_sql} FOR UPDATE' if lock else ''}"
            ),
            {"ids": ids},
        ).all()

    def lock_leads(self, conn: Connection, record_ids: Sequence[str]) -> dict[str, dict]:
        """Current canonical values of the mapped columns, the rows locked until commit."""
        rows = self._lead_rows(conn, _json(list(record_ids)), lock=True)
        return {row[0]: self._canonical(row, 1) for row in rows}

    def lock_states(self, conn: Connection, record_ids: Sequence[str]) -> dict[str, SyncState]:
        """The sync states of `record_ids`, locked until commit (in key order, as the leads)."""
        rows = conn.execute(
            text(
                "SELECT airtable_record_id, base_values, portal_change_counter, pushed_counter, "
                "airtable_modified_at, last_pushed_values, echo_pending, deleted_at, "
                "owned_write_counter, owned_reverted_counter, owned_write_columns "
                "FROM reconcile.sync_state WHERE client = :c AND table_key = :t "
                f"AND airtable_record_id = ANY({_IDS_ARRAY}) "
                "ORDER BY airtable_record_id FOR UPDATE"
            ),
            {"c": self.mapping.client, "t": self.mapping.name, "ids": _json(list(record_ids))},
        ).all()
        return {row[0]: SyncState(*row) for row in rows}

    def drift_rows(
        self, conn: Connection, record_ids: Sequence[str]
    ) -> dict[str, tuple[StateBrief, tuple]]:
        """For each of `record_ids` with a lead: what the drift check needs of its sync state
        (all None without one) and its mapped columns' canonical values (in `columns` order).
        Read without locking, and without the stored values `lock_states` decodes. (Two
        queries: joined in one, the planner, expecting 10 ids and one sync-state row (its
        statistics predate the pull's inserts), compared every lead with every state row in
        a nested loop: 1.7-1.8 s at 10k records, where these two with the conversion take
        0.1-0.3 s.)"""
        ids = _json(list(record_ids))
        leads = self._lead_rows(conn, ids, lock=False)
        states = conn.execute(
            text(
                "SELECT airtable_record_id, airtable_modified_at, deleted_at IS NOT NULL, "
                "portal_change_counter > pushed_counter FROM reconcile.sync_state "
                f"WHERE client = :c AND table_key = :t AND airtable_record_id = ANY({_IDS_ARRAY})"
            ),
            {"c": self.mapping.client, "t": self.mapping.name, "ids": ids},
        ).all()
        brief = {row[0]: StateBrief(row[1], row[2], row[3]) for row in states}
        stateless = StateBrief(None, None, None)
        return {
            row[0]: (brief.get(row[0], stateless), self._canonical_values(row, 1)) for row in leads
        }

    @property
    def columns(self) -> tuple[str, ...]:
        """The mapped columns, in the mapping's order (the order `drift_rows` reads them in)."""
        return tuple(self._columns)

    def dirty_leads(
        self, conn: Connection, as_of: dt.datetime | None = None, limit: int | None = None
    ) -> list[DirtyLead]:
        """Leads with unpushed portal changes (made before `as_of` when given), or with portal
        writes to Airtable-owned columns waiting to be reverted; oldest first."""
        select_list = ", ".join(f"l.{_quote(c)}" for c in self._columns)
        rows = conn.execute(
            text(
                f"SELECT s.airtable_record_id, s.portal_change_counter, s.base_values, "
                f"s.owned_write_counter, s.owned_write_counter > s.owned_reverted_counter, "
                f"s.owned_write_columns, {select_list} FROM reconcile.sync_state s "
                f"JOIN {self.table_sql} l ON l.{self.key_sql} = s.airtable_record_id "
                "WHERE s.client = :c AND s.table_key = :t AND s.deleted_at IS NULL AND ("
                "(s.portal_change_counter > s.pushed_counter "
                "AND (CAST(:as_of AS timestamptz) IS NULL OR s.portal_changed_at < :as_of)) "
                "OR s.owned_write_counter > s.owned_reverted_counter) "
                "ORDER BY s.portal_changed_at NULLS FIRST, s.airtable_record_id "
                "LIMIT :limit"
            ),
            {"c": self.mapping.client, "t": self.mapping.name, "as_of": as_of, "limit": limit},
        ).all()
        return [
            DirtyLead(
                record_id=row[0],
                counter=row[1],
                base_values=row[2] or {},
                owned_counter=row[3],
                owned_write_pending=row[4],
                owned_write_columns=tuple(row[5] or ()),
                portal_values=self._canonical(row, 6),
            )
            for row in rows
        ]

    def settle_orphaned_states(self, conn: Connection) -> list[str]:
        """Dirty sync states whose lead row the portal deleted: nothing is left to push, so the
        counter is marked pushed (the lead is no longer stranded as dirty forever). Returns
        their record ids."""
        return list(
            conn.execute(
                text(
                    "UPDATE reconcile.sync_state s SET pushed_counter = s.portal_change_counter, "
                    "owned_reverted_counter = s.owned_write_counter "
                    "WHERE s.client = :c AND "
                    "s.table_key = :t AND (s.portal_change_counter > s.pushed_counter "
                    "OR s.owned_write_counter > s.owned_reverted_counter) "
                    f"AND NOT EXISTS (SELECT 1 FROM {self.table_sql} l "
                    f"WHERE l.{self.key_sql} = s.airtable_record_id) "
                    "RETURNING s.airtable_record_id"
                ),
                {"c": self.mapping.client, "t": self.mapping.name},
            ).scalars()
        )

    def count_dirty(self, as_of: dt.datetime | None = None) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                text(
                    "SELECT count(*) FROM reconcile.sync_state s WHERE s.client = :c AND "
                    "s.table_key = :t "
                    "AND s.portal_change_counter > s.pushed_counter AND s.deleted_at IS NULL "
                    "AND (CAST(:as_of AS timestamptz) IS NULL OR s.portal_changed_at < :as_of) "
                    f"AND EXISTS (SELECT 1 FROM {self.table_sql} l "
                    f"WHERE l.{self.key_sql} = s.airtable_record_id)"
                ),
                {"c": self.mapping.client, "t": self.mapping.name, "as_of": as_of},
            ).scalar_one()

    def linked_record_ids(self, conn: Connection) -> list[str]:
        return list(
            conn.execute(
                text(
                    f"SELECT {self.key_sql} FROM {self.table_sql} WHERE {self.key_sql} IS NOT NULL "
                    f"AND {self.client_rows()}"
                ),
                self.client_params,
            ).scalars()
        )

    def leads_of(self, conn: Connection, record_ids: Sequence[str]) -> dict[str, dict]:
        """The canonical mapped values of this client's leads linked to `record_ids` (the full
        reconcile's comparison, one batch of the listing at a time)."""
        if not record_ids:
            return {}
        select_list = ", ".join([self.key_sql] + [_quote(c) for c in self._columns])
        rows = conn.execute(
            text(
                f"SELECT {select_list} FROM {self.table_sql} "
                f"WHERE {self.key_sql} = ANY({_IDS_ARRAY}) AND {self.client_rows()}"
            ),
            {**self.client_params, "ids": _json(list(record_ids))},
        ).all()
        return {row[0]: self._canonical(row, 1) for row in rows}

    def count_unlisted_leads(self, conn: Connection, listed: Iterable[str]) -> int:
        """How many of this client's linked leads are neither among `listed` (the record ids an
        Airtable listing returned) nor soft-deleted, counted in PostgreSQL."""
        key = f"l.{self.key_sql}"
        return conn.execute(
            text(
                f"SELECT count(DISTINCT {key}) FROM {self.table_sql} l "
                "LEFT JOIN jsonb_array_elements_text(CAST(:ids AS jsonb)) AS listed(id) "
                f"ON listed.id = {key} "
                f"WHERE {key} IS NOT NULL AND {self.client_rows('l')} AND listed.id IS NULL "
                "AND NOT EXISTS (SELECT 1 FROM reconcile.sync_state s WHERE s.client = :c "
                f"AND s.table_key = :t AND s.airtable_record_id = {key} "
                "AND s.deleted_at IS NOT NULL)"
            ),
            {
                **self.client_params,
                "c": self.mapping.client,
                "t": self.mapping.name,
                "ids": _json(list(listed)),
            },
        ).scalar_one()

    # -- writes ---------------------------------------------------------------------------

    def insert_leads(self, conn: Connection, rows: Sequence[dict]) -> int:
        """Insert new leads (key + the mapped columns each row carries: a field held in
        quarantine is left to the column's default); a key that exists already is left alone."""
        shapes: dict[tuple[str, ...], list[dict]] = {}
        for row in rows:
            shapes.setdefault(tuple(c for c in self._columns if c in row), []).append(row)
        inserted = 0
        # On a table several clients share, the row is filled with this client's value.
        client_column = self.mapping.client_column
        into_client = f", {_quote(client_column)}" if client_column else ""
        client_value = ", :client_value" if client_column else ""
        for shape, group in shapes.items():
            columns = ", ".join([self.key_sql] + [_quote(c) for c in shape])
            inserted += conn.execute(
                text(
                    # NOT EXISTS rather than ON CONFLICT: a portal table need not have a unique
                    # constraint on the key (the duplicate check reports it if so).
                    f"INSERT INTO {self.table_sql} ({columns}{into_client}) "
                    f"SELECT {columns}{client_value} "
                    f"FROM jsonb_to_recordset(CAST(:rows AS jsonb)) "
                    f"AS s({self._staging_def(shape)}) "
                    f"WHERE NOT EXISTS (SELECT 1 FROM {self.table_sql} AS l "
                    f"WHERE l.{self.key_sql} = s.{self.key_sql})"
                ),
                {"rows": _json(group), **self.client_params},
            ).rowcount
        return inserted

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
                "INSERT INTO reconcile.sync_state AS st (client, table_key, airtable_record_id, "
                "base_values, airtable_modified_at, airtable_created_at, last_pulled_at, "
                "portal_change_counter, portal_changed_at, echo_pending, deleted_at) "
                "SELECT :c, :t, s.record_id, s.base_values, s.modified_at, s.created_at, now(), "
                "s.bump, CASE WHEN s.bump > 0 THEN now() END, s.echo_pending, s.deleted_at "
                "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS s(record_id text, "
                "base_values jsonb, modified_at timestamptz, created_at timestamptz, bump int, "
                "echo_pending boolean, deleted_at timestamptz) "
                "ON CONFLICT (client, table_key, airtable_record_id) DO UPDATE SET "
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
            {"c": self.mapping.client, "t": self.mapping.name, "rows": _json(rows)},
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
                "WHERE st.client = :c AND st.table_key = :t AND st.airtable_record_id = s.record_id"
            ),
            {"c": self.mapping.client, "t": self.mapping.name, "rows": _json(rows)},
        )

    def mark_pushed(self, conn: Connection, rows: Sequence[dict]) -> None:
        """After Airtable accepted a lead's fields (or nothing needed sending): move the base and
        mark the counter.

        Compare-and-set on the counter that was read: pushed_counter becomes the counter sent
        (never lower than it was), so an edit that landed while the request was in flight keeps
        the lead dirty and goes out next time. Rows: record_id, base (column → agreed value,
        merged into the base), sent (column → value sent; {} when nothing was), counter, and
        optionally owned_counter (the owned-write counter whose writes were reverted).
        """
        if not rows:
            return
        conn.execute(
            text(
                "UPDATE reconcile.sync_state AS st SET "
                "base_values = st.base_values || s.base, "
                "pushed_counter = GREATEST(st.pushed_counter, s.counter), "
                "owned_reverted_counter = GREATEST(st.owned_reverted_counter, "
                "coalesce(s.owned_counter, 0)), "
                # Every write counted so far was reverted: forget which columns they touched.
                "owned_write_columns = CASE WHEN coalesce(s.owned_counter, 0) >= "
                "st.owned_write_counter THEN NULL ELSE st.owned_write_columns END, "
                "last_pushed_at = CASE WHEN s.sent = '{}'::jsonb THEN st.last_pushed_at "
                "ELSE now() END, "
                "last_pushed_values = CASE WHEN s.sent = '{}'::jsonb THEN st.last_pushed_values "
                "ELSE s.sent END, "
                "echo_pending = st.echo_pending OR s.sent <> '{}'::jsonb "
                "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS s(record_id text, base jsonb, "
                "sent jsonb, counter bigint, owned_counter bigint) "
                "WHERE st.client = :c AND st.table_key = :t AND st.airtable_record_id = s.record_id"
            ),
            {"c": self.mapping.client, "t": self.mapping.name, "rows": _json(rows)},
        )

    def soft_delete(self, conn: Connection, record_ids: Sequence[str], deleted: bool) -> int:
        """Mark records gone from Airtable (or back again). Never deletes a lead row."""
        if not record_ids:
            return 0
        self.show_soft_delete(conn, record_ids, deleted)
        if deleted:
            statement = (
                "INSERT INTO reconcile.sync_state (client, "
                "table_key, airtable_record_id, deleted_at) "
                "SELECT :c, :t, unnest(CAST(:ids AS text[])), now() "
                "ON CONFLICT (client, table_key, airtable_record_id) DO UPDATE "
                "SET deleted_at = now() WHERE sync_state.deleted_at IS NULL"
            )
        else:
            statement = (
                "UPDATE reconcile.sync_state SET deleted_at = NULL WHERE client = :c AND "
                "table_key = :t "
                "AND airtable_record_id = ANY(:ids) AND deleted_at IS NOT NULL"
            )
        return conn.execute(
            text(statement),
            {"c": self.mapping.client, "t": self.mapping.name, "ids": list(record_ids)},
        ).rowcount

    def show_soft_delete(self, conn: Connection, record_ids: Sequence[str], deleted: bool) -> None:
        """Set the table's soft-delete column (false: gone from Airtable) on these leads, so the
        portal sees deletes (DESIGN §3.7). In a reconciler transaction: not a portal edit."""
        column = self.mapping.soft_delete_column
        if column is None or not record_ids:
            return
        conn.execute(
            text(
                f"UPDATE {self.table_sql} SET {_quote(column)} = :active "
                f"WHERE {self.key_sql} = ANY({_IDS_ARRAY}) "
                f"AND {_quote(column)} IS DISTINCT FROM :active"
            ),
            {"active": not deleted, "ids": _json(sorted(record_ids))},
        )

    def deleted_record_ids(self, conn: Connection) -> set[str]:
        return set(
            conn.execute(
                text(
                    "SELECT airtable_record_id FROM reconcile.sync_state "
                    "WHERE client = :c AND table_key = :t AND deleted_at IS NOT NULL"
                ),
                {"c": self.mapping.client, "t": self.mapping.name},
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
        params = {"c": self.mapping.client, "t": self.mapping.name, "run": run_id}
        only_ids = ""
        if record_ids is not None:
            only_ids = f"AND airtable_record_id = ANY({_IDS_ARRAY})"
            params["ids"] = _json(list(record_ids))
        rows = conn.execute(
            text(
                "SELECT id, airtable_record_id, fields, created_time, raw_record "
                "FROM reconcile.airtable_snapshots WHERE client = :c AND "
                "table_key = :t AND run_id = :run "
                + only_ids
            ),
            params,
        ).all()
        rows.sort(key=lambda row: row[0])
        records = []
        for _, rid, fields, created, raw_record in rows:
            if raw_record is not None:  # what jsonb refused, exactly as Airtable sent it
                records.append(json.loads(raw_record))
                continue
            records.append(
                {
                    "id": rid,
                    "fields": fields,
                    "createdTime": created.isoformat().replace("+00:00", "Z") if created else None,
                }
            )
        return records

    # -- links between synced tables ------------------------------------------------------

    @staticmethod
    def existing_keys(conn: Connection, target: Any, keys: Sequence[str]) -> set[str]:
        """The keys among `keys` that have a row in a link's target table."""
        if not keys:
            return set()
        key = _quote(target.key_column)
        return set(
            conn.execute(
                text(
                    f"SELECT {key} FROM {_quote(target.schema)}.{_quote(target.table)} "
                    f"WHERE {key} = ANY({_IDS_ARRAY})"
                ),
                {"ids": _json(sorted(set(keys)))},
            ).scalars()
        )

    def held_values(self, conn: Connection, column: str) -> dict[str, Any]:
        """Record id → the raw value held in pull quarantine for `column`."""
        return dict(
            conn.execute(
                text(
                    "SELECT airtable_record_id, raw_value FROM reconcile.quarantine "
                    "WHERE client = :c AND table_key = :t AND direction = 'pull' AND field = :f "
                    "AND released_at IS NULL"
                ),
                {"c": self.mapping.client, "t": self.mapping.name, "f": column},
            ).all()
        )

    # -- coverage in time (DESIGN §3.6) ---------------------------------------------------

    def high_water_mark(self, conn: Connection | None = None) -> dt.datetime | None:
        """Pulls of this table have committed without a gap up to this time (None: never)."""
        sql = text(
            "SELECT mark FROM reconcile.high_water_marks WHERE client = :c AND table_key = :t"
        )
        if conn is not None:
            return conn.execute(
                sql, {"c": self.mapping.client, "t": self.mapping.name}
            ).scalar_one_or_none()
        with self.engine.connect() as own:
            return own.execute(
                sql, {"c": self.mapping.client, "t": self.mapping.name}
            ).scalar_one_or_none()

    def record_pull(
        self, run: RunContext, pull_start: dt.datetime | None, pull_end: dt.datetime
    ) -> None:
        """A pull listed Airtable over [pull_start, pull_end) (not yet merged)."""
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO reconcile.pull_coverage (client, table_key, run_id, pull_start, "
                    "pull_end, window_start, window_end) VALUES (:c, :t, :run_id, :start, :end, "
                    ":window_start, :window_end)"
                ),
                {
                    "c": self.mapping.client,
                    "t": self.mapping.name,
                    "start": pull_start,
                    "end": pull_end,
                    **self._audit_params(run),
                },
            )

    def commit_pull(self, conn: Connection, run: RunContext) -> dt.datetime | None:
        """The run's pull is merged: mark it committed and advance the high-water mark to its
        end if it started at or before the mark (contiguous coverage); returns the mark."""
        pulled = conn.execute(
            text(
                "UPDATE reconcile.pull_coverage SET committed_at = now() WHERE client = :c AND "
                "table_key = :t "
                "AND run_id = :run_id AND committed_at IS NULL RETURNING pull_start, pull_end"
            ),
            {"c": self.mapping.client, "t": self.mapping.name, "run_id": run.run_id},
        ).all()
        for pull_start, pull_end in pulled:
            conn.execute(
                text(
                    "INSERT INTO reconcile.high_water_marks AS m (client, table_key, mark, run_id) "
                    # A full pull (no start) sets the mark whatever it was; a windowed pull
                    # moves it only when it started at or before it (no gap left behind).
                    "SELECT :c, :t, :end, :run_id WHERE CAST(:start AS timestamptz) IS NULL "
                    "ON CONFLICT (client, table_key) DO UPDATE SET mark = excluded.mark, "
                    "run_id = excluded.run_id, updated_at = now() WHERE m.mark < excluded.mark"
                ),
                {
                    "c": self.mapping.client,
                    "t": self.mapping.name,
                    "start": pull_start,
                    "end": pull_end,
                    "run_id": run.run_id,
                },
            )
            conn.execute(
                text(
                    "UPDATE reconcile.high_water_marks SET mark = :end, run_id = :run_id, "
                    "updated_at = now() WHERE client = :c AND table_key = :t AND mark < :end "
                    "AND mark >= :start"
                ),
                {
                    "c": self.mapping.client,
                    "t": self.mapping.name,
                    "start": pull_start,
                    "end": pull_end,
                    "run_id": run.run_id,
                },
            )
        return self.high_water_mark(conn)

    def committed_coverage(
        self, conn: Connection, since: dt.datetime
    ) -> list[tuple[dt.datetime | None, dt.datetime]]:
        """Committed pull intervals ending after `since`, by start."""
        return [
            (start, end)
            for start, end in conn.execute(
                text(
                    "SELECT pull_start, pull_end FROM reconcile.pull_coverage "
                    "WHERE client = :c AND "
                    "table_key = :t AND committed_at IS NOT NULL AND pull_end > :since "
                    "ORDER BY pull_start NULLS FIRST"
                ),
                {"c": self.mapping.client, "t": self.mapping.name, "since": since},
            ).all()
        ]

    # -- audit ----------------------------------------------------------------------------

    def insert_snapshots(self, conn: Connection, records: Sequence[dict], run: RunContext) -> None:
        """The raw Airtable records as pulled: the audit trail of what Airtable said."""
        if not records:
            return
        rows = []
        for r in records:
            record = {k: v for k, v in r.items() if k not in ("_modified_time", "_created_time")}
            fields, created = record.get("fields"), record.get("createdTime")
            created_time = r.get("_created_time")
            whole = (
                isinstance(record.get("id"), str)
                and isinstance(fields, dict)
                and jsonb_safe(record)
                and (created is None or created_time is not None)
            )
            rows.append(
                {
                    "record_id": record.get("id") if isinstance(record.get("id"), str) else "",
                    # Stored as jsonb when PostgreSQL can hold it, else losslessly as text.
                    "fields": fields if whole else None,
                    "raw_record": None if whole else ascii_json(record),
                    "created_time": created_time,
                    "modified_time": r.get("_modified_time"),
                }
            )
        conn.execute(
            text(
                "INSERT INTO reconcile.airtable_snapshots (client, "
                "table_key, airtable_record_id, fields, "
                "raw_record, created_time, modified_time, run_id, window_start, window_end) "
                "SELECT :c, :t, s.record_id, s.fields, s.raw_record, s.created_time, "
                "s.modified_time, :run_id, :window_start, :window_end "
                "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) "
                "AS s(record_id text, fields jsonb, raw_record text, created_time timestamptz, "
                "modified_time timestamptz)"
            ),
            {
                "c": self.mapping.client,
                "t": self.mapping.name,
                "rows": _json(rows),
                **self._audit_params(run),
            },
        )

    def insert_history(self, conn: Connection, rows: Sequence[dict], run: RunContext) -> None:
        """Rows: record_id, field, old, new, direction, reason."""
        if not rows:
            return
        conn.execute(
            text(
                "INSERT INTO reconcile.change_history (client, "
                "table_key, airtable_record_id, field, "
                "old_value, new_value, direction, reason, run_id, window_start, window_end) "
                "SELECT :c, :t, s.record_id, s.field, s.old, s.new, s.direction, s.reason, "
                ":run_id, "
                ":window_start, :window_end FROM jsonb_to_recordset(CAST(:rows AS jsonb)) "
                "AS s(record_id text, field text, old jsonb, new jsonb, direction text, "
                "reason text)"
            ),
            {
                "c": self.mapping.client,
                "t": self.mapping.name,
                "rows": _json(rows),
                **self._audit_params(run),
            },
        )

    def insert_conflicts(self, conn: Connection, rows: Sequence[dict], run: RunContext) -> None:
        """Rows: record_id, field, base, airtable, portal, decided, policy, decision,
        recommendation."""
        if not rows:
            return
        conn.execute(
            text(
                "INSERT INTO reconcile.conflicts (client, table_key, airtable_record_id, field, "
                "base_value, airtable_value, portal_value, decided_value, policy, decision, "
                "recommendation, run_id, window_start, window_end) "
                "SELECT :c, :t, s.record_id, s.field, s.base, s.airtable, s.portal, s.decided, "
                "s.policy, s.decision, s.recommendation, :run_id, :window_start, :window_end "
                "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS s(record_id text, field text, "
                "base jsonb, airtable jsonb, portal jsonb, decided jsonb, policy text, "
                "decision text, recommendation text)"
            ),
            {
                "c": self.mapping.client,
                "t": self.mapping.name,
                "rows": _json(rows),
                **self._audit_params(run),
            },
        )

    def quarantine(
        self, conn: Connection, rows: Sequence[dict], direction: str, run: RunContext
    ) -> None:
        """Rows: record_id, field (a column, or "*" for the whole record), reason, raw (the
        value held, made storable), payload (optional context). A field already held is
        updated, not duplicated."""
        if not rows:
            return
        conn.execute(
            text(
                "INSERT INTO reconcile.quarantine AS q (client, "
                "table_key, airtable_record_id, field, "
                "direction, reason, raw_value, raw_payload, run_id) "
                "SELECT :c, :t, s.record_id, coalesce(s.field, '*'), :direction, s.reason, s.raw, "
                "s.payload, :run_id "
                "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS s(record_id text, field text, "
                "reason text, raw jsonb, payload jsonb) "
                "ON CONFLICT (client, table_key, airtable_record_id, direction, field) "
                "WHERE released_at IS NULL DO UPDATE SET reason = excluded.reason, "
                "raw_value = excluded.raw_value, raw_payload = excluded.raw_payload, "
                "attempts = q.attempts + 1, last_seen_at = now(), run_id = excluded.run_id"
            ),
            {
                "c": self.mapping.client,
                "t": self.mapping.name,
                "rows": _json(rows),
                "direction": direction,
                "run_id": run.run_id,
            },
        )

    def held_fields(self, conn: Connection, direction: str) -> set[tuple[str, str]]:
        """(record id, field) of every open hold in `direction` (few: an index read)."""
        return {
            (rid, fld)
            for rid, fld in conn.execute(
                text(
                    "SELECT airtable_record_id, field FROM reconcile.quarantine "
                    "WHERE client = :c AND "
                    "table_key = :t AND direction = :d AND released_at IS NULL"
                ),
                {"c": self.mapping.client, "t": self.mapping.name, "d": direction},
            ).all()
        }

    def release_quarantine(
        self, conn: Connection, fields: Iterable[tuple[str, str]], direction: str
    ) -> int:
        """Release the holds on these (record id, field) pairs: they came back valid (a record
        that came back whole releases its "*" hold too).

        Reads the few open holds first and updates only those it finds: a 2000-record batch
        with nothing quarantined costs one small index read, not a 2000-id probe.
        """
        held = self.held_fields(conn, direction)
        if not held:
            return 0
        wanted = [pair for pair in fields if pair in held]
        if not wanted:
            return 0
        return conn.execute(
            text(
                "UPDATE reconcile.quarantine q SET released_at = now() "
                "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS s(record_id text, field text) "
                "WHERE q.client = :c AND "
                "q.table_key = :t AND q.direction = :d AND q.released_at IS NULL "
                "AND q.airtable_record_id = s.record_id AND q.field = s.field"
            ),
            {
                "c": self.mapping.client,
                "t": self.mapping.name,
                "d": direction,
                "rows": _json([{"record_id": r, "field": f} for r, f in wanted]),
            },
        ).rowcount

    def insert_push_results(self, conn: Connection, rows: Sequence[dict], run: RunContext) -> None:
        """Rows: record_id, outcome, fields_sent, counter_sent, error."""
        if not rows:
            return
        conn.execute(
            text(
                "INSERT INTO reconcile.push_results (client, "
                "table_key, airtable_record_id, outcome, "
                "fields_sent, counter_sent, error, run_id, window_start, window_end) "
                "SELECT :c, :t, s.record_id, s.outcome, s.fields_sent, s.counter_sent, s.error, "
                ":run_id, :window_start, :window_end FROM jsonb_to_recordset(CAST(:rows AS "
                "jsonb)) AS s(record_id text, outcome text, fields_sent jsonb, "
                "counter_sent bigint, error text)"
            ),
            {
                "c": self.mapping.client,
                "t": self.mapping.name,
                "rows": _json(rows),
                **self._audit_params(run),
            },
        )

    def record_run(
        self,
        stage: str,
        run: RunContext,
        stats: dict,
        started_at: dt.datetime,
        transaction_ids: Sequence[str] = (),
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO reconcile.runs (client, table_key, stage, run_id, window_start, "
                    "window_end, dry_run, stats, started_at, transaction_ids) VALUES (:c, :t, "
                    ":stage, :run_id, :window_start, :window_end, :dry_run, "
                    "CAST(:stats AS jsonb), :started_at, CAST(:xids AS text[]))"
                ),
                {
                    "c": self.mapping.client,
                    "t": self.mapping.name,
                    "stage": stage,
                    "xids": list(transaction_ids),
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
