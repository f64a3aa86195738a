"""Quarantine and record history for the people who own the data (DESIGN §9): list, retry and
release held fields; read every change of a record; find a record by id, e-mail or phone.

Plain SQL over the bookkeeping tables, every value a bound parameter (identifiers come from the
project file's mapping and are quoted). No Dagster and no printing: `reconcile quarantine …`,
`reconcile history` and the review console call the same functions.

How the engine treats a hold (engine/pull.py, engine/push.py): an open row of
`reconcile.quarantine` keeps its field out of the merge and the drift check; the next pull of
the record releases it when the value maps, or counts one more attempt when it still does not.
A pull only lists records Airtable changed since the table's high-water mark, so a record
nobody edits is never looked at again. Hence:

- **retry** leaves the hold open and makes the next run look at the record again. For a pull
  hold, the table's high-water mark is moved back to the record's last Airtable modification
  (its `modified_time_field`, else its creation): the next pull lists every record changed since
  then (unchanged ones are compared and not rewritten) and decides the hold. Moving the mark back
  only ever claims less coverage than was had, which the engine allows at any time (a run
  already in flight does not move it forward over the gap: its pull started later). For a push
  hold, the record's portal change counter is bumped, as the capture trigger does for a portal
  edit: the next push re-reads the record from Airtable and sends the value if the mapping now
  takes it, or holds it again.
- **release** closes the hold (`released_at`), keeping the row as history. PostgreSQL keeps the
  field's last good value; a later pull that brings an invalid value again holds it again.
"""

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from reconcile_pipeline.engine.mapping import TableMapping

DEFAULT_LIMIT = 50
RECORD_ID = re.compile(r"^rec[A-Za-z0-9]{14}$")
_PHONE_CHARACTERS = re.compile(r"^[+\d\s().\-/]+$")
_EMAIL_NAMES = re.compile(r"mail", re.IGNORECASE)
_PHONE_NAMES = re.compile(r"phone|mobile|cell", re.IGNORECASE)
_SEARCHABLE_KINDS = {"text"}  # where an e-mail or a phone number is stored


@dataclass(frozen=True)
class Hold:
    """One row of `reconcile.quarantine`: a field (or `*`, the whole record) held back."""

    id: int
    client: str  # the project file's client key (one Airtable base)
    table_key: str
    record_id: str
    field: str
    direction: str  # pull (Airtable's value could not be mapped) or push (never sent)
    reason: str
    raw_value: Any
    attempts: int
    first_seen_at: dt.datetime
    last_seen_at: dt.datetime
    released_at: dt.datetime | None
    run_id: str | None


@dataclass(frozen=True)
class Change:
    """One row of `reconcile.change_history`."""

    id: int
    client: str
    table_key: str
    record_id: str
    field: str  # `*` for a whole record (inserted, deleted in Airtable)
    old_value: Any
    new_value: Any
    direction: str  # airtable_to_postgres or postgres_to_airtable
    reason: str | None
    run_id: str | None
    window_start: dt.datetime | None
    window_end: dt.datetime | None
    changed_at: dt.datetime


@dataclass(frozen=True)
class RecordMatch:
    """A record found for a search: where, and by which column."""

    record_id: str
    client: str | None = None
    table_key: str | None = None
    matched: str = "record id"  # the column the search matched, or "record id"


@dataclass
class RetryOutcome:
    """What `retry_quarantine` did."""

    retried: list[int] = field(default_factory=list)  # hold ids, left open for the next run
    not_open: list[int] = field(default_factory=list)  # unknown or already released
    # (client, table key) → the high-water mark it was moved back to; None: the mark was
    # dropped (no time known for a record), so the next pull of that table is a full one.
    refetch: dict[tuple[str, str], dt.datetime | None] = field(default_factory=dict)
    repush: list[str] = field(default_factory=list)  # record ids the next push re-reads


class NotSearchable(ValueError):
    """The search is neither a record id, an e-mail nor a phone number."""


# ----- scope: client and table ----------------------------------------------------------------


def _scope(alias: str, client: str | None, table: str | None) -> tuple[str, dict[str, Any]]:
    """SQL conditions (each starting with AND) keeping rows of `client` and `table` (None:
    any), and their parameters."""
    sql, params = "", {}
    if client is not None:
        sql += f" AND {alias}.client = :scope_client"
        params["scope_client"] = client
    if table is not None:
        sql += f" AND {alias}.table_key = :scope_table"
        params["scope_table"] = table
    return sql, params


