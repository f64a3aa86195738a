"""Airtable formula functions over evaluated arguments.

Each entry maps a function name to (implementation, min args, max args or None for variadic).
Functions needing lazy arguments or record context (AND, OR, IF, ISERROR, SWITCH, RECORD_ID,
CREATED_TIME, LAST_MODIFIED_TIME, NOW, TODAY) are compiled specially in `formula.py`.
"""

import calendar
import math
import re
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from reconcile_pipeline.emulator.clock import format_datetime
from reconcile_pipeline.emulator.formula_values import (
    FormulaRuntimeError,
    compare,
    to_datetime,
    to_number,
    to_text,
    truthy,
)

_UNIT_ALIASES = {
    "ms": "milliseconds", "millisecond": "milliseconds", "milliseconds": "milliseconds",
    "s": "seconds", "second": "seconds", "seconds": "seconds",
    "m": "minutes", "minute": "minutes", "minutes": "minutes",
    "h": "hours", "hour": "hours", "hours": "hours",
    "d": "days", "day": "days", "days": "days",
    "w": "weeks", "week": "weeks", "weeks": "weeks",
    "M": "months", "month": "months", "months": "months",
    "y": "years", "year": "years", "years": "years",
}  # fmt: skip
_SECONDS = {
    "milliseconds": 0.001, "seconds": 1, "minutes": 60, "hours": 3600, "days": 86400,
    "weeks": 604800,
}  # fmt: skip
# Moment.js tokens (what Airtable's format strings use) to strftime, longest first.
_MOMENT_TOKENS = [
    ("YYYY", "%Y"), ("MM", "%m"), ("DD", "%d"), ("HH", "%H"), ("hh", "%I"), ("mm", "%M"),
    ("ss", "%S"), ("SSS", "%f"), ("A", "%p"), ("M", "%m"), ("D", "%d"), ("Z", "%z"),
]  # fmt: skip


def _unit(value: Any) -> str:
    unit = to_text(value)
    normalized = _UNIT_ALIASES.get(unit) or _UNIT_ALIASES.get(unit.lower())
    if normalized is None:
        raise FormulaRuntimeError(f"Unknown unit {unit!r}")
    return normalized


def _required_date(value: Any) -> datetime:
    result = to_datetime(value)
    if result is None:
        raise FormulaRuntimeError("Expected a date, got a blank value")
    return result


