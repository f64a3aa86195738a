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


# -- boundaries and branches the mutation tester showed unchecked -------------------------------

FLOAT = FieldSpec("Amount", "amount", FieldKind.FLOAT)
TAGS = FieldSpec("Tags", "tags", FieldKind.JSON)
REQUIRED = FieldSpec("Email", "email", FieldKind.TEXT, required=True, max_length=5)


def test_integer_limits_are_inclusive():
    from reconcile_pipeline.engine.convert import INT32_MAX, INT32_MIN

    assert from_airtable(INT, INT32_MAX) == INT32_MAX
    assert from_airtable(INT, INT32_MIN) == INT32_MIN
    for outside in (INT32_MAX + 1, INT32_MIN - 1):
        with pytest.raises(InvalidValue, match="out of range"):
            from_airtable(INT, outside)


def test_max_length_is_inclusive():
    assert from_airtable(TEXT, "abcde") == "abcde"
    with pytest.raises(InvalidValue, match="6 characters, longer than 5"):
        from_airtable(TEXT, "abcdef")


def test_checkbox_floats_and_json_values_are_pulled():
    assert from_airtable(FLAG, True) is True
    assert from_airtable(FLAG, False) is False
    assert from_airtable(FLOAT, 2) == 2.0 and isinstance(from_airtable(FLOAT, 2), float)
    assert from_airtable(TAGS, ["a", "b"]) == ["a", "b"]
    with pytest.raises(InvalidValue):
        from_airtable(TAGS, "a")
    with pytest.raises(InvalidValue, match="NaN"):
        from_airtable(TAGS, [float("nan")])


def test_values_read_from_postgres_become_canonical():
    import datetime as dt

    from reconcile_pipeline.engine.convert import from_postgres

    assert from_postgres(FLAG, None) is False
    assert from_postgres(FLAG, True) is True
    assert from_postgres(FLOAT, 3) == 3.0 and isinstance(from_postgres(FLOAT, 3), float)
    assert from_postgres(DAY, dt.date(2024, 3, 1)) == "2024-03-01"
    assert from_postgres(DAY, "2024-03-01T00:00:00") == "2024-03-01"
    assert from_postgres(WHEN, "2024-03-01T12:00:00+02:00") == "2024-03-01T10:00:00Z"
    assert from_postgres(WHEN, dt.datetime(2024, 3, 1, 10, 0, 5, 900)) == "2024-03-01T10:00:05Z"
    assert from_postgres(TAGS, []) is None
    assert from_postgres(TAGS, ["x"]) == ["x"]
    assert from_postgres(TEXT, "") is None
    assert from_postgres(TEXT, "José") == "José"
    for field in (TEXT, FLOAT, DAY, WHEN, TAGS):
        assert from_postgres(field, None) is None, field.kind
    count = FieldSpec("Count", "count", FieldKind.INTEGER)
    assert from_postgres(count, 7) == 7 and from_postgres(count, None) is None


def test_every_field_kind_has_a_postgres_reader():
    from types import SimpleNamespace

    from reconcile_pipeline.engine.convert import from_postgres, postgres_reader

    for kind in FieldKind:
        assert callable(postgres_reader(FieldSpec(f"F {kind.value}", "col", kind)))
    with pytest.raises(AssertionError, match="unhandled kind bogus"):
        postgres_reader(SimpleNamespace(kind="bogus"))
    # A value PostgreSQL should never hold is named with its field, never passed on.
    with pytest.raises(InvalidValue, match="At"):
        from_postgres(WHEN, "not a time")


def test_only_surrogate_code_points_make_text_unstorable():
    from reconcile_pipeline.engine.convert import has_lone_surrogate, jsonb_safe

    assert not has_lone_surrogate("plain ascii")
    assert not has_lone_surrogate("José, Zoë, 日本, 🙂")
    assert has_lone_surrogate("bad \udc80 byte")
    assert has_lone_surrogate("\ud83d")
    assert jsonb_safe({"name": "José 🙂"}) and not jsonb_safe({"name": "x\udc80"})


def test_format_datetime_treats_naive_as_utc_and_converts_offsets():
    import datetime as dt

    from reconcile_pipeline.engine.convert import format_datetime

    assert format_datetime(dt.datetime(2024, 3, 1, 10, 0)) == "2024-03-01T10:00:00Z"
    # Years below 1000 keep four digits (found by the hypothesis test: "99-12-31…" broke a batch).
    assert format_datetime(dt.datetime(99, 12, 31, 10, 0)) == "0099-12-31T10:00:00Z"
    assert from_airtable(WHEN, "0099-12-31T10:00:00Z") == "0099-12-31T10:00:00Z"
    plus_two = dt.timezone(dt.timedelta(hours=2))
    assert format_datetime(dt.datetime(2024, 3, 1, 12, 0, tzinfo=plus_two)) == (
        "2024-03-01T10:00:00Z"
    )


def test_a_portal_value_is_checked_like_a_pulled_one_before_it_is_sent():
    from reconcile_pipeline.engine.convert import portal_value_problem

    assert portal_value_problem(REQUIRED, "ok") is None
    assert "required" in portal_value_problem(REQUIRED, None)
    assert "longer than 5" in portal_value_problem(REQUIRED, "toolong")
    assert "unknown option" in portal_value_problem(SELECT, "Nope")
    assert portal_value_problem(SELECT, "New") is None
    assert portal_value_problem(FLAG, True) is None


def test_dates_and_datetimes_out_of_range_are_reasons_not_crashes():
    for raw in ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "not a date"):
        with pytest.raises(InvalidValue):
            from_airtable(WHEN, raw)
    with pytest.raises(InvalidValue):
        from_airtable(DAY, "2024-02-30")


def test_attachments_are_stored_as_stable_objects_never_the_expiring_url():
    files = FieldSpec("Files", "files", FieldKind.ATTACHMENTS)
    raw = [
        {
            "id": "attAAAAAAAAAAAAAA",
            "url": "https://v5.airtableusercontent.com/expiring",
            "filename": "quote.pdf",
            "size": 1024,
            "type": "application/pdf",
            "thumbnails": {"small": {"url": "https://expiring"}},
        }
    ]

    assert from_airtable(files, raw) == [
        {
            "id": "attAAAAAAAAAAAAAA",
            "filename": "quote.pdf",
            "size": 1024,
            "type": "application/pdf",
        }
    ]
    assert from_airtable(files, None) is None
    with pytest.raises(InvalidValue, match="not an attachment"):
        from_airtable(files, [{"url": "https://no-id"}])
