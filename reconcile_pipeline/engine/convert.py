"""Values between Airtable, the canonical form and PostgreSQL.

The canonical form is JSON-ready and is what the merge compares and the bookkeeping stores:
text → str or None (empty text is None: Airtable omits it), integer → int, float → float,
boolean → bool (absent checkbox is False), date → "YYYY-MM-DD", datetime → UTC
"YYYY-MM-DDTHH:MM:SSZ" (seconds: the precision both sides keep), select → str or None,
json → list/dict or None. Two values are equal exactly when their canonical forms are.
"""

import datetime as dt
import json
import math
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from reconcile_pipeline.engine.mapping import FieldKind, FieldSpec, TableMapping

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
# What a portal table's timestamptz and Python's datetime can both hold.
EARLIEST_DATETIME = dt.datetime(1, 1, 2, tzinfo=dt.UTC)
LATEST_DATETIME = dt.datetime(9999, 12, 30, tzinfo=dt.UTC)
RECORD = "*"  # the quarantine "field" of a problem with the whole record


class InvalidValue(ValueError):
    """A value that cannot be mapped; the message is the quarantine reason."""


def _parse_datetime(raw: str, field: FieldSpec) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        parsed = parsed.astimezone(dt.UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidValue(f"{field.display}: unparsable date-time {_short(raw)}") from exc
    if not EARLIEST_DATETIME <= parsed <= LATEST_DATETIME:
        raise InvalidValue(f"{field.display}: date-time {_short(raw)} is out of range")
    return parsed


def _short(raw: Any, limit: int = 80) -> str:
    """A value for a quarantine reason: repr, cut short (the raw value is kept apart)."""
    text = repr(raw)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# Surrogate code points: UTF-8 (and so PostgreSQL) cannot encode one, paired or not (a str
# decoded from valid text never holds them; one built from escapes or bad JSON can).
_SURROGATE = re.compile("[\ud800-\udfff]")


def has_lone_surrogate(text: str) -> bool:
    """Whether `text` holds a code point UTF-8 cannot encode (checked in C: every text field
    of every pulled record passes here)."""
    return not text.isascii() and _SURROGATE.search(text) is not None


def jsonb_safe(value: Any) -> bool:
    """Whether PostgreSQL's jsonb (and UTF-8) can hold `value` as is: no NUL byte, no lone
    surrogate, no NaN/Infinity anywhere in it."""
    if isinstance(value, str):
        return "\x00" not in value and not has_lone_surrogate(value)
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple):
        return all(jsonb_safe(item) for item in value)
    if isinstance(value, dict):
        return all(
            isinstance(key, str) and jsonb_safe(key) and jsonb_safe(item)
            for key, item in value.items()
        )
    return False


def ascii_json(value: Any) -> str:
    """Lossless ASCII JSON text of any value json can express (NaN and lone surrogates as
    escapes/tokens Python's json reads back), storable in a text column."""
    return json.dumps(value, ensure_ascii=True, allow_nan=True, default=repr)


RAW_PREVIEW_CHARS = 10_000


def storable_raw(value: Any) -> Any:
    """`value` as a jsonb-safe value for the bookkeeping (quarantine, conflicts): itself when
    jsonb holds it, else `{"unstorable_json": <ASCII JSON text>}`; long text is cut short (the
    snapshot keeps the whole record)."""
    if isinstance(value, str) and len(value) > RAW_PREVIEW_CHARS and jsonb_safe(value):
        return {"truncated": value[:RAW_PREVIEW_CHARS], "length": len(value)}
    if jsonb_safe(value):
        text = ascii_json(value)
        if len(text) <= 10 * RAW_PREVIEW_CHARS:
            return value
        return {"truncated_json": text[:RAW_PREVIEW_CHARS], "length": len(text)}
    text = ascii_json(value)
    return {"unstorable_json": text[: 10 * RAW_PREVIEW_CHARS], "length": len(text)}


