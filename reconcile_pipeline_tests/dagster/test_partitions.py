"""Reconcile windows: 20 minutes, UTC, closed start / open end, in-progress window included."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from reconcile_pipeline.defs.partitions import (
    PARTITIONS_START_ENV,
    parse_partitions_start,
    partition_key_for,
    reconcile_windows,
    window_for,
)


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
