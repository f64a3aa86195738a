"""Identifiers and timestamps in Airtable's formats, and the emulator's controllable clock."""

import math
import random
import string
import threading
import time
from datetime import UTC, datetime

_ALPHABET = string.ascii_letters + string.digits
# Ids only need to be unique and Airtable-shaped, not unguessable; a private generator keeps
# them independent of any seeding the caller does on the global `random`.
_rng = random.Random()


def new_id(prefix: str) -> str:
    """An Airtable-style id: a three-letter prefix and 14 alphanumerics (``rec…``, ``att…``)."""
    return prefix + "".join(_rng.choices(_ALPHABET, k=14))


def utc_now() -> datetime:
    return truncate_ms(datetime.now(UTC))


def truncate_ms(value: datetime) -> datetime:
    """Airtable keeps millisecond precision; comparisons must agree with what clients see."""
    return value.replace(microsecond=value.microsecond - value.microsecond % 1000)


def format_datetime(value: datetime) -> str:
    """``2024-01-02T03:04:05.000Z``, the only datetime format the API returns."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_datetime(text: str) -> datetime:
    """Parse ISO 8601 (``Z`` or offset; date-only means midnight); naive input is UTC.

    Raises:
        ValueError: the text is not an ISO 8601 date or datetime.
    """
    text = text.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return truncate_ms(value.astimezone(UTC))


def coerce_datetime(value: "datetime | str") -> datetime:
    """Accept a datetime (naive means UTC) or an ISO string, as the Python helpers do."""
    if isinstance(value, str):
        return parse_datetime(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return truncate_ms(value.astimezone(UTC))


class EmulatorClock:
    """The emulator's monotonic clock: rate-limit windows, 429 blocks and list-offset lifetimes.

    It follows `time.monotonic` plus an offset, and never goes back: `advance` moves it forward
    (a test waits out a 30-second block in no time), and `freeze` stops it, so that every request
    until `unfreeze` (or the next `advance`) arrives at the same instant: "51 requests within
    one second" then holds however slow the machine is. Record timestamps (``createdTime``,
    last-modified times) keep following the wall clock. Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offset = 0.0
        self._frozen_at: float | None = None

    def now(self) -> float:
        with self._lock:
            if self._frozen_at is not None:
                return self._frozen_at
            return time.monotonic() + self._offset

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds`` (>= 0); returns the new time.

        Raises:
            ValueError: ``seconds`` is negative or not finite (the clock is monotonic).
        """
        seconds = float(seconds)
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"The clock only moves forward: cannot advance by {seconds}")
        with self._lock:
            self._offset += seconds
            if self._frozen_at is not None:
                self._frozen_at += seconds
                return self._frozen_at
            return time.monotonic() + self._offset

    def freeze(self) -> float:
        """Stop the clock at the current time (advancing still moves it); returns that time."""
        with self._lock:
            if self._frozen_at is None:
                self._frozen_at = time.monotonic() + self._offset
            return self._frozen_at

    def unfreeze(self) -> float:
        """Let the clock run again from where it stands (it never jumps back); its time."""
        with self._lock:
            if self._frozen_at is not None:
                self._offset = self._frozen_at - time.monotonic()
                self._frozen_at = None
            return time.monotonic() + self._offset

    def state(self) -> dict[str, float | bool]:
        with self._lock:
            frozen = self._frozen_at is not None
            now = self._frozen_at if frozen else time.monotonic() + self._offset
            return {"now": now, "offset": self._offset, "frozen": frozen}
