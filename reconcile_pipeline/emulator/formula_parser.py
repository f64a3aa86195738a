"""Tokenizer and recursive-descent parser for Airtable's formula language.

Produces a small AST; `formula.py` turns it into an evaluator. Precedence, lowest first:
comparison (``= != <> < > <= >=``), concatenation (``&``), ``+ -``, ``* /``, unary ``-``.
"""

import re
from dataclasses import dataclass
from typing import Any


class FormulaSyntaxError(ValueError):
    """The formula cannot be parsed or refers to unknown fields or functions."""


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class FieldRef:
    name: str


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple["Node", ...]


@dataclass(frozen=True)
class Binary:
    op: str
    left: "Node"
    right: "Node"


@dataclass(frozen=True)
class Unary:
    op: str
    operand: "Node"


Node = Literal | FieldRef | Call | Binary | Unary


@dataclass(frozen=True)
class Token:
    kind: str  # number, string, field, ident, op, (, ), ",", end
    value: Any
    pos: int


_EXPONENT = re.compile(r"[eE][+-]?\d+")
_OPERATORS = ("!=", "<>", "<=", ">=", "=", "<", ">", "&", "+", "-", "*", "/")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}
COMPARISON_OPS = frozenset({"=", "!=", "<>", "<", ">", "<=", ">="})


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "'\"":
            value, i = _read_string(text, i)
            tokens.append(Token("string", value, i))
        elif ch == "{":
            value, i = _read_field(text, i)
            tokens.append(Token("field", value, i))
        elif ch.isdigit() or (ch == "." and i + 1 < n and text[i + 1].isdigit()):
            start = i
            while i < n and (text[i].isdigit() or text[i] == "."):
                i += 1
            # Exponents: pyairtable writes floats with str(), e.g. 1e-07.
            exponent = _EXPONENT.match(text, i)
            if exponent:
                i = exponent.end()
            literal = text[start:i]
            try:
                number: float | int = int(literal) if literal.isdigit() else float(literal)
            except ValueError as exc:
                raise FormulaSyntaxError(f"Invalid number {literal!r} at {start}") from exc
            tokens.append(Token("number", number, start))
        elif ch.isalpha() or ch == "_":
            start = i
            while i < n and (text[i].isalnum() or text[i] == "_"):
                i += 1
            tokens.append(Token("ident", text[start:i], start))
        elif ch in "(),":
            tokens.append(Token(ch, ch, i))
            i += 1
        else:
            for op in _OPERATORS:
                if text.startswith(op, i):
                    tokens.append(Token("op", op, i))
                    i += len(op)
                    break
            else:
                raise FormulaSyntaxError(f"Unexpected character {ch!r} at {i}")
    tokens.append(Token("end", None, n))
    return tokens


def _read_string(text: str, start: int) -> tuple[str, int]:
    quote, i, out = text[start], start + 1, []
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
        elif ch == quote:
            return "".join(out), i + 1
        else:
            out.append(ch)
            i += 1
    raise FormulaSyntaxError(f"Unterminated string starting at {start}")