def _moment_to_strftime(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        for token, directive in _MOMENT_TOKENS:
            if pattern.startswith(token, i):
                out.append(directive)
                i += len(token)
                break
        else:
            out.append(pattern[i].replace("%", "%%"))
            i += 1
    return "".join(out)


def datetime_parse(value: Any, fmt: Any = None, _locale: Any = None) -> datetime:
    if isinstance(value, datetime):
        return value
    if value is None:
        raise FormulaRuntimeError("DATETIME_PARSE of a blank value")
    if fmt is None:
        return _required_date(to_text(value))
    try:
        parsed = datetime.strptime(to_text(value), _moment_to_strftime(to_text(fmt)))
    except ValueError as exc:
        raise FormulaRuntimeError(f"Cannot parse {value!r} with {fmt!r}") from exc
    return parsed.replace(tzinfo=parsed.tzinfo or UTC).astimezone(UTC)


def datetime_format(value: Any, fmt: Any = None) -> str:
    date = _required_date(value)
    if fmt is None:
        return format_datetime(date)
    text = date.strftime(_moment_to_strftime(to_text(fmt)))
    return text


def _truncate(value: datetime, unit: str) -> datetime:
    if unit == "years":
        return value.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    if unit == "months":
        return value.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if unit == "weeks":
        start = value - timedelta(days=(value.weekday() + 1) % 7)
        return start.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "days":
        return value.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "hours":
        return value.replace(minute=0, second=0, microsecond=0)
    if unit == "minutes":
        return value.replace(second=0, microsecond=0)
    if unit == "seconds":
        return value.replace(microsecond=0)
    return value


def is_same(left: Any, right: Any, unit: Any = None) -> bool:
    a, b = to_datetime(left), to_datetime(right)
    if a is None or b is None:
        return False
    if unit is None:
        return a == b
    name = _unit(unit)
    return _truncate(a, name) == _truncate(b, name)


def _add_months(value: datetime, months: int) -> datetime:
    index = value.month - 1 + months
    year, month = value.year + index // 12, index % 12 + 1
    day = min(value.day, calendar.monthrange(year, month)[1])
    return value.replace(year=year, month=month, day=day)


def dateadd(value: Any, count: Any, unit: Any) -> datetime:
    date, amount, name = _required_date(value), to_number(count), _unit(unit)
    if name == "months":
        return _add_months(date, int(amount))
    if name == "years":
        return _add_months(date, int(amount) * 12)
    return date + timedelta(seconds=amount * _SECONDS[name])


def datetime_diff(left: Any, right: Any, unit: Any = "seconds") -> int | float:
    a, b, name = _required_date(left), _required_date(right), _unit(unit)
    if name in ("months", "years"):
        months = (a.year - b.year) * 12 + a.month - b.month
        return months if name == "months" else months // 12
    return int((a - b).total_seconds() / _SECONDS[name])


def _find(needle: Any, haystack: Any, start: Any = None) -> int:
    position = max(int(to_number(start)) - 1, 0) if start is not None else 0
    return to_text(haystack).find(to_text(needle), position) + 1


def _search(needle: Any, haystack: Any, start: Any = None) -> int | None:
    return _find(needle, haystack, start) or None


def _round(value: Any, precision: Any = 0, mode: str = "half_up") -> int | float:
    number, digits = to_number(value), int(to_number(precision))
    factor = 10**digits
    scaled = number * factor
    if mode == "up":
        rounded = math.ceil(abs(scaled)) * (1 if scaled >= 0 else -1)
    elif mode == "down":
        rounded = math.floor(abs(scaled)) * (1 if scaled >= 0 else -1)
    else:
        rounded = math.floor(abs(scaled) + 0.5) * (1 if scaled >= 0 else -1)
    result = rounded / factor
    return int(result) if float(result).is_integer() else result


def _numbers(args: tuple[Any, ...]) -> list[float | int]:
    return [to_number(a) for a in args if a is not None and a != ""]


def _substitute(text: Any, old: Any, new: Any, index: Any = None) -> str:
    source, old_text, new_text = to_text(text), to_text(old), to_text(new)
    if not old_text:
        return source
    if index is None:
        return source.replace(old_text, new_text)
    parts = source.split(old_text)
    nth = int(to_number(index))
    if nth < 1 or nth >= len(parts):
        return source
    return old_text.join(parts[:nth]) + new_text + old_text.join(parts[nth:])


def _mid(text: Any, start: Any, count: Any) -> str:
    begin = max(int(to_number(start)) - 1, 0)
    return to_text(text)[begin : begin + int(to_number(count))]


def _replace(text: Any, start: Any, count: Any, new: Any) -> str:
    source, begin = to_text(text), max(int(to_number(start)) - 1, 0)
    return source[:begin] + to_text(new) + source[begin + int(to_number(count)) :]


def _regex(pattern: Any) -> re.Pattern[str]:
    try:
        return re.compile(to_text(pattern))
    except re.error as exc:
        raise FormulaRuntimeError(f"Invalid regular expression {pattern!r}") from exc


def _regex_extract(text: Any, pattern: Any) -> str | None:
    match = _regex(pattern).search(to_text(text))
    return match.group(0) if match else None


def _error() -> Any:
    raise FormulaRuntimeError("ERROR()")


def _sqrt(value: Any) -> float:
    number = to_number(value)
    if number < 0:
        raise FormulaRuntimeError("SQRT of a negative number")
    return math.sqrt(number)


def _log(value: Any, base: Any = 10) -> float:
    try:
        return math.log(to_number(value), to_number(base))
    except (ValueError, ZeroDivisionError) as exc:
        raise FormulaRuntimeError("LOG of a non-positive number") from exc


def _weekday(value: Any, start: Any = None) -> int:
    sunday_based = (_required_date(value).weekday() + 1) % 7
    return (sunday_based - 1) % 7 if to_text(start).lower() == "monday" else sunday_based


def _average(*args: Any) -> float:
    numbers = _numbers(args)
    if not numbers:
        raise FormulaRuntimeError("AVERAGE of no numbers")
    return sum(numbers) / len(numbers)


Function = Callable[..., Any]

FUNCTIONS: dict[str, tuple[Function, int, int | None]] = {
    # logic
    "XOR": (lambda *a: sum(truthy(x) for x in a) % 2 == 1, 1, None),
    "NOT": (lambda a: not truthy(a), 1, 1),
    "BLANK": (lambda: None, 0, 0),
    "TRUE": (lambda: True, 0, 0),
    "FALSE": (lambda: False, 0, 0),
    "ERROR": (_error, 0, 0),
    # dates
    "DATETIME_PARSE": (datetime_parse, 1, 3),
    "DATETIME_FORMAT": (datetime_format, 1, 2),
    "DATESTR": (lambda d: _required_date(d).strftime("%Y-%m-%d"), 1, 1),
    "TIMESTR": (lambda d: _required_date(d).strftime("%H:%M:%S"), 1, 1),
    "DATEADD": (dateadd, 3, 3),
    "DATETIME_DIFF": (datetime_diff, 2, 3),
    "IS_AFTER": (lambda a, b: compare(to_datetime(a), to_datetime(b)) == 1, 2, 2),
    "IS_BEFORE": (lambda a, b: compare(to_datetime(a), to_datetime(b)) == -1, 2, 2),
    "IS_SAME": (is_same, 2, 3),
    "SET_TIMEZONE": (lambda d, _tz: _required_date(d), 2, 2),
    "SET_LOCALE": (lambda d, _locale: _required_date(d), 2, 2),
    "YEAR": (lambda d: _required_date(d).year, 1, 1),
    "MONTH": (lambda d: _required_date(d).month, 1, 1),
    "DAY": (lambda d: _required_date(d).day, 1, 1),
    "HOUR": (lambda d: _required_date(d).hour, 1, 1),
    "MINUTE": (lambda d: _required_date(d).minute, 1, 1),
    "SECOND": (lambda d: _required_date(d).second, 1, 1),
    "WEEKDAY": (_weekday, 1, 2),
    # text
    "FIND": (_find, 2, 3),
    "SEARCH": (_search, 2, 3),
    "LOWER": (lambda s: to_text(s).lower(), 1, 1),
    "UPPER": (lambda s: to_text(s).upper(), 1, 1),
    "LEN": (lambda s: len(to_text(s)), 1, 1),
    "TRIM": (lambda s: to_text(s).strip(), 1, 1),
    "LEFT": (lambda s, n: to_text(s)[: max(int(to_number(n)), 0)], 2, 2),
    "RIGHT": (lambda s, n: to_text(s)[len(to_text(s)) - max(int(to_number(n)), 0) :], 2, 2),
    "MID": (_mid, 3, 3),
    "REPLACE": (_replace, 4, 4),
    "SUBSTITUTE": (_substitute, 3, 4),
    "REPT": (lambda s, n: to_text(s) * max(int(to_number(n)), 0), 2, 2),
    "CONCATENATE": (lambda *a: "".join(to_text(x) for x in a), 1, None),
    "T": (lambda v: v if isinstance(v, str) else "", 1, 1),
    "VALUE": (lambda v: to_number(to_text(v).replace(",", "").replace("$", "")), 1, 1),
    "ENCODE_URL_COMPONENT": (lambda s: urllib.parse.quote(to_text(s), safe=""), 1, 1),
    "REGEX_MATCH": (lambda s, p: _regex(p).search(to_text(s)) is not None, 2, 2),
    "REGEX_EXTRACT": (_regex_extract, 2, 2),
    "REGEX_REPLACE": (lambda s, p, r: _regex(p).sub(to_text(r), to_text(s)), 3, 3),
    # numbers
    "ABS": (lambda v: abs(to_number(v)), 1, 1),
    "ROUND": (lambda v, p=0: _round(v, p), 1, 2),
    "ROUNDUP": (lambda v, p=0: _round(v, p, "up"), 1, 2),
    "ROUNDDOWN": (lambda v, p=0: _round(v, p, "down"), 1, 2),
    "INT": (lambda v: math.floor(to_number(v)), 1, 1),
    "CEILING": (lambda v, s=1: math.ceil(to_number(v) / to_number(s)) * to_number(s), 1, 2),
    "FLOOR": (lambda v, s=1: math.floor(to_number(v) / to_number(s)) * to_number(s), 1, 2),
    "EVEN": (lambda v: 2 * math.ceil(to_number(v) / 2), 1, 1),
    "ODD": (lambda v: 2 * math.floor(to_number(v) / 2) + 1, 1, 1),
    "MOD": (lambda a, b: math.fmod(to_number(a), to_number(b)) if to_number(b) else math.nan, 2, 2),
    "POWER": (lambda a, b: to_number(a) ** to_number(b), 2, 2),
    "SQRT": (_sqrt, 1, 1),
    "EXP": (lambda v: math.exp(to_number(v)), 1, 1),
    "LOG": (_log, 1, 2),
    "SUM": (lambda *a: sum(_numbers(a)), 1, None),
    "MAX": (lambda *a: max(_numbers(a), default=0), 1, None),
    "MIN": (lambda *a: min(_numbers(a), default=0), 1, None),
    "AVERAGE": (_average, 1, None),
    "COUNT": (
        lambda *a: sum(isinstance(x, int | float) and not isinstance(x, bool) for x in a),
        1,
        None,
    ),
    "COUNTA": (lambda *a: sum(x is not None and x != "" for x in a), 1, None),
    "COUNTALL": (lambda *a: len(a), 1, None),
}
