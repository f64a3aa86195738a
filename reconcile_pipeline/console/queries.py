"""What the console's pages read: per-table status, the conflict queue with its filters, where a
record lives. Plain SQL over the bookkeeping (every value a bound parameter, identifiers from the
project file's mapping, quoted), a page at a time, each query on an index that leads with
(client, table_key) when the page names them. Quarantine and history come from
operations/review.py; resolutions from engine/conflicts.py.
"""

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from reconcile_pipeline.engine.mapping import TableMapping
from reconcile_pipeline.engine.repository import Repository, _quote
from reconcile_pipeline.operations import review

STATUSES = ("open", "resolved", "all")
# An exact count of a portal table stops here; past it the page shows PostgreSQL's estimate.
COUNT_TIMEOUT = "300ms"


@dataclass(frozen=True)
class StageRun:
    """The last run of one stage (pull: merged and committed; push) that was not a dry run."""

    run_id: str | None
    finished_at: dt.datetime
    window_start: dt.datetime | None
    window_end: dt.datetime | None
    stats: dict[str, Any]


@dataclass(frozen=True)
class TableStatus:
    client: str
    table_key: str
    records: int | None  # rows of the client in the portal table; None: unknown
    records_estimated: bool
    dirty: int
    open_conflicts: int
    quarantined: int
    high_water_mark: dt.datetime | None
    last_pull: StageRun | None
    last_push: StageRun | None
    in_project: bool = True
    problem: str | None = None  # why the portal table could not be counted


@dataclass(frozen=True)
class ConflictFilter:
    client: str | None = None
    table: str | None = None
    field: str | None = None
    record: str | None = None
    status: str = "open"
    since: dt.date | None = None  # detected on or after this day (UTC)
    until: dt.date | None = None  # detected on or before this day (UTC)

    def where(self) -> tuple[str, dict[str, Any]]:
        sql, params = ["TRUE"], {}
        for column, name in (
            ("client", "client"),
            ("table_key", "table"),
            ("field", "field"),
            ("airtable_record_id", "record"),
        ):
            value = getattr(self, name)
            if value:
                sql.append(f"c.{column} = :f_{name}")
                params[f"f_{name}"] = value
        if self.status in ("open", "resolved"):
            sql.append("c.status = :f_status")
            params["f_status"] = self.status
        if self.since is not None:
            sql.append("c.detected_at >= :f_since")
            params["f_since"] = _day_start(self.since)
        if self.until is not None:
            sql.append("c.detected_at < :f_until")
            params["f_until"] = _day_start(self.until + dt.timedelta(days=1))
        return " AND ".join(sql), params


@dataclass(frozen=True)
class Conflict:
    """One row of `reconcile.conflicts`."""

    id: int
    client: str
    table_key: str
    record_id: str
    field: str
    base_value: Any
    airtable_value: Any
    portal_value: Any
    decided_value: Any
    policy: str
    decision: str
    recommendation: str | None
    status: str
    resolved_value: Any
    resolution: str | None
    resolved_at: dt.datetime | None
    detected_at: dt.datetime
    run_id: str | None
    window_start: dt.datetime | None
    window_end: dt.datetime | None


_CONFLICT_COLUMNS = (
    "c.id, c.client, c.table_key, c.airtable_record_id, c.field, c.base_value, "
    "c.airtable_value, c.portal_value, c.decided_value, c.policy, c.decision, c.recommendation, "
    "c.status, c.resolved_value, c.resolution, c.resolved_at, c.detected_at, c.run_id, "
    "c.window_start, c.window_end"
)


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


# ----- overview ---------------------------------------------------------------------------------

_STATUS_SQL = """
SELECT k.client, k.table_key,
    (SELECT count(*) FROM reconcile.sync_state s WHERE s.client = k.client
        AND s.table_key = k.table_key AND s.portal_change_counter > s.pushed_counter),
    (SELECT count(*) FROM reconcile.conflicts c WHERE c.client = k.client
        AND c.table_key = k.table_key AND c.status = 'open'),
    (SELECT count(*) FROM reconcile.quarantine q WHERE q.client = k.client
        AND q.table_key = k.table_key AND q.released_at IS NULL),
    (SELECT m.mark FROM reconcile.high_water_marks m WHERE m.client = k.client
        AND m.table_key = k.table_key),
    pull.run_id, pull.finished_at, pull.window_start, pull.window_end, pull.stats,
    push.run_id, push.finished_at, push.window_start, push.window_end, push.stats
FROM unnest(CAST(:clients AS text[]), CAST(:tables AS text[])) WITH ORDINALITY
    AS k(client, table_key, n)
LEFT JOIN LATERAL (
    SELECT r.run_id, r.finished_at, r.window_start, r.window_end, r.stats FROM reconcile.runs r
    WHERE r.client = k.client AND r.table_key = k.table_key AND r.stage = 'pull'
        AND NOT r.dry_run ORDER BY r.finished_at DESC LIMIT 1) pull ON TRUE
LEFT JOIN LATERAL (
    SELECT r.run_id, r.finished_at, r.window_start, r.window_end, r.stats FROM reconcile.runs r
    WHERE r.client = k.client AND r.table_key = k.table_key AND r.stage = 'push'
        AND NOT r.dry_run ORDER BY r.finished_at DESC LIMIT 1) push ON TRUE
ORDER BY k.n
"""