def _read_field(text: str, start: int) -> tuple[str, int]:
    i, out = start + 1, []
    while i < len(text):
        ch = text[i]
        if ch == "\\" and text.startswith("}", i + 1):
            out.append("}")
            i += 2
        elif ch == "}":
            return "".join(out), i + 1
        else:
            out.append(ch)
            i += 1
    raise FormulaSyntaxError(f"Unterminated field reference starting at {start}")


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> Token:
        return self.tokens[self.pos]

    def take(self) -> Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def expect(self, kind: str) -> Token:
        token = self.take()
        if token.kind != kind:
            raise FormulaSyntaxError(f"Expected {kind!r} at {token.pos}, found {token.value!r}")
        return token

    def parse(self) -> Node:
        node = self.comparison()
        if self.peek().kind != "end":
            token = self.peek()
            raise FormulaSyntaxError(f"Unexpected {token.value!r} at {token.pos}")
        return node

    def _binary_level(self, ops: frozenset[str] | tuple[str, ...], operand: Any) -> Node:
        node = operand()
        while self.peek().kind == "op" and self.peek().value in ops:
            op = self.take().value
            node = Binary(op, node, operand())
        return node

    def comparison(self) -> Node:
        return self._binary_level(COMPARISON_OPS, self.concat)

    def concat(self) -> Node:
        return self._binary_level(("&",), self.additive)

    def additive(self) -> Node:
        return self._binary_level(("+", "-"), self.term)

    def term(self) -> Node:
        return self._binary_level(("*", "/"), self.unary)

    def unary(self) -> Node:
        token = self.peek()
        if token.kind == "op" and token.value in ("-", "+"):
            self.take()
            return Unary(token.value, self.unary())
        return self.primary()

    def primary(self) -> Node:
        token = self.take()
        if token.kind in ("number", "string"):
            return Literal(token.value)
        if token.kind == "field":
            return FieldRef(token.value)
        if token.kind == "(":
            node = self.comparison()
            self.expect(")")
            return node
        if token.kind == "ident":
            if self.peek().kind == "(":
                self.take()
                return Call(token.value.upper(), self.arguments())
            upper = token.value.upper()
            if upper in ("TRUE", "FALSE"):
                return Literal(upper == "TRUE")
            # Airtable accepts a bare single-word field name without braces.
            return FieldRef(token.value)
        raise FormulaSyntaxError(f"Unexpected {token.value!r} at {token.pos}")

    def arguments(self) -> tuple[Node, ...]:
        args: list[Node] = []
        if self.peek().kind == ")":
            self.take()
            return ()
        while True:
            args.append(self.comparison())
            token = self.take()
            if token.kind == ")":
                return tuple(args)
            if token.kind != ",":
                raise FormulaSyntaxError(f"Expected ',' or ')' at {token.pos}")


def parse(text: str) -> Node:
    """Parse a formula into an AST.

    Raises:
        FormulaSyntaxError: the text is not a well-formed formula.
    """
    if not text.strip():
        raise FormulaSyntaxError("Empty formula")
    return _Parser(tokenize(text)).parse()


def field_ref(name: str) -> str:
    """``{name}`` with a closing brace escaped, as `tokenize` reads it back."""
    return "{" + name.replace("}", "\\}") + "}"


def rename_field_refs(text: str, old: str, new: str) -> str:
    """The formula with references to field ``old`` (braced or bare) pointing at ``new``.

    Strings and everything else are copied unchanged; a formula that does not tokenize is
    returned as is.
    """
    out: list[str] = []
    i, n = 0, len(text)
    try:
        while i < n:
            ch = text[i]
            if ch in "'\"":
                _, end = _read_string(text, i)
                out.append(text[i:end])
            elif ch == "{":
                name, end = _read_field(text, i)
                out.append(field_ref(new) if name == old else text[i:end])
            elif ch.isdigit() or (ch == "." and i + 1 < n and text[i + 1].isdigit()):
                end = i
                while end < n and (text[end].isdigit() or text[end] == "."):
                    end += 1
                exponent = _EXPONENT.match(text, end)
                end = exponent.end() if exponent else end
                out.append(text[i:end])
            elif ch.isalpha() or ch == "_":
                end = i
                while end < n and (text[end].isalnum() or text[end] == "_"):
                    end += 1
                word, after = text[i:end], end
                while after < n and text[after].isspace():
                    after += 1
                is_call = after < n and text[after] == "("
                is_bare_ref = not is_call and word.upper() not in ("TRUE", "FALSE")
                out.append(field_ref(new) if is_bare_ref and word == old else word)
            else:
                end = i + 1
                out.append(ch)
            i = end
    except FormulaSyntaxError:
        return text
    return "".join(out)
