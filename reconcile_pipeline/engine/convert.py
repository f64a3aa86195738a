"""Values between Airtable, the canonical form and PostgreSQL.

The canonical form is JSON-ready and is what the merge compares and the bookkeeping stores:
text → str or None (empty text is None: Airtable omits it), integer → int, float → float,
boolean → bool (absent checkbox is False), date → "YYYY-MM-DD", datetime → UTC
"YYYY-MM-DDTHH:MM:SSZ" (seconds: the precision both sides keep), select → str or None,
json → list/dict or None. Two values are equal exactly when their canonical forms are.
"""

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any

from reconcile_pipeline.engine.mapping import FieldKind, FieldSpec, TableMapping

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


class InvalidValue(ValueError):
    """A value that cannot be mapped; the message is the quarantine reason."""


def _parse_datetime(raw: str, field: FieldSpec) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidValue(f"{field.airtable_name}: unparsable date-time {raw!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed


def format_datetime(value: dt.datetime) -> str:
    """Canonical UTC text, truncated to the second."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_text(value: str, field: FieldSpec) -> str | None:
    if "\x00" in value:
        raise InvalidValue(f"{field.airtable_name}: contains a NUL byte")
    if field.max_length is not None and len(value) > field.max_length:
        raise InvalidValue(
            f"{field.airtable_name}: {len(value)} characters, longer than {field.max_length}"
        )
    return value or None


def from_airtable(field: FieldSpec, raw: Any) -> Any:
    """Airtable's value (absent = None) → canonical, or InvalidValue with a reason."""
    if isinstance(raw, dict) and ("error" in raw or "specialValue" in raw):
        detail = raw.get("error") or raw.get("specialValue")
        raise InvalidValue(f"{field.airtable_name}: formula error {detail!r}")
    kind = field.kind
    if kind is FieldKind.BOOLEAN:
        if raw is None:
            return False
        if not isinstance(raw, bool):
            raise InvalidValue(f"{field.airtable_name}: expected a checkbox, got {raw!r}")
        return raw
    if raw is None or raw == "" or raw == []:
        return None
    if kind is FieldKind.TEXT:
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise InvalidValue(f"{field.airtable_name}: expected text, got {type(raw).__name__}")
        return _check_text(str(raw), field)
    if kind is FieldKind.SELECT:
        if not isinstance(raw, str):
            raise InvalidValue(f"{field.airtable_name}: expected an option, got {raw!r}")
        if field.choices is not None and raw not in field.choices:
            raise InvalidValue(f"{field.airtable_name}: unknown option {raw!r}")
        return _check_text(raw, field)
    if kind is FieldKind.INTEGER:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise InvalidValue(f"{field.airtable_name}: expected a number, got {raw!r}")
        if isinstance(raw, float) and not raw.is_integer():
            raise InvalidValue(f"{field.airtable_name}: expected a whole number, got {raw!r}")
        value = int(raw)
        if not INT32_MIN <= value <= INT32_MAX:
            raise InvalidValue(f"{field.airtable_name}: {value} is out of range")
        return value
    if kind is FieldKind.FLOAT:
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            raise InvalidValue(f"{field.airtable_name}: expected a number, got {raw!r}")
        return float(raw)
    if kind is FieldKind.DATE:
        if not isinstance(raw, str):
            raise InvalidValue(f"{field.airtable_name}: expected a date, got {raw!r}")
        try:
            return dt.date.fromisoformat(raw[:10]).isoformat()
        except ValueError as exc:
            raise InvalidValue(f"{field.airtable_name}: unparsable date {raw!r}") from exc
    if kind is FieldKind.DATETIME:
        if not isinstance(raw, str):
            raise InvalidValue(f"{field.airtable_name}: expected a date-time, got {raw!r}")
        return format_datetime(_parse_datetime(raw, field))
    if kind is FieldKind.JSON:
        if not isinstance(raw, list | dict):
            raise InvalidValue(f"{field.airtable_name}: expected a list, got {raw!r}")
        return raw
    raise AssertionError(f"unhandled kind {kind}")


def from_postgres(field: FieldSpec, value: Any) -> Any:
    """A value read from PostgreSQL → canonical (the database already enforced its type)."""
    kind = field.kind
    if kind is FieldKind.BOOLEAN:
        return bool(value) if value is not None else False
    if value is None:
        return None
    if kind in (FieldKind.TEXT, FieldKind.SELECT):
        return value or None
    if kind is FieldKind.INTEGER:
        return int(value)
    if kind is FieldKind.FLOAT:
        return float(value)
    if kind is FieldKind.DATE:
        return value.isoformat() if isinstance(value, dt.date) else str(value)[:10]
    if kind is FieldKind.DATETIME:
        if isinstance(value, str):
            value = _parse_datetime(value, field)
        return format_datetime(value)
    if kind is FieldKind.JSON:
        return value if value != [] else None
    raise AssertionError(f"unhandled kind {kind}")


def to_airtable(field: FieldSpec, canonical: Any) -> Any:
    """Canonical → the value PATCHed to Airtable (None clears a field)."""
    if field.kind is FieldKind.BOOLEAN:
        return bool(canonical)
    return canonical


def record_values(
    mapping: TableMapping, fields: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """An Airtable record's `fields` → canonical values by column, and the problems found.

    Every mapped field is checked so that the quarantine reason lists all of them at once.
    """
    values: dict[str, Any] = {}
    problems: list[str] = []
    for spec in mapping.fields:
        try:
            value = from_airtable(spec, fields.get(spec.airtable_name))
        except InvalidValue as exc:
            problems.append(str(exc))
            continue
        if value is None and spec.required:
            problems.append(f"{spec.airtable_name}: required field is missing")
            continue
        values[spec.column] = value
    return values, problems


def parse_airtable_time(raw: Any) -> dt.datetime | None:
    """Airtable's createdTime / lastModifiedTime text → aware datetime (None when absent/bad)."""
    if not isinstance(raw, str) or not raw:
        return None
    try:
        parsed = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