def format_datetime(value: dt.datetime) -> str:
    """Canonical UTC text, truncated to the second."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    # Not strftime("%Y"): it writes year 99 as "99", which PostgreSQL cannot read back.
    utc = value.astimezone(dt.UTC).replace(microsecond=0, tzinfo=None)
    return utc.isoformat(timespec="seconds") + "Z"


def _check_text(value: str, field: FieldSpec) -> str | None:
    if "\x00" in value:
        raise InvalidValue(f"{field.display}: contains a NUL byte")
    if has_lone_surrogate(value):
        raise InvalidValue(f"{field.display}: contains a lone UTF-16 surrogate")
    if field.max_length is not None and len(value) > field.max_length:
        raise InvalidValue(
            f"{field.display}: {len(value)} characters, longer than {field.max_length}"
        )
    return value or None


def from_airtable(field: FieldSpec, raw: Any) -> Any:
    """Airtable's value (absent = None) → canonical, or InvalidValue with a reason.

    Never raises anything else: whatever Airtable sends ends in a value or a quarantine reason.
    """
    try:
        return _from_airtable(field, raw)
    except InvalidValue:
        raise
    except Exception as exc:  # noqa: BLE001 — no input may fail a batch (DESIGN §3.5)
        raise InvalidValue(
            f"{field.display}: cannot convert {_short(raw)} ({type(exc).__name__})"
        ) from exc


def _from_airtable(field: FieldSpec, raw: Any) -> Any:
    if isinstance(raw, dict) and ("error" in raw or "specialValue" in raw):
        detail = raw.get("error") or raw.get("specialValue")
        raise InvalidValue(f"{field.display}: formula error {detail!r}")
    kind = field.kind
    if kind is FieldKind.BOOLEAN:
        if raw is None:
            return False
        if not isinstance(raw, bool):
            raise InvalidValue(f"{field.display}: expected a checkbox, got {_short(raw)}")
        return raw
    if raw is None or raw == "" or raw == []:
        return None
    if kind is FieldKind.TEXT:
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise InvalidValue(f"{field.display}: expected text, got {type(raw).__name__}")
        return _check_text(str(raw), field)
    if kind is FieldKind.SELECT:
        if not isinstance(raw, str):
            raise InvalidValue(f"{field.display}: expected an option, got {_short(raw)}")
        if field.choices is not None and raw not in field.choices:
            raise InvalidValue(f"{field.display}: unknown option {_short(raw)}")
        return _check_text(raw, field)
    if kind is FieldKind.INTEGER:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise InvalidValue(f"{field.display}: expected a number, got {_short(raw)}")
        if isinstance(raw, float) and not (math.isfinite(raw) and raw.is_integer()):
            raise InvalidValue(f"{field.display}: expected a whole number, got {_short(raw)}")
        value = int(raw)
        if not INT32_MIN <= value <= INT32_MAX:
            raise InvalidValue(f"{field.display}: {_short(value)} is out of range")
        return value
    if kind is FieldKind.FLOAT:
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            raise InvalidValue(f"{field.display}: expected a number, got {_short(raw)}")
        return float(raw)
    if kind is FieldKind.DATE:
        if not isinstance(raw, str):
            raise InvalidValue(f"{field.display}: expected a date, got {_short(raw)}")
        try:
            return dt.date.fromisoformat(raw[:10]).isoformat()
        except ValueError as exc:
            raise InvalidValue(f"{field.display}: unparsable date {_short(raw)}") from exc
    if kind is FieldKind.DATETIME:
        if not isinstance(raw, str):
            raise InvalidValue(f"{field.display}: expected a date-time, got {_short(raw)}")
        return format_datetime(_parse_datetime(raw, field))
    if kind is FieldKind.ATTACHMENTS:
        return _attachments(field, raw)
    if kind is FieldKind.LINK:
        if not isinstance(raw, list) or not all(isinstance(i, str) and i for i in raw):
            raise InvalidValue(f"{field.display}: expected linked record ids, got {_short(raw)}")
        if len(raw) > 1:
            raise InvalidValue(
                f"{field.display}: links to {len(raw)} records; its column holds one"
            )
        return _check_text(raw[0], field)
    if kind is FieldKind.JSON:
        if not isinstance(raw, list | dict):
            raise InvalidValue(f"{field.display}: expected a list, got {_short(raw)}")
        if not jsonb_safe(raw):
            raise InvalidValue(
                f"{field.display}: holds a NUL byte, lone surrogate or NaN PostgreSQL cannot store"
            )
        return raw
    raise AssertionError(f"unhandled kind {kind}")


ATTACHMENT_KEYS = ("id", "filename", "size", "type")


def _attachments(field: FieldSpec, raw: Any) -> list[dict] | None:
    """Airtable's attachments as stable `{id, filename, size, type}` objects: the `url` and
    thumbnails Airtable returns expire after a few hours, so they are never stored."""
    if not isinstance(raw, list):
        raise InvalidValue(f"{field.display}: expected a list of attachments, got {_short(raw)}")
    stable = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise InvalidValue(f"{field.display}: not an attachment: {_short(item)}")
        stable.append({key: item[key] for key in ATTACHMENT_KEYS if key in item})
    if not jsonb_safe(stable):
        raise InvalidValue(f"{field.display}: holds a NUL byte, lone surrogate or NaN")
    return stable or None


def from_postgres(field: FieldSpec, value: Any) -> Any:
    """A value read from PostgreSQL → canonical (the database already enforced its type)."""
    return postgres_reader(field)(value)


def _postgres_boolean(value: Any) -> bool:
    return bool(value)  # NULL reads as False


def _postgres_text(value: Any) -> Any:
    return value or None


def _postgres_integer(value: Any) -> int | None:
    return None if value is None else int(value)


def _postgres_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _postgres_date(value: Any) -> str | None:
    return None if value is None else str(value)[:10]  # a date's str is its ISO form


def _postgres_list(value: Any) -> Any:
    return value if value != [] else None


def _postgres_datetime(field: FieldSpec) -> Callable[[Any], Any]:
    def read(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            value = _parse_datetime(value, field)
        return format_datetime(value)

    return read


# Module functions, not lambdas: each is its own unit for the mutation tester.
_POSTGRES_READERS: dict[FieldKind, Callable[[Any], Any]] = {
    FieldKind.BOOLEAN: _postgres_boolean,
    FieldKind.TEXT: _postgres_text,
    FieldKind.SELECT: _postgres_text,
    FieldKind.LINK: _postgres_text,
    FieldKind.INTEGER: _postgres_integer,
    FieldKind.FLOAT: _postgres_float,
    FieldKind.DATE: _postgres_date,
    FieldKind.JSON: _postgres_list,
    FieldKind.ATTACHMENTS: _postgres_list,
}


def postgres_reader(field: FieldSpec) -> Callable[[Any], Any]:
    """`from_postgres` for one field, its kind dispatched once: reads of many rows convert
    each column with the reader picked for it."""
    if field.kind is FieldKind.DATETIME:
        return _postgres_datetime(field)
    reader = _POSTGRES_READERS.get(field.kind)
    if reader is None:
        raise AssertionError(f"unhandled kind {field.kind}")
    return reader


def to_airtable(field: FieldSpec, canonical: Any) -> Any:
    """Canonical → the value PATCHed to Airtable (None clears a field)."""
    if field.kind is FieldKind.BOOLEAN:
        return bool(canonical)
    if field.kind is FieldKind.LINK:
        return [canonical] if canonical else []
    return canonical


@dataclass(frozen=True)
class FieldProblem:
    """One field of one record that cannot be mapped: held in quarantine with its reason."""

    column: str  # the PostgreSQL column, or RECORD for the whole record
    reason: str
    raw: Any = None


def portal_value_problem(field: FieldSpec, canonical: Any) -> str | None:
    """Why the mapping would reject a portal value before it is sent (None: it is valid).

    The same rules as a pulled value: a value we could not read back once Airtable echoes it
    must never be sent (DESIGN §3.4)."""
    try:
        from_airtable(field, to_airtable(field, canonical))
    except InvalidValue as exc:
        return str(exc)
    if field.required and canonical is None:
        return f"{field.display}: required field is empty"
    return None


class ConversionCount:
    """How many records `record_values` converted in this process (thread-safe): a run's
    conversions per pulled record are the difference across the run ÷ the records pulled."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0

    def add(self) -> None:
        with self._lock:
            self._value += 1

    @property
    def value(self) -> int:
        with self._lock:
            return self._value


