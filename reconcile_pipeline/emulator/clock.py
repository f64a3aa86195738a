"""Identifiers and timestamps in Airtable's formats."""

import random
import string
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
