"""Values as people read and type them: a field's value shown in a cell, and a value typed into
a form turned into what the field holds (checked by the same rules as a value the engine would
push, so a resolution never writes what the next push would hold back)."""

import datetime as dt
import json
import math
from typing import Any

from reconcile_pipeline.engine.convert import (
    InvalidValue,
    from_airtable,
    portal_value_problem,
    to_airtable,
)
from reconcile_pipeline.engine.mapping import FieldKind, FieldSpec

SHORT = 160  # characters shown in a listing before the rest folds away
_TEXT_KINDS = {FieldKind.TEXT, FieldKind.SELECT, FieldKind.LINK, FieldKind.DATE, FieldKind.DATETIME}
_TRUE = {"true", "yes", "y", "1", "on", "checked", "x"}
_FALSE = {"false", "no", "n", "0", "off", "unchecked", ""}


def shown(value: Any) -> str:
    """A value as text: text as it is, anything else as JSON (never Python's repr)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str, sort_keys=True)


def editable(spec: FieldSpec | None, value: Any) -> str:
    """A value as the resolve form prefills it (what `parse` reads back)."""
    if spec is not None and spec.kind is FieldKind.BOOLEAN:
        return "true" if value else "false"
    return shown(value)


def parse(spec: FieldSpec, typed: str) -> Any:
    """What the operator typed for this field, as the value the field holds; raises ValueError
    with a message for the page (never with the value itself)."""
    typed = typed.replace("\r\n", "\n")  # a textarea sends CRLF line breaks
    kind = spec.kind
    if kind in _TEXT_KINDS:
        value: Any = typed if typed.strip() else None
        if kind is not FieldKind.TEXT and value is not None:
            value = value.strip()
    elif kind is FieldKind.BOOLEAN:
        word = typed.strip().lower()
        if word not in _TRUE | _FALSE:
            raise ValueError(f"{spec.display} is a checkbox: type true or false")
        value = word in _TRUE
    elif kind is FieldKind.INTEGER:
        if not typed.strip():
            value = None
        else:
            try:
                value = int(typed.strip())
            except ValueError:
                raise ValueError(f"{spec.display} holds a whole number") from None
    elif kind is FieldKind.FLOAT:
        if not typed.strip():
            value = None
        else:
            try:
                value = float(typed.strip())
            except ValueError:
                raise ValueError(f"{spec.display} holds a number") from None
            if not math.isfinite(value):
                raise ValueError(f"{spec.display} holds a finite number")
    else:  # JSON, attachments
        if not typed.strip():
            value = None
        else:
            try:
                value = json.loads(typed)
            except ValueError:
                raise ValueError(f'{spec.display} holds JSON, e.g. ["a", "b"]') from None
    return canonical(spec, value)


def canonical(spec: FieldSpec, value: Any) -> Any:
    """`value` as the engine stores it for this field; ValueError when the mapping would hold it
    back from a push (too long, unknown option, wrong type, required and empty)."""
    problem = portal_value_problem(spec, value)
    if problem is not None:
        raise ValueError(problem)
    try:
        return from_airtable(spec, to_airtable(spec, value))
    except InvalidValue as exc:  # portal_value_problem already said so; kept for safety
        raise ValueError(str(exc)) from None


def when(value: dt.datetime | None) -> str:
    """A time as the pages show it: UTC, to the second."""
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
