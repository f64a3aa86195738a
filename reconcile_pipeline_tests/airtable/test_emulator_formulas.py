"""filterByFormula in the emulator evaluates what pyairtable.formulas generates, Airtable-style.

Airtable semantics under test: blank equals '' and 0 under ``=``; a blank never satisfies a
date comparison (so a never-edited record is outside every LAST_MODIFIED_TIME() window);
dates compare at millisecond precision with a closed start and open end; strings escape
quotes and backslashes with a backslash; an invalid formula fails the request with 422
INVALID_FILTER_BY_FORMULA; a formula too long for a URL goes by POST to ``listRecords``.
"""

from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest
import requests
from pyairtable import Api, Table
from pyairtable import formulas as F

from reconcile_pipeline.emulator import Emulator
from reconcile_pipeline_tests.airtable.conftest import BASE, TABLE, lead

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
MS = timedelta(milliseconds=1)


@pytest.fixture
def people(emulator: Emulator) -> dict[str, str]:
    """Records keyed by label; times are relative to T0."""
    specs = {
        # never edited, created at T0
        "fresh": (lead(**{"Last Name": "O'Brien", "ICP Score": 10}), T0, None),
        # created a day earlier, edited at T0 + 1 s
        "edited": (lead(**{"Last Name": "back\\slash", "Booked": True}), T0 - timedelta(1), None),
        # created earlier, never edited, mostly blank
        "old": ({"Email": "old@example.com", "Last Name": "Zoë 🚀 \"quoted\""},
                T0 - timedelta(2), None),
    }  # fmt: skip
    labels = {}
    for label, (fields, created, modified) in specs.items():
        [labels[label]] = emulator.seed_records(
            BASE, TABLE, [fields], created_time=created, modified_time=modified
        )
    emulator.update_record_fields(
        BASE, TABLE, labels["edited"], {"Notes": "called"}, modified_time=T0 + timedelta(seconds=1)
    )
    return labels


def matching(table: Table, people: dict[str, str], formula: object) -> set[str]:
    by_id = {record_id: label for label, record_id in people.items()}
    return {by_id[r["id"]] for r in table.all(formula=formula)}


@pytest.mark.parametrize(
    ("formula", "expected"),
    [
        # Closed start: the edit at exactly T0+1s is inside [T0+1s, …).
        (F.GTE(F.LAST_MODIFIED_TIME(), T0 + timedelta(seconds=1)), {"edited"}),
        # Open end, millisecond precision: one ms after the edit still excludes it …
        (F.LT(F.LAST_MODIFIED_TIME(), T0 + timedelta(seconds=1)), set()),
        # … and one ms later includes it.
        (F.LT(F.LAST_MODIFIED_TIME(), T0 + timedelta(seconds=1) + MS), {"edited"}),
        # Never-edited records have a blank last-modified time.
        (F.EQ(F.LAST_MODIFIED_TIME(), F.BLANK()), {"fresh", "old"}),
        # The sync window: modified in window, or never edited and created in window.
        (
            F.OR(
                F.AND(F.GTE(F.LAST_MODIFIED_TIME(), T0), F.LT(F.LAST_MODIFIED_TIME(), T0 + MS)),
                F.AND(
                    F.EQ(F.LAST_MODIFIED_TIME(), F.BLANK()),
                    F.GTE(F.CREATED_TIME(), T0),
                    F.LT(F.CREATED_TIME(), T0 + MS),
                ),
            ),
            {"fresh"},
        ),
        (F.IS_BEFORE(F.CREATED_TIME(), T0 - timedelta(hours=36)), {"old"}),
        (F.IS_AFTER(F.CREATED_TIME(), T0 - timedelta(hours=36)), {"fresh", "edited"}),
        (F.IS_SAME(F.CREATED_TIME(), T0.date(), "day"), {"fresh"}),
        (F.GTE(F.LAST_MODIFIED_TIME(F.Field("Notes")), T0), {"edited"}),
        (F.EQ(F.CREATED_TIME(), F.DATETIME_PARSE("01/05/2024 12:00", "DD/MM/YYYY HH:mm")),
         {"fresh"}),
    ],
)  # fmt: skip
def test_datetime_windows(
    table: Table, people: dict[str, str], formula: object, expected: set[str]
) -> None:
    assert matching(table, people, formula) == expected


