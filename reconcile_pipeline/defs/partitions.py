"""The reconcile windows: 20-minute time partitions in UTC.

A window is closed at its start and open at its end: the window keyed `2026-03-02-10:20` holds
every change stamped at `10:20:00.000000 <= t < 10:40:00` UTC, so each instant belongs to exactly
one window. Windows start on the hour and at :20 and :40 (cron `*/20 * * * *`).

`end_offset=1` makes the window still in progress a valid partition, so the newest changes are
reconciled without waiting for their window to close; running a window again once it has closed
is harmless because every run is idempotent.

The partitions start at the first window of `partitions_start()`: `RECONCILE_PARTITIONS_START`,
else the project file's `partitions_start`, else a fixed default; the `reconcile` command line
sets the variable to the day of the first recorded run (see `partitions_start.py`). Windows before
the start are not partitions, so the UI lists only the windows since then.
"""

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg

from reconcile_pipeline.defs.partitions_start import (
    DEFAULT_PARTITIONS_START,
    PARTITIONS_START_ENV,
    configured_start,
    parse_start,
    resolve_start,
)

__all__ = [
    "DEFAULT_PARTITIONS_START",
    "PARTITIONS_START",
    "PARTITIONS_START_ENV",
    "parse_partitions_start",
    "partition_key_for",
    "partitions_start",
    "reconcile_windows",
    "window_for",
]

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
    Raises ValueError naming RECONCILE_PARTITIONS_START for a value that is not one.
    """
    return window_for(parse_start(value))[0]


def partitions_start(
    environ: Mapping[str, str] | None = None,
    configured: Any = None,
    *,
    now: datetime | None = None,
) -> datetime:
    """The first window's start: `RECONCILE_PARTITIONS_START` in `environ` (default: this
    process's environment), else `configured` (default: the project file's
    `partitions_start`), else `DEFAULT_PARTITIONS_START`; aligned back to its window.

    Raises ValueError naming where a bad value came from (unparsable, or in the future).
    """
    if configured is None:
        configured = configured_start()
    return window_for(resolve_start(environ, configured, now=now))[0]


# Read when the code location loads, on purpose: Dagster needs the partitions definition then,
# before any run or resource exists. Changing the variable (or the file) takes effect on reload.
PARTITIONS_START = partitions_start()

reconcile_windows = dg.TimeWindowPartitionsDefinition(
    cron_schedule="*/20 * * * *",
    start=PARTITIONS_START,
    fmt=PARTITION_KEY_FORMAT,
    timezone="UTC",
    end_offset=1,
)
