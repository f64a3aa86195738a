"""Cell values by field type: validating writes (with ``typecast``), API output, formula input.

Stored values are normalised and never mutated in place (a write replaces the value), so
responses can reference them without copying. Empty values are stored as absent. Raw values
(see `records.StoredRecord.raw`) skip all of this: `raw_value` only checks they are JSON and
`raw_formula_input` is how formulas see them.
"""

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from reconcile_pipeline.emulator.clock import format_datetime, new_id, parse_datetime
from reconcile_pipeline.emulator.errors import ApiError, invalid_value
from reconcile_pipeline.emulator.formula_values import FormulaRuntimeError
from reconcile_pipeline.emulator.schema import FieldSchema

TEXT_TYPES = frozenset(
    {"singleLineText", "multilineText", "email", "url", "phoneNumber", "richText", "barcode"}
)
NUMBER_TYPES = frozenset({"number", "currency", "percent", "duration", "rating"})
DATE_TYPES = frozenset({"date", "dateTime", "createdTime", "lastModifiedTime"})
_SPECIAL_NUMBERS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}

LinkChecker = Callable[[str, str], bool]


def is_empty(value: Any) -> bool:
    return value is None or value == "" or value is False or value == []


def normalize(
    field: FieldSchema, value: Any, typecast: bool, link_exists: LinkChecker | None = None
) -> Any:
    """The stored form of a written value, or None when it clears the cell.

    Raises:
        ApiError: 422 INVALID_VALUE_FOR_COLUMN (wrong type, computed field) or
            INVALID_MULTIPLE_CHOICE_OPTIONS (unknown select option without typecast).
    """
    if field.computed:
        raise ApiError(
            422,
            "INVALID_VALUE_FOR_COLUMN",
            f'Field "{field.name}" cannot accept a value because the field is computed',
        )
    if value is None:
        return None
    kind = field.type
    if kind in TEXT_TYPES:
        return _text(field, value, typecast) or None
    if kind in NUMBER_TYPES:
        return _number(field, value, typecast)
    if kind == "checkbox":
        return True if _checkbox(field, value, typecast) else None
    if kind == "date":
        return _date(field, value)
    if kind == "dateTime":
        return _datetime(field, value)
    if kind == "singleSelect":
        text = _text(field, value, typecast)
        return _choices(field, [text], typecast)[0] if text else None
    if kind == "multipleSelects":
        items = _list(field, value, typecast)
        names = [_text(field, item, typecast) for item in items]
        return _choices(field, [n for n in names if n], typecast) or None
    if kind == "multipleRecordLinks":
        return _links(field, _list(field, value, typecast), link_exists) or None
    if kind == "multipleAttachments":
        return _attachments(field, _list(field, value, typecast)) or None
    return None if is_empty(value) else value


def output(field: FieldSchema, value: Any) -> Any:
    """The JSON the API returns for a stored value."""
    if isinstance(value, datetime):
        return format_datetime(value)
    return value


def formula_input(field: FieldSchema, value: Any) -> Any:
    """How a formula sees a stored value (lists join into text, dates become datetimes)."""
    if value is None:
        return None
    if field.type == "date":
        return parse_datetime(value)
    if field.type == "multipleAttachments":
        return ", ".join(f"{a.get('filename', '')} ({a['url']})" for a in value)
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return value


def raw_value(value: Any) -> Any:
    """A private copy of a raw value; NaN, infinities and lone surrogates are kept.

    Raises:
        ValueError: the value is not JSON (a datetime, a set, a non-string key…).
    """
    try:
        return json.loads(json.dumps(value, allow_nan=True))
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"raw field values must be JSON: {exc}") from exc


def raw_formula_input(field: FieldSchema, value: Any) -> Any:
    """How a formula sees a raw value: like a stored one where it can, else an error.

    Text in a date field is a date when it parses (and is in range); a formula error object
    (``{"error": "#ERROR!"}``) or any other object is a formula error, as a reference to an
    erroring field is in Airtable; ``{"specialValue": "NaN"}`` is NaN.

    Raises:
        FormulaRuntimeError: the value is an object.
    """
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        if field.type in DATE_TYPES:
            try:
                return parse_datetime(value)
            except (ValueError, OverflowError):
                return value
        return value
    if isinstance(value, list):
        return ", ".join(
            item if isinstance(item, str) else json.dumps(item, ensure_ascii=False)
            for item in value
        )
    special = value.get("specialValue") if isinstance(value, dict) and len(value) == 1 else None
    if special in _SPECIAL_NUMBERS:
        return _SPECIAL_NUMBERS[special]
    raise FormulaRuntimeError(f"Field {field.name} holds an object")