def _stage(row: Sequence[Any]) -> StageRun | None:
    run_id, finished_at, window_start, window_end, stats = row
    if finished_at is None:
        return None
    return StageRun(run_id, finished_at, window_start, window_end, dict(stats or {}))


def overview(engine: Engine, mappings: Sequence[TableMapping]) -> list[TableStatus]:
    """Every table of the project file, then any other (client, table) the bookkeeping still
    tracks (a client or table removed from the file)."""
    keys = [(m.client, m.name) for m in mappings]
    with engine.connect() as conn:
        others = [
            tuple(row)
            for row in conn.execute(
                text(
                    "SELECT client, table_key FROM reconcile.high_water_marks UNION "
                    "SELECT DISTINCT client, table_key FROM reconcile.tracked_columns "
                    "ORDER BY 1, 2"
                )
            ).all()
            if tuple(row) not in keys
        ]
        everything = keys + others
        rows = conn.execute(
            text(_STATUS_SQL),
            {"clients": [k[0] for k in everything], "tables": [k[1] for k in everything]},
        ).all()
    by_key = {(m.client, m.name): m for m in mappings}
    found = []
    for row in rows:
        client, table_key, dirty, conflicts, quarantined, mark = row[:6]
        mapping = by_key.get((client, table_key))
        records, estimated, problem = (None, False, None)
        if mapping is not None:
            records, estimated, problem = portal_count(engine, mapping)
        found.append(
            TableStatus(
                client=client,
                table_key=table_key,
                records=records,
                records_estimated=estimated,
                dirty=dirty,
                open_conflicts=conflicts,
                quarantined=quarantined,
                high_water_mark=mark,
                last_pull=_stage(row[6:11]),
                last_push=_stage(row[11:16]),
                in_project=mapping is not None,
                problem=problem,
            )
        )
    return found


def portal_count(engine: Engine, mapping: TableMapping) -> tuple[int | None, bool, str | None]:
    """(rows of the client linked to an Airtable record, whether that is an estimate, a problem).
    Exact unless counting takes longer than COUNT_TIMEOUT; then PostgreSQL's estimate of the
    table's rows (all clients')."""
    repo = Repository(engine, mapping)
    try:
        with engine.connect() as conn, conn.begin():
            conn.execute(
                text("SELECT set_config('statement_timeout', :t, true)"), {"t": COUNT_TIMEOUT}
            )
            try:
                with conn.begin_nested():
                    count = conn.execute(
                        text(
                            f"SELECT count(*) FROM {repo.table_sql} p WHERE p.{repo.key_sql} "
                            f"IS NOT NULL AND {repo.client_rows('p')}"
                        ),
                        repo.client_params,
                    ).scalar_one()
                return count, False, None
            except DBAPIError as exc:
                if getattr(exc.orig, "sqlstate", None) != "57014":  # query_canceled
                    raise
            estimate = conn.execute(
                text("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(:t)"),
                {"t": repo.table_sql},
            ).scalar_one_or_none()
            return (max(estimate, 0) if estimate is not None else None), True, None
    except DBAPIError as exc:
        first = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        return None, False, f"{mapping.postgres_schema}.{mapping.postgres_table}: {first}"


# ----- conflicts --------------------------------------------------------------------------------


def list_conflicts(
    engine: Engine, flt: ConflictFilter, limit: int = 50, offset: int = 0
) -> list[Conflict]:
    """Conflicts the filter keeps, newest first, a page at a time."""
    where, params = flt.where()
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                f"SELECT {_CONFLICT_COLUMNS} FROM reconcile.conflicts c WHERE {where} "
                "ORDER BY c.detected_at DESC, c.id DESC LIMIT :limit OFFSET :offset"
            ),
            {**params, "limit": limit, "offset": offset},
        ).all()
    return [Conflict(*row) for row in rows]


