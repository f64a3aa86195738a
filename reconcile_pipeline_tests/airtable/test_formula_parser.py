"""The emulator's formula parser reads back exactly what pyairtable writes.

pyairtable quotes strings with single quotes, escaping ``'`` and ``\\`` with a backslash, and
escapes ``}`` in field names as ``\\}``. Whatever the text (quotes, backslashes, newlines,
unicode), parsing the generated formula must give back the original value.
"""

from hypothesis import given
from hypothesis import strategies as st
from pyairtable import formulas as F

from reconcile_pipeline.emulator.formula_parser import FieldRef, Literal, parse

field_names = st.text(
    alphabet=st.characters(blacklist_characters="\\{", blacklist_categories=("Cs",)), min_size=1
)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
def test_any_string_literal_round_trips(text: str) -> None:
    assert parse(F.to_formula_str(text)) == Literal(text)


@given(field_names)
def test_any_field_name_round_trips(name: str) -> None:
    assert parse(str(F.Field(name))) == FieldRef(name)


@given(st.integers(min_value=0, max_value=10**12) | st.floats(0, 1e9, allow_nan=False))
def test_numbers_round_trip(number: float) -> None:
    assert parse(F.to_formula_str(number)) == Literal(number)