def _text(field: FieldSchema, value: Any, typecast: bool) -> str:
    if isinstance(value, str):
        return value
    if typecast and isinstance(value, int | float | bool):
        return str(value)
    raise invalid_value(field.name, f"expected a string, got {type(value).__name__}")


def _number(field: FieldSchema, value: Any, typecast: bool) -> int | float | None:
    if isinstance(value, str) and typecast:
        if not value.strip():
            return None
        try:
            value = float(value.replace(",", "").strip())
        except ValueError as exc:
            raise invalid_value(field.name, f"cannot parse {value!r} as a number") from exc
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise invalid_value(field.name, f"expected a number, got {value!r}")
    precision = field.options.get("precision")
    if isinstance(precision, int):
        value = round(value, precision)
        if precision == 0:
            return int(value)
    return value


def _checkbox(field: FieldSchema, value: Any, typecast: bool) -> bool:
    if isinstance(value, bool):
        return value
    if typecast:
        if isinstance(value, str):
            return value.strip().lower() in ("true", "1", "yes", "y", "checked", "on")
        if isinstance(value, int | float):
            return value != 0
    raise invalid_value(field.name, f"expected a boolean, got {value!r}")


def _date(field: FieldSchema, value: Any) -> str | None:
    if not isinstance(value, str):
        raise invalid_value(field.name, f"expected a date string, got {value!r}")
    if not value:
        return None
    try:
        return parse_datetime(value).date().isoformat()
    except ValueError as exc:
        raise invalid_value(field.name, f"cannot parse {value!r} as a date") from exc


def _datetime(field: FieldSchema, value: Any) -> datetime | None:
    if not isinstance(value, str):
        raise invalid_value(field.name, f"expected an ISO 8601 string, got {value!r}")
    if not value:
        return None
    try:
        return parse_datetime(value).astimezone(UTC)
    except ValueError as exc:
        raise invalid_value(field.name, f"cannot parse {value!r} as a datetime") from exc


def _list(field: FieldSchema, value: Any, typecast: bool) -> list[Any]:
    if isinstance(value, list):
        return value
    if typecast and isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    raise invalid_value(field.name, f"expected an array, got {value!r}")


def _choices(field: FieldSchema, names: list[str], typecast: bool) -> list[str]:
    known = set(field.choice_names())
    for name in names:
        if name in known:
            continue
        if not typecast:
            raise ApiError(
                422,
                "INVALID_MULTIPLE_CHOICE_OPTIONS",
                f'Insufficient permissions to create new select option ""{name}""',
            )
        field.add_choice(name)
        known.add(name)
    return list(dict.fromkeys(names))


def _links(field: FieldSchema, items: list[Any], link_exists: LinkChecker | None) -> list[str]:
    linked_table = field.options.get("linkedTableId")
    ids = []
    for item in items:
        record_id = item.get("id") if isinstance(item, dict) else item
        if not isinstance(record_id, str) or not record_id.startswith("rec"):
            raise invalid_value(field.name, f"{item!r} is not a record id")
        if linked_table and link_exists is not None and not link_exists(linked_table, record_id):
            raise ApiError(
                422, "ROW_DOES_NOT_EXIST", f"Record ID {record_id} does not exist in this table"
            )
        ids.append(record_id)
    return list(dict.fromkeys(ids))


def _attachments(field: FieldSchema, items: list[Any]) -> list[dict[str, Any]]:
    attachments = []
    for item in items:
        if isinstance(item, str):
            item = {"url": item}
        if not isinstance(item, dict) or not isinstance(item.get("url"), str):
            raise invalid_value(field.name, "each attachment needs a url")
        attachment = {
            "id": item.get("id") or new_id("att"),
            "url": item["url"],
            "filename": item.get("filename") or item["url"].rstrip("/").rsplit("/", 1)[-1],
        }
        for key in ("size", "type", "width", "height"):
            if key in item:
                attachment[key] = item[key]
        attachments.append(attachment)
    return attachments
