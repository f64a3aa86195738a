"""Reconcile windows: 20 minutes, UTC, closed start / open end, in-progress window included."""

import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from reconcile_pipeline.config.load import CONFIG_ENV
from reconcile_pipeline.defs.partitions import (
    DEFAULT_PARTITIONS_START,
    PARTITIONS_START_ENV,
    parse_partitions_start,
    partition_key_for,
    partitions_start,
    reconcile_windows,
    window_for,
)
from reconcile_pipeline.defs.partitions_start import export_partitions_start, first_recorded_day


def utc(hour: int, minute: int, second: int = 0, microsecond: int = 0) -> datetime:
    return datetime(2026, 3, 2, hour, minute, second, microsecond, tzinfo=UTC)


@pytest.mark.parametrize(
    ("ts", "start"),
    [
        (utc(10, 20), utc(10, 20)),  # the start instant belongs to its own window (closed)
        (utc(10, 39, 59, 999999), utc(10, 20)),  # the last instant before the end
        (utc(10, 40), utc(10, 40)),  # the end instant belongs to the next window (open)
        (utc(0, 0), utc(0, 0)),  # midnight starts a window
        (utc(23, 59), utc(23, 40)),
    ],
)
def test_window_for_is_closed_at_start_and_open_at_end(ts: datetime, start: datetime) -> None:
    assert window_for(ts) == (start, start + timedelta(minutes=20))


def test_window_for_converts_other_timezones_to_utc() -> None:
    # 12:25 at UTC+2 is 10:25 UTC.
    ts = datetime(2026, 3, 2, 12, 25, tzinfo=timezone(timedelta(hours=2)))

    assert window_for(ts) == (utc(10, 20), utc(10, 40))
    assert partition_key_for(ts) == "2026-03-02-10:20"


def test_window_for_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        window_for(datetime(2026, 3, 2, 10, 25))


@pytest.mark.parametrize("ts", [utc(0, 0), utc(10, 25), utc(10, 39, 59), utc(23, 59)])
def test_helpers_agree_with_the_dagster_partitions_definition(ts: datetime) -> None:
    key = partition_key_for(ts)
    window = reconcile_windows.time_window_for_partition_key(key)

    assert (window.start, window.end) == window_for(ts)


def test_the_in_progress_window_is_a_valid_partition() -> None:
    # end_offset=1: the newest changes need not wait for their window to close.
    before = partition_key_for(datetime.now(UTC))
    last = reconcile_windows.get_last_partition_key()
    after = partition_key_for(datetime.now(UTC))

    # Either side of the call, in case a window boundary passes during it.
    assert last in {before, after}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-01", datetime(2026, 1, 1, tzinfo=UTC)),  # a date is midnight UTC
        ("2026-01-01T06:00:00Z", datetime(2026, 1, 1, 6, tzinfo=UTC)),
        ("2026-01-01T08:07:00+02:00", datetime(2026, 1, 1, 6, tzinfo=UTC)),  # back to 06:00
        ("2026-01-01 06:30", datetime(2026, 1, 1, 6, 20, tzinfo=UTC)),  # naive means UTC
    ],
)
def test_partitions_start_is_parsed_as_utc_and_aligned_to_a_window(
    value: str, expected: datetime
) -> None:
    assert parse_partitions_start(value) == expected


def test_an_unparsable_partitions_start_names_the_variable() -> None:
    with pytest.raises(ValueError, match=PARTITIONS_START_ENV):
        parse_partitions_start("last tuesday")


# Where the partitions start (issue 14: the UI showed 24,005 partitions from a fixed 2026-01-01).


