"""Airtable values → canonical values: omitted empties, dates vs datetimes in UTC, and every kind
of bad input named in the quarantine reason (DESIGN §3.5)."""

import pytest

from reconcile_pipeline.engine.convert import InvalidValue, from_airtable, record_values
from reconcile_pipeline.engine.mapping import FieldKind, FieldSpec
from reconcile_pipeline_tests.mappings import LEADS_MAPPING

TEXT = FieldSpec("Name", "name", FieldKind.TEXT, max_length=5)
INT = FieldSpec("Score", "score", FieldKind.INTEGER)
FLAG = FieldSpec("Booked", "booked", FieldKind.BOOLEAN)
WHEN = FieldSpec("At", "at", FieldKind.DATETIME)
DAY = FieldSpec("Day", "day", FieldKind.DATE)
SELECT = FieldSpec("Status", "status", FieldKind.SELECT, choices=frozenset({"New"}))


@pytest.mark.parametrize(
    ("spec", "raw", "expected"),
    [
        (FLAG, None, False),  # absent checkbox = false
        (TEXT, None, None),  # absent text = empty
        (TEXT, "", None),  # empty text is the same as absent
        (INT, 7.0, 7),  # Airtable sends whole numbers as floats sometimes
        (WHEN, "2024-03-01T10:00:00.123Z", "2024-03-01T10:00:00Z"),  # seconds, UTC
        (WHEN, "2024-03-01T12:00:00+02:00", "2024-03-01T10:00:00Z"),  # offsets normalised
        (DAY, "2024-03-01", "2024-03-01"),
        (SELECT, "New", "New"),
    ],
)
def test_valid_values(spec, raw, expected):
    assert from_airtable(spec, raw) == expected


@pytest.mark.parametrize(
    ("spec", "raw", "reason"),
    [
        (TEXT, "toolong", "longer than 5"),
        (TEXT, "a\x00b", "NUL byte"),
        (INT, "seven", "expected a number"),
        (INT, 2.5, "whole number"),
        (INT, 2**40, "out of range"),
        (WHEN, "yesterday", "unparsable date-time"),
        (DAY, "2024-13-45", "unparsable date"),
        (SELECT, "Bogus", "unknown option"),
        (TEXT, {"error": "#ERROR!"}, "formula error"),
        (INT, {"specialValue": "NaN"}, "formula error"),
    ],
)
def test_invalid_values_name_the_field_and_problem(spec, raw, reason):
    with pytest.raises(InvalidValue) as raised:
        from_airtable(spec, raw)
    assert spec.airtable_name in str(raised.value)
    assert reason in str(raised.value)


def test_record_values_reports_every_problem_and_missing_required_field():
    values, found = record_values(LEADS_MAPPING, {"ICP Score": "high", "Status": "Nope"})
    problems = [p.reason for p in found]

    assert "Email: required field is missing" in problems
    assert any(p.startswith("ICP Score") for p in problems)
    assert any(p.startswith("Status") for p in problems)
    assert values["booked"] is False
    assert {p.column for p in found} == {"email", "icp_score", "status"}
    assert "icp_score" not in values and values["first_name"] is None