def count_conflicts(engine: Engine, flt: ConflictFilter) -> int:
    where, params = flt.where()
    with engine.connect() as conn:
        return conn.execute(
            text(f"SELECT count(*) FROM reconcile.conflicts c WHERE {where}"), params
        ).scalar_one()


def get_conflict(engine: Engine, conflict_id: int) -> Conflict | None:
    with engine.connect() as conn:
        row = conn.execute(
            text(f"SELECT {_CONFLICT_COLUMNS} FROM reconcile.conflicts c WHERE c.id = :id"),
            {"id": conflict_id},
        ).one_or_none()
    return Conflict(*row) if row is not None else None


def get_conflicts(engine: Engine, ids: Iterable[int]) -> list[Conflict]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                f"SELECT {_CONFLICT_COLUMNS} FROM reconcile.conflicts c WHERE c.id = ANY(:ids) "
                "ORDER BY c.id"
            ),
            {"ids": sorted(set(ids))},
        ).all()
    return [Conflict(*row) for row in rows]


def accept_recommendations(repo: Repository, ids: Iterable[int]) -> list[int]:
    """Accept the merge's decision for these open conflicts of `repo`'s table (the value it
    decided is already applied on both sides): what `engine.conflicts.accept_all_recommendations`
    does for a whole table, for the conflicts the operator ticked. Returns the ids accepted."""
    with repo.engine.begin() as conn:
        return sorted(
            conn.execute(
                text(
                    "UPDATE reconcile.conflicts SET status = 'resolved', resolved_value = "
                    "decided_value, resolution = 'accepted', resolved_at = now() "
                    "WHERE client = :c AND table_key = :t AND status = 'open' "
                    "AND id = ANY(:ids) RETURNING id"
                ),
                {"c": repo.mapping.client, "t": repo.mapping.name, "ids": sorted(set(ids))},
            ).scalars()
        )


# ----- records ----------------------------------------------------------------------------------


def locate_record(
    engine: Engine, record_id: str, keys: Sequence[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The (client, table key)s among `keys` whose bookkeeping knows this record (primary-key
    lookups of the sync state)."""
    if not keys:
        return []
    with engine.connect() as conn:
        return [
            (row[0], row[1])
            for row in conn.execute(
                text(
                    "SELECT k.client, k.table_key FROM unnest(CAST(:clients AS text[]), "
                    "CAST(:tables AS text[])) WITH ORDINALITY AS k(client, table_key, n) "
                    "WHERE EXISTS (SELECT 1 FROM reconcile.sync_state s WHERE s.client = k.client "
                    "AND s.table_key = k.table_key AND s.airtable_record_id = :rid) ORDER BY k.n"
                ),
                {"clients": [k[0] for k in keys], "tables": [k[1] for k in keys], "rid": record_id},
            ).all()
        ]


def portal_row(engine: Engine, mapping: TableMapping, record_id: str) -> dict[str, Any] | None:
    """The record's mapped columns as the portal holds them now (None: no such row)."""
    repo = Repository(engine, mapping)
    columns = ", ".join(f"p.{_quote(f.column)}" for f in mapping.fields)
    with engine.connect() as conn:
        row = conn.execute(
            text(
                f"SELECT {columns} FROM {repo.table_sql} p WHERE p.{repo.key_sql} = :rid "
                f"AND {repo.client_rows('p')} LIMIT 1"
            ),
            {"rid": record_id, **repo.client_params},
        ).one_or_none()
    if row is None:
        return None
    return {f.column: value for f, value in zip(mapping.fields, row, strict=True)}


def record_holds(
    engine: Engine, record_id: str, client: str | None, table: str | None
) -> list[review.Hold]:
    """The record's open holds (every field), oldest first."""
    conditions, params = ["q.airtable_record_id = :rid", "q.released_at IS NULL"], {}
    if client is not None:
        conditions.append("q.client = :c")
        params["c"] = client
    if table is not None:
        conditions.append("q.table_key = :t")
        params["t"] = table
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT q.id, q.client, q.table_key, q.airtable_record_id, q.field, q.direction, "
                "q.reason, q.raw_value, q.attempts, q.first_seen_at, q.last_seen_at, "
                f"q.released_at, q.run_id FROM reconcile.quarantine q WHERE "
                f"{' AND '.join(conditions)} ORDER BY q.first_seen_at, q.id LIMIT 100"
            ),
            {**params, "rid": record_id},
        ).all()
    return [review.Hold(*row) for row in rows]