def load_partitions(tmp_path: Path, start: str | None) -> subprocess.CompletedProcess[str]:
    """Load the code location in a fresh interpreter, as Dagster does, with the variable set to
    `start` (unset for None); it prints the first partition key and the number of partitions."""
    env = {k: v for k, v in os.environ.items() if k not in (PARTITIONS_START_ENV, CONFIG_ENV)}
    if start is not None:
        env[PARTITIONS_START_ENV] = start
    script = (
        "from reconcile_pipeline.definitions import defs\n"
        "from reconcile_pipeline.defs.partitions import reconcile_windows as w\n"
        "print(w.get_first_partition_key(), w.get_num_partitions())\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,  # no reconcile.yaml here: the shipped demo's file
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_fresh_start_has_a_days_worth_of_partitions_not_months(tmp_path: Path) -> None:
    # What `reconcile` exports on a database with no run yet: today, midnight UTC.
    today = datetime.now(UTC).date()

    done = load_partitions(tmp_path, today.isoformat())

    assert done.returncode == 0, done.stderr
    first, count = done.stdout.split()
    assert first == f"{today.isoformat()}-00:00"
    # 72 windows a day, plus the in-progress one (end_offset=1) and a midnight passing meanwhile.
    assert 1 <= int(count) <= 72 + 2


def test_the_variable_is_read_when_the_code_location_loads(tmp_path: Path) -> None:
    # 06:30 two days ago: between 1.7 and 2.3 days of windows, whatever the time of day.
    start = (datetime.now(UTC) - timedelta(days=2)).replace(
        hour=6, minute=30, second=0, microsecond=0
    )
    first_window = start.replace(minute=20)  # 06:30 is inside the 06:20 window

    def windows_since_first(moment: datetime) -> int:
        return (moment - first_window) // timedelta(minutes=20)

    before = datetime.now(UTC)
    done = load_partitions(tmp_path, start.strftime("%Y-%m-%dT%H:%M:%SZ"))
    after = datetime.now(UTC)

    assert done.returncode == 0, done.stderr
    first, count = done.stdout.split()
    assert first == start.strftime("%Y-%m-%d-06:20")  # moved back to its window's start
    # Every window from the first to now (the one in progress counted or not): the variable's
    # start, not the default's (a day) or an older deployment's.
    assert windows_since_first(before) <= int(count) <= windows_since_first(after) + 1


@pytest.mark.parametrize("value", ["last tuesday", "2026-13-01", "2999-01-01"])
def test_a_bad_start_stops_the_load_with_a_message_naming_the_variable(
    tmp_path: Path, value: str
) -> None:
    done = load_partitions(tmp_path, value)

    assert done.returncode != 0
    [last] = [line for line in done.stderr.splitlines() if line.strip()][-1:]
    assert PARTITIONS_START_ENV in last
    assert value in last


def test_the_project_files_start_is_used_when_the_variable_is_unset() -> None:
    configured = datetime(2026, 3, 1, 6, 25)  # naive: UTC, as a YAML date-time is read

    assert partitions_start({}, configured) == datetime(2026, 3, 1, 6, 20, tzinfo=UTC)
    assert partitions_start({}, date(2026, 3, 1)) == datetime(2026, 3, 1, tzinfo=UTC)
    # The variable wins over the file.
    assert partitions_start({PARTITIONS_START_ENV: "2026-02-01"}, configured) == datetime(
        2026, 2, 1, tzinfo=UTC
    )


def test_without_any_setting_the_start_is_fixed_so_partitions_never_move() -> None:
    first = partitions_start({}, None, now=datetime(2026, 6, 1, tzinfo=UTC))
    later = partitions_start({}, None, now=datetime(2027, 6, 1, tzinfo=UTC))

    assert first == later == parse_partitions_start(DEFAULT_PARTITIONS_START)


def test_a_blank_variable_counts_as_unset() -> None:
    assert partitions_start({PARTITIONS_START_ENV: "  "}, None) == parse_partitions_start(
        DEFAULT_PARTITIONS_START
    )


def record_run(engine: Engine, window_start: datetime | None, started_at: datetime) -> None:
    with engine.begin() as conn:
        # From schema revision 0005 on, each run also names its client.
        has_client = conn.execute(
            text(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = 'reconcile' "
                "AND table_name = 'runs' AND column_name = 'client'"
            )
        ).scalar()
        columns, values = ("client, ", "'demo', ") if has_client else ("", "")
        conn.execute(
            text(
                f"INSERT INTO reconcile.runs ({columns}table_key, stage, window_start, started_at) "
                f"VALUES ({values}'leads', 'pull', :window_start, :started_at)"
            ),
            {"window_start": window_start, "started_at": started_at},
        )


NOW = datetime(2026, 11, 30, 14, 5, tzinfo=UTC)


def test_the_command_line_exports_today_on_a_database_without_runs(database_url: str) -> None:
    environ: dict[str, str] = {}

    value = export_partitions_start(database_url, environ=environ, now=NOW, configured=None)

    assert value == "2026-11-30"
    assert environ == {PARTITIONS_START_ENV: "2026-11-30"}


def test_the_command_line_exports_the_day_of_the_first_recorded_run(
    database_url: str, engine: Engine
) -> None:
    # A run over an older window (a backfill) counts from its window, not from when it ran.
    record_run(engine, datetime(2026, 11, 27, 23, 40, tzinfo=UTC), NOW - timedelta(days=1))
    record_run(engine, None, NOW)
    environ: dict[str, str] = {}

    assert export_partitions_start(database_url, environ=environ, now=NOW) == "2026-11-27"
    # Stable: the next load, days later, starts at the same day.
    later = NOW + timedelta(days=9)
    assert export_partitions_start(database_url, environ={}, now=later) == "2026-11-27"


def test_a_backfill_reaching_further_back_moves_the_start_to_its_day(database_url: str) -> None:
    environ: dict[str, str] = {}

    value = export_partitions_start(
        database_url, environ=environ, earliest=NOW - timedelta(hours=72), now=NOW
    )

    assert value == "2026-11-27"


def test_a_set_start_is_kept_and_a_backfill_before_it_is_refused(database_url: str) -> None:
    environ = {PARTITIONS_START_ENV: "2026-11-01"}

    assert export_partitions_start(database_url, environ=environ, now=NOW) is None
    assert environ == {PARTITIONS_START_ENV: "2026-11-01"}
    with pytest.raises(ValueError, match=f"set {PARTITIONS_START_ENV} to an earlier date"):
        export_partitions_start(
            database_url, environ=environ, earliest=datetime(2026, 10, 30, tzinfo=UTC), now=NOW
        )
    # The project file's start is kept the same way.
    assert export_partitions_start(database_url, environ={}, configured=date(2026, 11, 2)) is None


def test_a_database_without_the_reconcile_schema_has_no_first_run(
    empty_database_url: str,
) -> None:
    engine = create_engine(empty_database_url)
    try:
        assert first_recorded_day(engine) is None
    finally:
        engine.dispose()
