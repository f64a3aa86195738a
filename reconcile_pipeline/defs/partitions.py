"""The reconcile windows: 20-minute time partitions in UTC.

A window is closed at its start and open at its end: the window keyed `2026-03-02-10:20` holds
every change stamped at `10:20:00.000000 <= t < 10:40:00` UTC, so each instant belongs to exactly
one window. Windows start on the hour and at :20 and :40 (cron `*/20 * * * *`).

`end_offset=1` makes the window still in progress a valid partition, so the newest changes are
reconciled without waiting for their window to close; running a window again once it has closed
is harmless because every run is idempotent.
"""

import os
from datetime import UTC, datetime, timedelta

import dagster as dg

PARTITIONS_START_ENV = "RECONCILE_PARTITIONS_START"
DEFAULT_PARTITIONS_START = "2026-01-01"

WINDOW = timedelta(minutes=20)
PARTITION_KEY_FORMAT = "%Y-%m-%d-%H:%M"


def window_for(ts: datetime) -> tuple[datetime, datetime]:
    """The `[start, end)` UTC window containing `ts` (which must be timezone-aware)."""
    if ts.tzinfo is None:
        # A naive time could be local or UTC; guessing would silently shift a window.
        raise ValueError(f"window_for needs a timezone-aware datetime, got naive {ts!r}")
    utc = ts.astimezone(UTC)
    window_minutes = int(WINDOW.total_seconds() // 60)
    start = utc.replace(minute=utc.minute - utc.minute % window_minutes, second=0, microsecond=0)
    return start, start + WINDOW


def partition_key_for(ts: datetime) -> str:
    """The partition key of the window containing `ts` (timezone-aware)."""
    return window_for(ts)[0].strftime(PARTITION_KEY_FORMAT)


def parse_partitions_start(value: str) -> datetime:
    """The first window's start from an ISO date or datetime (naive means UTC).

    A time inside a window is moved back to that window's start, so the first partition is whole.
    """
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"{PARTITIONS_START_ENV}={value!r} is not an ISO date or datetime "
            "(e.g. 2026-01-01 or 2026-01-01T06:00:00Z)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return window_for(parsed)[0]


# Read at import on purpose: Dagster needs the partitions definition when it loads the code
# location, before any run or resource exists. Changing the variable takes effect on reload.
PARTITIONS_START = parse_partitions_start(
    os.environ.get(PARTITIONS_START_ENV) or DEFAULT_PARTITIONS_START
)

reconcile_windows = dg.TimeWindowPartitionsDefinition(
    cron_schedule="*/20 * * * *",
    start=PARTITIONS_START,
    fmt=PARTITION_KEY_FORMAT,
    timezone="UTC",
    end_offset=1,
)
