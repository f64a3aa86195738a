"""Airtable's value semantics inside formulas: blanks, truthiness, coercion, comparison.

Values are ``None`` (blank), bool, int/float, str or an aware UTC datetime. The quirks copied
from Airtable: blank equals ``''``, ``0`` and ``FALSE()`` under ``=``; a blank never orders
against a date (so ``LAST_MODIFIED_TIME() >= …`` is false for a never-edited record); dates
compare at millisecond precision.
"""

import math
from datetime import datetime
from typing import Any

from reconcile_pipeline.emulator.clock import format_datetime, parse_datetime


class FormulaRuntimeError(Exception):
    """Evaluation failed; a formula field shows ``#ERROR!`` and a filter treats it as false."""


def is_blank(value: Any) -> bool:
    return value is None


def truthy(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    if isinstance(value, int | float | str | list):
        return bool(value)
    return True


def to_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        return repr(value)
    if isinstance(value, datetime):
        return format_datetime(value)
    return str(value)


def to_number(value: Any) -> float | int:
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return 0
        try:
            return int(text) if text.lstrip("-").isdigit() else float(text)
        except ValueError as exc:
            raise FormulaRuntimeError(f"Cannot use {value!r} as a number") from exc
    raise FormulaRuntimeError(f"Cannot use {value!r} as a number")


def to_datetime(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return parse_datetime(value)
        except (ValueError, OverflowError) as exc:  # overflow: e.g. 9999-12-31T23:59-14:00
            raise FormulaRuntimeError(f"Cannot use {value!r} as a date") from exc
    raise FormulaRuntimeError(f"Cannot use {value!r} as a date")


def _try_datetime(value: Any) -> datetime | None:
    try:
        return to_datetime(value)
    except FormulaRuntimeError:
        return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float)


def equals(left: Any, right: Any) -> bool:
    if left is None or right is None:
        other = right if left is None else left
        return other is None or other == "" or (_is_number(other) and other == 0)
    if isinstance(left, datetime) or isinstance(right, datetime):
        a, b = _try_datetime(left), _try_datetime(right)
        return a is not None and b is not None and a == b
    if _is_number(left) and _is_number(right):
        return float(left) == float(right)
    if _is_number(left) or _is_number(right):
        try:
            return float(to_number(left)) == float(to_number(right))
        except FormulaRuntimeError:
            return False
    return to_text(left) == to_text(right)


def compare(left: Any, right: Any) -> int | None:
    """-1/0/1, or None when the values do not order (the comparison is then false)."""
    if left is None and right is None:
        return 0
    if left is None or right is None:
        other = right if left is None else left
        if isinstance(other, datetime):
            return None
        blank: Any = 0 if _is_number(other) else ""
        left, right = (blank, right) if left is None else (left, blank)
    if isinstance(left, datetime) or isinstance(right, datetime):
        a, b = _try_datetime(left), _try_datetime(right)
        if a is None or b is None:
            return None
        return (a > b) - (a < b)
    if _is_number(left) or _is_number(right):
        try:
            x, y = float(to_number(left)), float(to_number(right))
        except FormulaRuntimeError:
            x, y = None, None
        if x is not None and y is not None:
            return (x > y) - (x < y)
    a_text, b_text = to_text(left), to_text(right)
    return (a_text > b_text) - (a_text < b_text)


def divide(left: Any, right: Any) -> float | int:
    numerator, denominator = to_number(left), to_number(right)
    if denominator == 0:
        # Airtable shows these as {"specialValue": "NaN"} / "Infinity" rather than failing.
        if numerator == 0:
            return math.nan
        return math.inf if numerator > 0 else -math.inf
    result = numerator / denominator
    return int(result) if float(result).is_integer() and abs(result) < 2**53 else result
