"""Compile Airtable formulas (filterByFormula and formula fields) into evaluators.

Compilation resolves field references against the table up front, so a formula naming an
unknown field or function fails the whole request (422) instead of silently matching nothing.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from reconcile_pipeline.emulator.formula_functions import FUNCTIONS
from reconcile_pipeline.emulator.formula_parser import (
    Binary,
    Call,
    FieldRef,
    FormulaSyntaxError,
    Literal,
    Node,
    Unary,
    parse,
)
from reconcile_pipeline.emulator.formula_values import (
    FormulaRuntimeError,
    compare,
    divide,
    equals,
    to_number,
    to_text,
    truthy,
)
from reconcile_pipeline.emulator.schema import FieldSchema

__all__ = ["CompiledFormula", "FormulaContext", "FormulaRuntimeError", "FormulaSyntaxError"]


class FormulaContext(Protocol):
    """What a formula can see of the record it is evaluated on."""

    record_id: str
    created_time: datetime
    now: datetime

    def field_value(self, field: FieldSchema) -> Any: ...

    def last_modified(self, field_ids: tuple[str, ...] | None) -> datetime | None: ...


Evaluator = Callable[[FormulaContext], Any]

_COMPARATORS: dict[str, Callable[[Any, Any], bool]] = {
    "=": equals,
    "!=": lambda a, b: not equals(a, b),
    "<>": lambda a, b: not equals(a, b),
    "<": lambda a, b: compare(a, b) == -1,
    ">": lambda a, b: compare(a, b) == 1,
    "<=": lambda a, b: compare(a, b) in (-1, 0),
    ">=": lambda a, b: compare(a, b) in (0, 1),
}
_ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    "+": lambda a, b: to_number(a) + to_number(b),
    "-": lambda a, b: to_number(a) - to_number(b),
    "*": lambda a, b: to_number(a) * to_number(b),
    "/": divide,
    "&": lambda a, b: to_text(a) + to_text(b),
}
_CONTEXT_FUNCTIONS = {"RECORD_ID", "CREATED_TIME", "LAST_MODIFIED_TIME", "NOW", "TODAY"}
_LAZY_FUNCTIONS = {"IF", "SWITCH", "ISERROR", "AND", "OR"}


@dataclass(frozen=True)
class CompiledFormula:
    text: str
    evaluate: Evaluator
    field_ids: frozenset[str]

    def matches(self, context: FormulaContext) -> bool:
        """filterByFormula semantics: a record is kept when the result is truthy.

        A runtime error (``#ERROR!``) is falsy, as in Airtable.
        """
        try:
            return truthy(self.evaluate(context))
        except (FormulaRuntimeError, ArithmeticError, ValueError, TypeError):
            return False  # the last three: a value no function expected (raw test data)


def compile_formula(
    text: str, resolve_field: Callable[[str], FieldSchema | None]
) -> CompiledFormula:
    """Parse and resolve a formula.

    Raises:
        FormulaSyntaxError: bad syntax, an unknown function, a wrong argument count or
            unknown field names (all of them are listed).
    """
    compiler = _Compiler(resolve_field)
    evaluate = compiler.compile(parse(text))
    if compiler.unknown_fields:
        names = ", ".join(dict.fromkeys(compiler.unknown_fields))
        raise FormulaSyntaxError(f"Unknown field names: {names}")
    return CompiledFormula(text, evaluate, frozenset(compiler.field_ids))


class _Compiler:
    def __init__(self, resolve_field: Callable[[str], FieldSchema | None]) -> None:
        self.resolve_field = resolve_field
        self.unknown_fields: list[str] = []
        self.field_ids: set[str] = set()

    def compile(self, node: Node) -> Evaluator:
        if isinstance(node, Literal):
            value = node.value
            return lambda _ctx: value
        if isinstance(node, FieldRef):
            return self._field(node.name)
        if isinstance(node, Unary):
            operand = self.compile(node.operand)
            if node.op == "-":
                return lambda ctx: -to_number(operand(ctx))
            return lambda ctx: to_number(operand(ctx))
        if isinstance(node, Binary):
            return self._binary(node)
        return self._call(node)

    def _field(self, name: str) -> Evaluator:
        field = self.resolve_field(name)
        if field is None:
            self.unknown_fields.append(name)
            return lambda _ctx: None
        self.field_ids.add(field.id)
        return lambda ctx: ctx.field_value(field)

    def _binary(self, node: Binary) -> Evaluator:
        left, right = self.compile(node.left), self.compile(node.right)
        op = _COMPARATORS.get(node.op) or _ARITHMETIC[node.op]

        def evaluate(ctx: FormulaContext) -> Any:
            try:
                return op(left(ctx), right(ctx))
            except (ArithmeticError, ValueError, TypeError) as exc:  # e.g. 10**400 + 0.5
                raise FormulaRuntimeError(f"{node.op}: {exc}") from exc

        return evaluate

    def _call(self, node: Call) -> Evaluator:
        if node.name in _CONTEXT_FUNCTIONS:
            return self._context_call(node)
        if node.name in _LAZY_FUNCTIONS:
            return self._lazy_call(node)
        if node.name not in FUNCTIONS:
            raise FormulaSyntaxError(f"Unknown function names: {node.name}")
        function, min_args, max_args = FUNCTIONS[node.name]
        _check_arity(node, min_args, max_args)
        args = [self.compile(arg) for arg in node.args]

        def evaluate(ctx: FormulaContext) -> Any:
            values = [arg(ctx) for arg in args]
            try:
                return function(*values)
            except FormulaRuntimeError:
                raise
            except (ArithmeticError, ValueError, TypeError) as exc:
                raise FormulaRuntimeError(f"{node.name}: {exc}") from exc

        return evaluate

    def _context_call(self, node: Call) -> Evaluator:
        if node.name == "LAST_MODIFIED_TIME":
            refs = []
            for arg in node.args:
                if not isinstance(arg, FieldRef):
                    raise FormulaSyntaxError("LAST_MODIFIED_TIME() accepts only field names")
                field = self.resolve_field(arg.name)
                if field is None:
                    self.unknown_fields.append(arg.name)
                else:
                    refs.append(field.id)
            field_ids = tuple(refs) if node.args else None
            return lambda ctx: ctx.last_modified(field_ids)
        _check_arity(node, 0, 0)
        if node.name == "RECORD_ID":
            return lambda ctx: ctx.record_id
        if node.name == "CREATED_TIME":
            return lambda ctx: ctx.created_time
        if node.name == "NOW":
            return lambda ctx: ctx.now
        return lambda ctx: ctx.now.replace(hour=0, minute=0, second=0, microsecond=0)

    def _lazy_call(self, node: Call) -> Evaluator:
        if node.name == "OR" and (ids := _record_id_set(node)) is not None:
            # OR(RECORD_ID()='rec…', …) is how clients fetch records by id, often 100 at a
            # time over thousands of records: a set lookup instead of 100 comparisons.
            return lambda ctx: ctx.record_id in ids
        args = [self.compile(arg) for arg in node.args]
        if node.name in ("AND", "OR"):
            _check_arity(node, 1, None)
            combine = all if node.name == "AND" else any
            return lambda ctx: combine(truthy(arg(ctx)) for arg in args)
        if node.name == "IF":
            _check_arity(node, 2, 3)
            condition, if_true = args[0], args[1]
            if_false = args[2] if len(args) == 3 else (lambda _ctx: None)
            return lambda ctx: if_true(ctx) if truthy(condition(ctx)) else if_false(ctx)
        if node.name == "ISERROR":
            _check_arity(node, 1, 1)

            def is_error(ctx: FormulaContext) -> bool:
                try:
                    value = args[0](ctx)
                except FormulaRuntimeError:
                    return True
                return isinstance(value, float) and (math.isnan(value) or math.isinf(value))

            return is_error
        _check_arity(node, 3, None)

        def switch(ctx: FormulaContext) -> Any:
            subject = args[0](ctx)
            pairs, default = args[1:], None
            if len(pairs) % 2:
                pairs, default = pairs[:-1], pairs[-1]
            for pattern, result in zip(pairs[::2], pairs[1::2], strict=True):
                if equals(subject, pattern(ctx)):
                    return result(ctx)
            return default(ctx) if default else None

        return switch


def _record_id_set(node: Call) -> frozenset[str] | None:
    ids = []
    for arg in node.args:
        if not (isinstance(arg, Binary) and arg.op == "="):
            return None
        sides = (arg.left, arg.right)
        literal = next((s for s in sides if isinstance(s, Literal)), None)
        call = next((s for s in sides if isinstance(s, Call)), None)
        if literal is None or call is None or call.name != "RECORD_ID" or call.args:
            return None
        if not isinstance(literal.value, str):
            return None
        ids.append(literal.value)
    return frozenset(ids) if ids else None


def _check_arity(node: Call, min_args: int, max_args: int | None) -> None:
    count = len(node.args)
    if count < min_args or (max_args is not None and count > max_args):
        raise FormulaSyntaxError(f"Wrong number of arguments to {node.name}()")