conversions = ConversionCount()


def record_values(mapping: TableMapping, fields: Any) -> tuple[dict[str, Any], list[FieldProblem]]:
    """An Airtable record's `fields` → canonical values by column for every field that maps,
    and one problem per field that does not (field-level quarantine, DESIGN §3.5).

    Never raises: a `fields` that is not an object is one whole-record problem.
    """
    conversions.add()
    if not isinstance(fields, Mapping):
        return {}, [FieldProblem(RECORD, f"fields is not an object: {_short(fields)}", fields)]
    values: dict[str, Any] = {}
    problems: list[FieldProblem] = []
    for spec in mapping.fields:
        raw = fields.get(spec.airtable_name)
        try:
            value = from_airtable(spec, raw)
        except InvalidValue as exc:
            problems.append(FieldProblem(spec.column, str(exc), raw))
            continue
        if value is None and spec.required:
            problems.append(
                FieldProblem(spec.column, f"{spec.display}: required field is missing", raw)
            )
            continue
        values[spec.column] = value
    return values, problems


def parse_airtable_time(raw: Any) -> dt.datetime | None:
    """Airtable's createdTime / lastModifiedTime text → aware datetime (None when absent/bad)."""
    if not isinstance(raw, str) or not raw:
        return None
    try:
        parsed = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        parsed = (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)
    except (ValueError, OverflowError):
        return None
    return parsed if EARLIEST_DATETIME <= parsed <= LATEST_DATETIME else None


def modified_time(mapping: TableMapping, record: Any) -> dt.datetime | None:
    """The record's last-modified time from the mapping's lastModifiedTime field (None when
    the mapping has none, or the record holds no readable time)."""
    fields = record.get("fields") if isinstance(record, dict) else None
    if not mapping.modified_time_field or not isinstance(fields, dict):
        return None
    return parse_airtable_time(fields.get(mapping.modified_time_field))


@dataclass(frozen=True, slots=True)
class PulledRecord:
    """A pulled Airtable record converted once, at the boundary: what the merge, the preview
    frame and the drift check read instead of converting the raw record (or re-reading the
    snapshot) again. `values` are canonical by column, fields that map only; `problems` the
    fields held in quarantine."""

    record_id: str
    values: dict[str, Any]
    problems: tuple[FieldProblem, ...]
    modified: dt.datetime | None
    created: dt.datetime | None


def pulled_record(mapping: TableMapping, record: dict) -> PulledRecord:
    """Convert one pulled record (it carries an id; see `pull.readable`)."""
    values, problems = record_values(mapping, record.get("fields"))
    return PulledRecord(
        record_id=record["id"],
        values=values,
        problems=tuple(problems),
        modified=modified_time(mapping, record),
        created=parse_airtable_time(record.get("createdTime")),
    )