# ----- quarantine -----------------------------------------------------------------------------


def _hold_select(alias: str) -> str:
    return (
        f"SELECT {alias}.id, {alias}.client, {alias}.table_key, "
        f"{alias}.airtable_record_id, {alias}.field, {alias}.direction, {alias}.reason, "
        f"{alias}.raw_value, {alias}.attempts, {alias}.first_seen_at, {alias}.last_seen_at, "
        f"{alias}.released_at, {alias}.run_id FROM reconcile.quarantine {alias}"
    )


def list_quarantine(
    engine: Engine,
    client: str | None = None,
    table: str | None = None,
    *,
    include_released: bool = False,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
) -> list[Hold]:
    """Holds, open ones only unless `include_released`; newest first, a page at a time."""
    with engine.connect() as conn:
        scope, params = _scope("q", client, table)
        released = "" if include_released else " AND q.released_at IS NULL"
        rows = conn.execute(
            text(
                f"{_hold_select('q')} WHERE TRUE{scope}{released} "
                "ORDER BY q.first_seen_at DESC, q.id DESC LIMIT :limit OFFSET :offset"
            ),
            {**params, "limit": limit, "offset": offset},
        ).all()
    return [Hold(*row) for row in rows]


def count_quarantine(
    engine: Engine,
    client: str | None = None,
    table: str | None = None,
    *,
    include_released: bool = False,
) -> int:
    """How many holds `list_quarantine` pages through."""
    with engine.connect() as conn:
        scope, params = _scope("q", client, table)
        released = "" if include_released else " AND q.released_at IS NULL"
        return conn.execute(
            text(f"SELECT count(*) FROM reconcile.quarantine q WHERE TRUE{scope}{released}"),
            params,
        ).scalar_one()