@pytest.mark.parametrize(
    ("formula", "expected"),
    [
        # Single quote escaped as \' by pyairtable.
        (F.match({"Last Name": "O'Brien"}), {"fresh"}),
        # Backslash escaped as \\.
        (F.EQ(F.Field("Last Name"), "back\\slash"), {"edited"}),
        # Unicode and double quotes inside a single-quoted literal.
        (F.EQ(F.Field("Last Name"), 'Zoë 🚀 "quoted"'), {"old"}),
        # Double-quoted literal with an escaped double quote, written by hand.
        ('{Last Name}="Zoë 🚀 \\"quoted\\""', {"old"}),
        (F.NE(F.Field("Last Name"), "O'Brien"), {"edited", "old"}),
        (F.FIND("slash", F.Field("Last Name")), {"edited"}),
        (F.EQ(F.LOWER(F.Field("Last Name")), "o'brien"), {"fresh"}),
        ("{First Name} & ' ' & {Last Name} = 'Ada O\\'Brien'", {"fresh"}),
        (
            F.EQ(F.CONCATENATE(F.Field("First Name"), "-", F.UPPER("x")), "Ada-X"),
            {"fresh", "edited"},
        ),
        (F.EQ(F.LEN(F.TRIM(F.Field("Last Name"))), 7), {"fresh"}),
        (F.EQ(F.RECORD_ID(), "recDoesNotExist00"), set()),
    ],
)
def test_text_matches(
    table: Table, people: dict[str, str], formula: object, expected: set[str]
) -> None:
    assert matching(table, people, formula) == expected


@pytest.mark.parametrize(
    ("formula", "expected"),
    [
        # Blank equals '' and 0 …
        ("{Notes}=''", {"fresh", "old"}),
        ("{ICP Score}=0", {"old"}),
        # … and an unchecked checkbox is FALSE().
        (F.EQ(F.Field("Booked"), False), {"fresh", "old"}),
        (F.Field("Booked"), {"edited"}),
        # In an ordering comparison with a number, blank counts as 0.
        (F.LT(F.Field("ICP Score"), 50), {"fresh", "old"}),
        (F.AND(F.GT(F.Field("ICP Score"), 5), F.NOT(F.Field("Booked"))), {"fresh"}),
        (F.OR(F.Field("Booked"), F.EQ(F.Field("ICP Score"), 10)), {"fresh", "edited"}),
        ("{ICP Score} * 2 + 1 = 21", {"fresh"}),
        # pyairtable renders a Fraction as a division.
        (F.EQ(F.Field("ICP Score"), Fraction(20, 2)), {"fresh"}),
        (F.IF(F.Field("Booked"), 1, 0), {"edited"}),
        ("AND(TRUE(), NOT(FALSE()), {Email})", {"fresh", "edited", "old"}),
        (F.EQ(F.Field("Full Name"), "Ada O'Brien"), {"fresh"}),
    ],
)
def test_blanks_logic_and_arithmetic(
    table: Table, people: dict[str, str], formula: object, expected: set[str]
) -> None:
    assert matching(table, people, formula) == expected


@pytest.mark.parametrize(
    "formula",
    [
        "{Last Name}='unterminated",  # syntax error
        "{Nickname}='x'",  # unknown field
        "NO_SUCH_FUNCTION(1)",  # unknown function
        "AND(1,",  # truncated
        "IF(1)",  # wrong number of arguments
    ],
)
def test_invalid_formulas_fail_the_request(
    table: Table, people: dict[str, str], formula: str
) -> None:
    with pytest.raises(requests.HTTPError) as excinfo:
        table.all(formula=formula)

    assert excinfo.value.response.status_code == 422
    assert excinfo.value.response.json()["error"]["type"] == "INVALID_FILTER_BY_FORMULA"


def test_long_formula_goes_by_post_list_records(emulator: Emulator, table: Table) -> None:
    ids = emulator.seed_records(BASE, TABLE, [lead() for _ in range(1000)])
    wanted = ids[::2]
    formula = F.OR(*(F.EQ(F.RECORD_ID(), record_id) for record_id in wanted))
    # Past pyairtable's URL limit even before URL-encoding, so it must switch to POST.
    assert len(str(formula)) > Api.MAX_URL_LENGTH
    emulator.reset_request_log()

    found = [r["id"] for r in table.all(formula=formula)]

    assert sorted(found) == sorted(wanted)
    counts = emulator.request_log()["counts"]
    assert counts == {"POST /v0/{base}/{table}/listRecords": 5}  # 500 records, 100 a page
