"""Where the reconcile partitions start, without importing the partitions themselves.

The first window is, in order:

1. `RECONCILE_PARTITIONS_START` (an ISO date or date-time; naive means UTC), read when the code
   location loads, like `RECONCILE_CONFIG`;
2. the project file's optional top-level `partitions_start`;
3. `DEFAULT_PARTITIONS_START`, a fixed date, so the partitions never move between two loads.

The `reconcile` command line exports the variable when neither 1 nor 2 sets a start, before it
loads the definitions or starts Dagster's processes (`export_partitions_start`): the day this
database recorded its first run (`reconcile.runs`), or the day a backfill reaches back to when
that is earlier, or today (midnight UTC) on a database that has recorded none. That day is
stable once one run is recorded, so the partitions start at the first run and stay there; the
database is the persistence, and nothing else is written.

This module imports neither Dagster nor `partitions.py` (which builds the partitions definition
when it is imported), so the command line can settle the start before anything reads it.
"""

import datetime as dt
import os
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

PARTITIONS_START_ENV = "RECONCILE_PARTITIONS_START"
# The last resort only (a code location loaded with neither the variable, the file's
# `partitions_start`, nor the `reconcile` command line that exports the variable): fixed, so the
# partitions never move between loads. Dates before it are not windows.
DEFAULT_PARTITIONS_START = "2026-01-01"
CONFIG_FIELD = "partitions_start"

FIRST_RECORDED_SQL = "SELECT least(min(window_start), min(started_at)) FROM reconcile.runs"


class PartitionsStartError(ValueError):
    """A start that cannot be used, in a message that names where it came from."""


def parse_start(value: str, source: str = PARTITIONS_START_ENV) -> dt.datetime:
    """An ISO date or date-time as an aware UTC datetime (naive means UTC), not yet aligned to a
    window. `source` names where the value came from in the error."""
    try:
        parsed = dt.datetime.fromisoformat(value.strip())  # "Z" is accepted from Python 3.11
    except ValueError:
        raise PartitionsStartError(
            f"{source}={value!r} is not an ISO date or datetime "
            "(e.g. 2026-01-01 or 2026-01-01T06:00:00Z)"
        ) from None
    return as_utc(parsed)


def as_utc(value: dt.datetime | dt.date) -> dt.datetime:
    """A date as its midnight UTC; a naive datetime as UTC; an aware one converted to UTC."""
    if not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def configured_start() -> dt.datetime | dt.date | str | None:
    """The project file's `partitions_start`, when its model has the field and the file sets it.

    A project file that does not load gives None here: its error is reported where the
    definitions load the file, with the line it is on.
    """
    from reconcile_pipeline.config.load import ConfigError
    from reconcile_pipeline.defs.project import project

    try:
        config = project().config
    except ConfigError:
        return None
    return getattr(config, CONFIG_FIELD, None)


def resolve_start(
    environ: Mapping[str, str] | None = None,
    configured: Any = None,
    *,
    now: dt.datetime | None = None,
) -> dt.datetime:
    """The partitions' start (unaligned, aware UTC) from the variable, else `configured` (the
    project file's value), else the fixed default. A start in the future is refused: no window
    would exist to reconcile and the schedule would request nothing, silently."""
    environ = os.environ if environ is None else environ
    value = (environ.get(PARTITIONS_START_ENV) or "").strip()
    if value:
        start, source = parse_start(value), f"{PARTITIONS_START_ENV}={value!r}"
    elif configured is not None:
        source = f"The project file's {CONFIG_FIELD} ({configured})"
        if isinstance(configured, str):
            start = parse_start(configured, f"The project file's {CONFIG_FIELD}")
        else:
            start = as_utc(configured)
    else:
        start, source = parse_start(DEFAULT_PARTITIONS_START), DEFAULT_PARTITIONS_START
    now = now or dt.datetime.now(dt.UTC)
    if start > now:
        raise PartitionsStartError(
            f"{source} is in the future ({start.isoformat()} > now, {now.isoformat()}): "
            "no window would exist yet; set a past date or datetime."
        )
    return start


def midnight(ts: dt.datetime) -> dt.datetime:
    """The start of `ts`'s day in UTC."""
    return as_utc(ts).replace(hour=0, minute=0, second=0, microsecond=0)


def first_recorded_day(engine: Any) -> dt.datetime | None:
    """Midnight UTC of the first window or run start this database recorded, or None when it
    recorded none (or has no `reconcile` schema yet). `engine` is a SQLAlchemy engine."""
    from sqlalchemy import text
    from sqlalchemy.exc import ProgrammingError

    try:
        with engine.connect() as conn:
            first = conn.execute(text(FIRST_RECORDED_SQL)).scalar()
    except ProgrammingError:  # no reconcile.runs: a database the migrations have not reached
        return None
    return midnight(first) if first is not None else None


def launch_start(
    engine: Any, *, earliest: dt.datetime | None = None, now: dt.datetime | None = None
) -> dt.datetime:
    """The start the command line exports when nothing sets one: midnight UTC of the first
    recorded run, or of `earliest` (the oldest instant a backfill reconciles) when that is
    earlier, or of `now` when there is neither."""
    days = [day for day in (first_recorded_day(engine), earliest) if day is not None]
    return midnight(min(days) if days else (now or dt.datetime.now(dt.UTC)))


def export_partitions_start(
    database_url: str,
    *,
    earliest: dt.datetime | None = None,
    environ: MutableMapping[str, str] | None = None,
    configured: Any = None,
    now: dt.datetime | None = None,
) -> str | None:
    """Set `RECONCILE_PARTITIONS_START` in `environ` (default: this process's environment, so
    Dagster's child processes inherit it) when neither it nor the project file sets a start;
    returns the value set, or None when a configured start is kept.

    Call it before the definitions are imported in this process (importing
    `reconcile_pipeline.definitions` builds the partitions); it raises `RuntimeError` if they
    were built already with a later start than the one needed. A configured start later than
    `earliest` raises `PartitionsStartError`, naming what to change: that backfill's first
    windows would not exist.
    """
    environ = os.environ if environ is None else environ
    configured = configured if configured is not None else configured_start()
    if (environ.get(PARTITIONS_START_ENV) or "").strip() or configured is not None:
        start = resolve_start(environ, configured, now=now)
        if earliest is not None and as_utc(earliest) < start:
            where = (
                PARTITIONS_START_ENV
                if (environ.get(PARTITIONS_START_ENV) or "").strip()
                else f"the project file's {CONFIG_FIELD}"
            )
            raise PartitionsStartError(
                f"This reaches back to {as_utc(earliest).isoformat()}, before the partitions "
                f"start ({start.isoformat()}, from {where}): set {where} to an earlier date, "
                "or reconcile a shorter span."
            )
        return None
    from sqlalchemy import create_engine

    engine = create_engine(database_url)
    try:
        start = launch_start(engine, earliest=earliest, now=now)
    finally:
        engine.dispose()
    loaded = sys.modules.get("reconcile_pipeline.defs.partitions")
    if loaded is not None and loaded.PARTITIONS_START > start:
        raise RuntimeError(
            "export_partitions_start() ran after the partitions were built (they start at "
            f"{loaded.PARTITIONS_START.isoformat()}, {start.isoformat()} is needed): call it "
            "before importing reconcile_pipeline.definitions."
        )
    value = start.date().isoformat()
    environ[PARTITIONS_START_ENV] = value
    return value