def get_holds(engine: Engine, ids: Iterable[int]) -> list[Hold]:
    """The holds with these ids (open or released), by id."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(f"{_hold_select('q')} WHERE q.id = ANY(:ids) ORDER BY q.id"),
            {"ids": sorted(set(ids))},
        ).all()
    return [Hold(*row) for row in rows]


def release_quarantine(engine: Engine, ids: Iterable[int], client: str | None = None) -> list[int]:
    """Close these open holds (the rows stay, with `released_at`); returns the ids released.
    Ids unknown, already released or of another client are left alone."""
    scope, params = _scope("q", client, None)
    with engine.begin() as conn:
        return sorted(
            conn.execute(
                text(
                    "UPDATE reconcile.quarantine q SET released_at = now() "
                    f"WHERE q.id = ANY(:ids) AND q.released_at IS NULL{scope} RETURNING q.id"
                ),
                {**params, "ids": sorted(set(ids))},
            ).scalars()
        )


def retry_quarantine(engine: Engine, ids: Iterable[int], client: str | None = None) -> RetryOutcome:
    """Have the next run look at these holds' records again; the holds stay open until it
    decides (see the module's docstring). One transaction."""
    wanted = sorted(set(ids))
    outcome = RetryOutcome()
    scope, params = _scope("q", client, None)
    with engine.begin() as conn:
        held = conn.execute(
            text(
                f"{_hold_select('q')} WHERE q.id = ANY(:ids) "
                f"AND q.released_at IS NULL{scope} ORDER BY q.id FOR UPDATE"
            ),
            {**params, "ids": wanted},
        ).all()
        holds = [Hold(*row) for row in held]
        outcome.retried = [h.id for h in holds]
        outcome.not_open = [i for i in wanted if i not in set(outcome.retried)]
        by_table: dict[tuple[str, str], dict[str, set[str]]] = {}
        for hold in holds:
            records = by_table.setdefault((hold.client, hold.table_key), {})
            records.setdefault(hold.direction, set()).add(hold.record_id)
        for (hold_client, table_key), records in sorted(by_table.items(), key=str):
            key = _TableKey(hold_client, table_key)
            pulled = sorted(records.get("pull", ()))
            if pulled:
                outcome.refetch[(hold_client, table_key)] = _refetch(conn, key, pulled)
            pushed = sorted(records.get("push", ()))
            if pushed:
                outcome.repush.extend(_repush(conn, key, pushed))
    return outcome


@dataclass(frozen=True)
class _TableKey:
    """One synced table's rows in the bookkeeping: (client, table key)."""

    client: str
    table_key: str

    def where(self, alias: str) -> str:
        return f"{alias}.client = :k_client AND {alias}.table_key = :k_table"

    @property
    def params(self) -> dict[str, Any]:
        return {"k_client": self.client, "k_table": self.table_key}


def _refetch(conn: Connection, key: _TableKey, record_ids: Sequence[str]) -> dt.datetime | None:
    """Move the table's high-water mark back to the earliest Airtable modification of these
    records (each its modified time, else its creation), so the next pull lists them again;
    returns the mark. A record with no known time drops the mark: the next pull is full."""
    times = dict(
        conn.execute(
            text(
                "SELECT r.id, coalesce(s.airtable_modified_at, s.airtable_created_at, "
                "(SELECT min(a.created_time) FROM reconcile.airtable_snapshots a "
                f"WHERE {key.where('a')} AND a.airtable_record_id = r.id)) "
                "FROM unnest(CAST(:ids AS text[])) AS r(id) "
                f"LEFT JOIN reconcile.sync_state s ON {key.where('s')} "
                "AND s.airtable_record_id = r.id"
            ),
            {**key.params, "ids": list(record_ids)},
        ).all()
    )
    if any(value is None for value in times.values()):
        conn.execute(
            text(f"DELETE FROM reconcile.high_water_marks m WHERE {key.where('m')}"), key.params
        )
        return None
    earliest = min(times.values())
    conn.execute(
        text(
            "UPDATE reconcile.high_water_marks m SET mark = :earliest, updated_at = now() "
            f"WHERE {key.where('m')} AND m.mark > :earliest"
        ),
        {**key.params, "earliest": earliest},
    )
    return conn.execute(
        text(f"SELECT m.mark FROM reconcile.high_water_marks m WHERE {key.where('m')}"),
        key.params,
    ).scalar_one_or_none()


def _repush(conn: Connection, key: _TableKey, record_ids: Sequence[str]) -> list[str]:
    """Count a portal change on these records, as the capture trigger does for an edit: the
    next push re-reads them from Airtable and decides their held fields again."""
    return sorted(
        conn.execute(
            text(
                "UPDATE reconcile.sync_state s SET portal_change_counter = "
                "s.portal_change_counter + 1, portal_changed_at = clock_timestamp(), "
                f"portal_changed_xid = pg_current_xact_id() WHERE {key.where('s')} "
                "AND s.airtable_record_id = ANY(:ids) AND s.deleted_at IS NULL "
                "RETURNING s.airtable_record_id"
            ),
            {**key.params, "ids": list(record_ids)},
        ).scalars()
    )


# ----- history --------------------------------------------------------------------------------


def record_history(
    engine: Engine,
    record_id: str,
    client: str | None = None,
    table: str | None = None,
    *,
    limit: int = 100,
    offset: int = 0,
) -> list[Change]:
    """Every change of the record on either side, newest first, a page at a time."""
    scope, params = _scope("h", client, table)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT h.id, h.client, h.table_key, "
                "h.airtable_record_id, h.field, h.old_value, h.new_value, h.direction, h.reason, "
                "h.run_id, h.window_start, h.window_end, h.changed_at "
                f"FROM reconcile.change_history h WHERE h.airtable_record_id = :rid{scope} "
                "ORDER BY h.changed_at DESC, h.id DESC LIMIT :limit OFFSET :offset"
            ),
            {**params, "rid": record_id, "limit": limit, "offset": offset},
        ).all()
    return [Change(*row) for row in rows]


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _search_columns(mapping: TableMapping, names: re.Pattern[str]) -> list[str]:
    return [
        spec.column
        for spec in mapping.fields
        if spec.kind.value in _SEARCHABLE_KINDS
        and any(names.search(name or "") for name in (spec.column, spec.label, spec.airtable_name))
    ]


def find_records(
    engine: Engine, mappings: Sequence[TableMapping], query: str, client: str | None = None
) -> list[RecordMatch]:
    """The records `query` names: itself when it is a record id (rec + 14 characters); else
    the rows of the synced portal tables (`mappings`, the engine's TableMapping) whose e-mail
    column equals it (case-insensitive) or whose phone column holds the same digits (a leading
    trunk 0 and the country code may differ). Raises NotSearchable for anything else."""
    query = query.strip()
    if RECORD_ID.match(query):
        return [RecordMatch(query)]
    digits = re.sub(r"\D", "", query)
    if "@" in query:
        names, condition = _EMAIL_NAMES, "lower(btrim({col})) = lower(:q)"
        params: dict[str, Any] = {"q": query}
    elif _PHONE_CHARACTERS.match(query) and len(digits.lstrip("0")) >= 6:
        names = _PHONE_NAMES
        condition = "right(regexp_replace({col}, '[^0-9]', '', 'g'), length(:digits)) = :digits"
        params = {"digits": digits.lstrip("0")}
    else:
        raise NotSearchable(f"{query!r} is not a record id (rec…), an e-mail or a phone number")
    matches: list[RecordMatch] = []
    with engine.connect() as conn:
        for mapping in mappings:
            if client is not None and mapping.client != client:
                continue
            columns = _search_columns(mapping, names)
            if not columns:
                continue
            table_sql = f"{_quote(mapping.postgres_schema)}.{_quote(mapping.postgres_table)}"
            key = _quote(mapping.key_column)
            scope = ""
            scope_params: dict[str, Any] = {}
            if mapping.client_column is not None:  # a portal table several clients share
                scope = f" AND CAST({_quote(mapping.client_column)} AS text) = :client_value"
                scope_params["client_value"] = mapping.client_value
            for column in columns:
                where = condition.format(col=_quote(column))
                for (record_id,) in conn.execute(
                    text(
                        f"SELECT {key} FROM {table_sql} WHERE {key} IS NOT NULL "
                        f"AND {where}{scope} ORDER BY {key} LIMIT 20"
                    ),
                    {**params, **scope_params},
                ).all():
                    match = RecordMatch(record_id, mapping.client, mapping.name, column)
                    if match not in matches:
                        matches.append(match)
    return matches


# ----- overview -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableCounts:
    """Where one synced table stands: rows in the portal table (None: the table is missing),
    records waiting to be pushed, open conflicts, open holds."""

    client: str
    table_key: str
    rows: int | None
    dirty: int
    open_conflicts: int
    quarantined: int


def table_counts(engine: Engine, mapping: TableMapping) -> TableCounts:
    """The counts of one table of the project file (a client's rows only, on a portal table
    several clients share)."""
    key = _TableKey(mapping.client, mapping.name)
    table_sql = f"{_quote(mapping.postgres_schema)}.{_quote(mapping.postgres_table)}"
    scope, scope_params = "", {}
    if mapping.client_column is not None:
        scope = f" WHERE CAST({_quote(mapping.client_column)} AS text) = :client_value"
        scope_params = {"client_value": mapping.client_value}
    with engine.connect() as conn:
        exists = conn.execute(
            text("SELECT to_regclass(:name) IS NOT NULL"), {"name": table_sql}
        ).scalar()
        rows = (
            conn.execute(text(f"SELECT count(*) FROM {table_sql}{scope}"), scope_params).scalar()
            if exists
            else None
        )
        dirty, conflicts, held = conn.execute(
            text(
                "SELECT (SELECT count(*) FROM reconcile.sync_state s WHERE "
                f"{key.where('s')} AND s.portal_change_counter > s.pushed_counter), "
                "(SELECT count(*) FROM reconcile.conflicts c WHERE "
                f"{key.where('c')} AND c.status = 'open'), "
                "(SELECT count(*) FROM reconcile.quarantine q WHERE "
                f"{key.where('q')} AND q.released_at IS NULL)"
            ),
            key.params,
        ).one()
    return TableCounts(mapping.client, mapping.name, rows, dirty, conflicts, held)


def shorten(value: Any, width: int = 60) -> str:
    """A value for one line of a listing: its repr, cut to `width` characters with `…`."""
    shown = repr(value)
    shown = " ".join(shown.split())  # newlines and tabs would break the line
    return shown if len(shown) <= width else shown[: width - 1] + "…"
