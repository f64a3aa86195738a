"""Hostile values: the emulator stores what the admin "raw fields" operation gives it verbatim
and serves it back exactly, for the real pyairtable client over real HTTP.

Each value below is something Airtable (or a proxy in front of it) could send and a sync
engine must survive: NUL bytes, lone UTF-16 surrogates, bare NaN/Infinity, dates out of
``datetime``'s range once converted to UTC, numbers in date fields, unknown select options,
formula error objects, 10 MB strings, objects where text belongs. Every one is read back by
a modified-time filtered list (GET), a record GET and a POST listRecords, by name and by id.
"""

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from pyairtable import Api, Table
from pyairtable import formulas as F

from reconcile_pipeline.emulator import Emulator, EmulatorAdmin, run_emulator

BASE = "appHostile0000001"
TABLE = "Things"
FIELD_IDS = {
    "Name": "fldName0000000001",
    "Notes": "fldNotes000000001",
    "Score": "fldScore000000001",
    "Status": "fldStatus00000001",
    "Tags": "fldTags0000000001",
    "Due": "fldDue00000000001",
    "At": "fldAt000000000001",
    "Done": "fldDone0000000001",
    "Calc": "fldCalc0000000001",
    "Label": "fldLabel000000001",
    "Created": "fldCreated0000001",
    "Modified": "fldModified000001",
}


def choice(name: str) -> dict[str, str]:
    return {"id": f"sel{name:0<14}", "name": name, "color": "blueLight2"}


SCHEMA: dict[str, Any] = {
    "bases": [
        {
            "id": BASE,
            "name": "Hostile",
            "tables": [
                {
                    "id": "tblThings00000001",
                    "name": TABLE,
                    "primaryFieldId": FIELD_IDS["Name"],
                    "fields": [
                        {"id": FIELD_IDS["Name"], "name": "Name", "type": "singleLineText"},
                        {"id": FIELD_IDS["Notes"], "name": "Notes", "type": "multilineText"},
                        {
                            "id": FIELD_IDS["Score"],
                            "name": "Score",
                            "type": "number",
                            "options": {"precision": 0},
                        },
                        {
                            "id": FIELD_IDS["Status"],
                            "name": "Status",
                            "type": "singleSelect",
                            "options": {"choices": [choice("New"), choice("Done")]},
                        },
                        {
                            "id": FIELD_IDS["Tags"],
                            "name": "Tags",
                            "type": "multipleSelects",
                            "options": {"choices": [choice("VIP")]},
                        },
                        {"id": FIELD_IDS["Due"], "name": "Due", "type": "date"},
                        {"id": FIELD_IDS["At"], "name": "At", "type": "dateTime"},
                        {"id": FIELD_IDS["Done"], "name": "Done", "type": "checkbox"},
                        {
                            "id": FIELD_IDS["Calc"],
                            "name": "Calc",
                            "type": "formula",
                            "options": {"formula": "{Score} * 2"},
                        },
                        {
                            "id": FIELD_IDS["Label"],
                            "name": "Label",
                            "type": "formula",
                            "options": {"formula": "{Name} & '!'"},
                        },
                        {"id": FIELD_IDS["Created"], "name": "Created", "type": "createdTime"},
                        {
                            "id": FIELD_IDS["Modified"],
                            "name": "Modified",
                            "type": "lastModifiedTime",
                        },
                    ],
                }
            ],
        }
    ]
}

CREATED = "2020-01-01T00:00:00.000Z"
EDITED = "2024-06-01T12:00:00.000Z"
WINDOW = (datetime(2024, 6, 1, 11, tzinfo=UTC), datetime(2024, 6, 1, 13, tzinfo=UTC))
TEN_MB = 10 * 1024 * 1024

# (case id, field, value): every value goes to the API and back unchanged.
HOSTILE: list[tuple[str, str, Any]] = [
    ("nul-byte", "Name", "before\u0000after"),
    ("only-nul", "Notes", "\u0000"),
    ("lone-high-surrogate", "Name", "\ud800"),
    ("lone-low-surrogate-in-text", "Notes", "a\udfffb ünï ☃ 💥"),
    ("reversed-surrogate-pair", "Name", "\udc00\ud800"),
    ("nan", "Score", math.nan),
    ("infinity", "Score", math.inf),
    ("minus-infinity", "Score", -math.inf),
    ("huge-int", "Score", 10**30),
    ("float-in-integer-field", "Score", 0.1 + 0.2),
    ("text-in-number", "Score", "12"),
    ("bool-in-number", "Score", True),
    ("datetime-at-max", "At", "9999-12-31T23:59:59-14:00"),
    ("datetime-at-min", "At", "0001-01-01T00:00:00+14:00"),
    ("datetime-garbage", "At", "not a date"),
    ("number-in-date", "Due", 20240101),
    ("float-in-date", "Due", 1717243200.5),
    ("datetime-in-date", "Due", "2024-06-01T23:59:59.999-12:00"),
    ("unknown-single-select", "Status", "Archived"),
    ("unknown-multi-select", "Tags", ["VIP", "Archived", "VIP"]),
    ("select-as-object", "Status", {"id": "selNew00000000000", "name": "New"}),
    ("formula-nan", "Calc", {"specialValue": "NaN"}),
    ("formula-infinity", "Calc", {"specialValue": "Infinity"}),
    ("formula-error", "Label", {"error": "#ERROR!"}),
    ("nested-object-as-text", "Name", {"nested": {"deep": [1, "two", None, {"x": math.nan}]}}),
    ("list-as-text", "Notes", ["a", 1, None, False]),
    ("null", "Name", None),
    ("empty-string", "Notes", ""),
    ("false-checkbox", "Done", False),
    ("text-in-checkbox", "Done", "yes"),
    ("empty-list", "Tags", []),
    ("control-characters", "Notes", "\x01\x1f\x7f\u2028\u2029\ufeff"),
    ("ten-megabytes", "Notes", "x" * (TEN_MB - 1) + "\u00e9"),
    ("ten-megabytes-with-surrogate", "Notes", "\ud800" + "y" * TEN_MB),
]


def same(got: Any, expected: Any) -> bool:
    """Exact JSON equality: types (1 vs 1.0 vs True) and NaN compare as they serialize."""
    return json.dumps(got, sort_keys=True) == json.dumps(expected, sort_keys=True)


def window_formula() -> str:
    """The sync engine's modified-time window, as `AirtableClient.iter_modified` builds it."""
    start, end = WINDOW
    modified, created = F.LAST_MODIFIED_TIME(), F.CREATED_TIME()
    return str(
        F.OR(
            F.AND(F.GTE(modified, start), F.LT(modified, end)),
            F.AND(F.EQ(modified, F.BLANK()), F.GTE(created, start), F.LT(created, end)),
        )
    )


@pytest.fixture(scope="module")
def schema_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hostile") / "schema.json"
    path.write_text(json.dumps(SCHEMA), encoding="utf-8")
    return path


@pytest.fixture
def emulator(schema_path: Path) -> Iterator[Emulator]:
    with run_emulator(schema_path, rate_limit=0) as running:
        yield running


@pytest.fixture
def admin(emulator: Emulator) -> Iterator[EmulatorAdmin]:
    client = EmulatorAdmin(emulator.url)
    yield client
    client.close()


@pytest.fixture
def api(emulator: Emulator) -> Api:
    return Api(emulator.token, endpoint_url=emulator.url, retry_strategy=None)


@pytest.fixture
def table(api: Api) -> Table:
    return api.table(BASE, TABLE)


def seed_two(emulator: Emulator) -> tuple[str, str]:
    """A record to edit and a bystander, both created long before the window."""
    ids = emulator.seed_records(
        BASE, TABLE, [{"Name": "target"}, {"Name": "bystander"}], created_time=CREATED
    )
    return ids[0], ids[1]


def list_post(table: Table, formula: str, by_id: bool = False) -> list[dict[str, Any]]:
    body: dict[str, Any] = {"filterByFormula": formula, "returnFieldsByFieldId": by_id}
    return table.api.post(table.urls.records_post, json=body)["records"]


@pytest.mark.parametrize(("field", "value"), [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_raw_value_is_served_verbatim_by_list_get_and_list_records(
    emulator: Emulator, admin: EmulatorAdmin, table: Table, field: str, value: Any
) -> None:
    record_id, _ = seed_two(emulator)

    echoed = admin.put_raw_fields(BASE, TABLE, record_id, {field: value}, modified_time=EDITED)
    assert same(echoed["fields"][field], value)
    assert echoed["fields"]["Modified"] == EDITED

    listed = table.all(formula=window_formula())
    assert [r["id"] for r in listed] == [record_id]  # the edit moved it into the window
    by_id = table.all(formula=window_formula(), use_field_ids=True)
    fetched = table.get(record_id)
    posted = list_post(table, str(F.EQ(F.RECORD_ID(), record_id)))
    posted_by_id = list_post(table, window_formula(), by_id=True)
    for record in (listed[0], fetched, posted[0]):
        assert field in record["fields"]
        assert same(record["fields"][field], value)
        assert record["fields"]["Name"] == "target" or field == "Name"
    for record in (by_id[0], posted_by_id[0]):
        assert same(record["fields"][FIELD_IDS[field]], value)


def test_nan_infinity_nul_and_surrogate_go_on_the_wire_as_json_tokens(
    emulator: Emulator, admin: EmulatorAdmin, table: Table
) -> None:
    record_id, _ = seed_two(emulator)
    admin.put_raw_fields(BASE, TABLE, record_id, {"Score": math.nan, "Name": "\ud800\u0000"})
    admin.put_raw_fields(BASE, TABLE, record_id, {"Calc": math.inf, "Notes": -math.inf})

    response = requests.get(
        f"{emulator.url}/v0/{BASE}/{TABLE}/{record_id}",
        headers={"Authorization": f"Bearer {emulator.token}"},
        timeout=10,
    )
    assert response.status_code == 200
    assert b'"Score":NaN' in response.content
    assert b'"Calc":Infinity' in response.content
    assert b'"Notes":-Infinity' in response.content
    assert b'"Name":"\\ud800\\u0000"' in response.content
    response.content.decode("utf-8")  # valid UTF-8 despite the surrogate

    fields = table.get(record_id)["fields"]
    assert math.isnan(fields["Score"])
    assert fields["Calc"] == math.inf and fields["Notes"] == -math.inf
    assert fields["Name"] == "\ud800\u0000" and len(fields["Name"]) == 2


def test_non_ascii_text_still_goes_out_as_utf8_when_nothing_needs_escaping(
    emulator: Emulator, admin: EmulatorAdmin
) -> None:
    record_id, _ = seed_two(emulator)
    admin.put_raw_fields(BASE, TABLE, record_id, {"Name": "Zoë ☃"})
    response = requests.get(
        f"{emulator.url}/v0/{BASE}/{TABLE}/{record_id}",
        headers={"Authorization": f"Bearer {emulator.token}"},
        timeout=10,
    )
    assert '"Name":"Zoë ☃"'.encode() in response.content


def test_seeded_raw_records_are_listed_by_their_creation_or_modification_time(
    emulator: Emulator, admin: EmulatorAdmin, table: Table
) -> None:
    seed_two(emulator)
    inside = "2024-06-01T12:30:00.000Z"
    created_in_window, modified_in_window, outside = admin.seed_raw_records(
        BASE,
        TABLE,
        [
            {"Name": "\u0000", "Score": math.nan},
            {FIELD_IDS["Name"]: {"not": "text"}, "Due": 7},
            {"Name": "\ud800"},
        ],
        created_time=[inside, CREATED, CREATED],
        modified_time=[None, inside, None],
    )

    listed = {r["id"]: r for r in table.all(formula=window_formula())}
    assert set(listed) == {created_in_window, modified_in_window}
    assert listed[created_in_window]["fields"]["Name"] == "\u0000"
    assert math.isnan(listed[created_in_window]["fields"]["Score"])
    assert "Modified" not in listed[created_in_window]["fields"]  # never modified
    assert listed[modified_in_window]["fields"]["Name"] == {"not": "text"}
    assert listed[modified_in_window]["fields"]["Modified"] == inside
    assert listed[modified_in_window]["createdTime"] == CREATED
    assert table.get(outside)["fields"]["Name"] == "\ud800"
    # Autonumbers and created times behave as for ordinary seeding.
    assert emulator.all_records(BASE, TABLE)[-1]["createdTime"] == CREATED


def test_put_raw_fields_without_a_time_bumps_modified_to_now(
    emulator: Emulator, table: Table
) -> None:
    record_id, _ = seed_two(emulator)
    before = datetime.now(UTC).replace(microsecond=0)
    record = emulator.put_raw_fields(BASE, TABLE, record_id, {"Score": math.nan})
    after = datetime.now(UTC)
    modified = datetime.fromisoformat(record["fields"]["Modified"].replace("Z", "+00:00"))
    assert before <= modified <= after
    formula = str(F.GTE(F.LAST_MODIFIED_TIME(), before))
    assert [r["id"] for r in table.all(formula=formula)] == [record_id]
    # Per-field modified times move too (LAST_MODIFIED_TIME({field})).
    formula = str(F.GTE(F.LAST_MODIFIED_TIME(F.Field("Score")), before))
    assert [r["id"] for r in table.all(formula=formula)] == [record_id]
    formula = str(F.GTE(F.LAST_MODIFIED_TIME(F.Field("Name")), before))
    assert table.all(formula=formula) == []


def test_formulas_over_raw_values_yield_values_or_errors_never_a_crash(
    emulator: Emulator, admin: EmulatorAdmin, table: Table
) -> None:
    ids = emulator.seed_records(BASE, TABLE, [{"Name": f"r{i}"} for i in range(6)])
    admin.put_raw_fields(BASE, TABLE, ids[0], {"Score": math.nan, "Name": "a\u0000b"})
    admin.put_raw_fields(BASE, TABLE, ids[1], {"Score": "not a number", "Name": {"x": 1}})
    admin.put_raw_fields(BASE, TABLE, ids[2], {"Score": "21", "Name": ["p", "q"]})
    admin.put_raw_fields(BASE, TABLE, ids[3], {"Score": {"specialValue": "Infinity"}})
    admin.put_raw_fields(BASE, TABLE, ids[4], {"Score": 10**400 // 10**370, "Name": "\ud800"})
    admin.put_raw_fields(BASE, TABLE, ids[5], {"Score": {"error": "#ERROR!"}, "Name": None})

    fields = {r["id"]: r["fields"] for r in table.all()}
    assert fields[ids[0]]["Calc"] == {"specialValue": "NaN"}
    assert fields[ids[0]]["Label"] == "a\u0000b!"
    assert fields[ids[1]]["Calc"] == {"error": "#ERROR!"}
    assert fields[ids[1]]["Label"] == {"error": "#ERROR!"}
    assert fields[ids[2]]["Calc"] == 42
    assert fields[ids[2]]["Label"] == "p, q!"
    assert fields[ids[3]]["Calc"] == {"specialValue": "Infinity"}
    assert fields[ids[4]]["Calc"] == 2 * 10**30
    assert fields[ids[4]]["Label"] == "\ud800!"
    assert fields[ids[5]]["Calc"] == {"error": "#ERROR!"}
    assert fields[ids[5]]["Name"] is None and fields[ids[5]]["Label"] == "!"

    # Filters referencing raw fields answer (erroring records simply do not match).
    assert {r["id"] for r in table.all(formula="{Calc} > 40")} == {ids[2], ids[3], ids[4]}
    assert [r["id"] for r in table.all(formula='FIND("b", {Name})')] == [ids[0]]
    # NaN and infinity count as errors for ISERROR, as the objects do.
    erroring = [ids[0], ids[1], ids[3], ids[5]]
    assert [r["id"] for r in table.all(formula="ISERROR({Score} * 1)")] == erroring


@pytest.mark.parametrize(
    "formula",
    [
        "OR({Name} = 'x', {Notes} = 'x', {Score} > 1, {Status} = 'Archived', {Tags} = 'VIP')",
        "OR(IS_AFTER({At}, '2000-01-01'), IS_BEFORE({Due}, '2000-01-01'), {Done})",
        "OR(DATETIME_DIFF({At}, {Due}, 'days') > 0, YEAR({At}) > 2000, DATEADD({Due}, 1, 'd'))",
        "OR(LEN({Name} & {Notes} & {Calc} & {Label}) > 3, VALUE({Score}) > 0, {Score} / 0)",
        "OR(REGEX_MATCH({Notes}, 'x+'), SEARCH('a', {Name}), ROUND({Score}, 2), SQRT({Score}))",
        "OR(AND(LAST_MODIFIED_TIME() >= '2024-01-01', LAST_MODIFIED_TIME({At}) < NOW()), "
        "CREATED_TIME() >= '2024-01-01')",
    ],
)
def test_filters_and_sorts_over_every_hostile_value_answer(
    emulator: Emulator, admin: EmulatorAdmin, table: Table, formula: str
) -> None:
    small = [c for c in HOSTILE if not c[0].startswith("ten-megabytes")]
    ids = emulator.seed_records(BASE, TABLE, [{"Name": "x"}] * len(small), created_time=CREATED)
    for record_id, (_, field, value) in zip(ids, small, strict=True):
        admin.put_raw_fields(BASE, TABLE, record_id, {field: value}, modified_time=EDITED)

    table.all(formula=formula)  # no error status
    list_post(table, formula)
    sort = ["Name", "-Score", "At", "Due", "Status", "Tags", "Calc", "Label", "Done", "Notes"]
    assert len(table.all(sort=sort)) == len(small)
    assert len(table.all(cell_format="string", time_zone="UTC", user_locale="en-us")) == len(small)


def test_regular_writes_replace_raw_values(
    emulator: Emulator, admin: EmulatorAdmin, table: Table
) -> None:
    record_id, _ = seed_two(emulator)
    admin.put_raw_fields(BASE, TABLE, record_id, {"Score": math.nan, "Notes": None, "Due": 5})

    updated = table.update(record_id, {"Score": 3, "Notes": "fine"})
    assert updated["fields"]["Score"] == 3 and updated["fields"]["Notes"] == "fine"
    assert updated["fields"]["Due"] == 5  # PATCH leaves other raw values alone
    assert table.update(record_id, {"Due": None})["fields"].get("Due") is None
    replaced = table.update(record_id, {"Name": "only"}, replace=True)
    assert set(replaced["fields"]) == {"Name", "Label", "Calc", "Created", "Modified"}
    assert replaced["fields"]["Calc"] == 0  # a blank score is 0 to the formula


def test_raw_values_override_computed_fields(emulator: Emulator, table: Table) -> None:
    record_id, _ = seed_two(emulator)
    emulator.put_raw_fields(BASE, TABLE, record_id, {"Created": 0, "Modified": None})
    fields = table.get(record_id)["fields"]
    assert fields["Created"] == 0 and fields["Modified"] is None
    assert "Modified" in fields  # served even though null


def test_raw_writes_reject_unknown_fields_records_and_non_json(
    emulator: Emulator, admin: EmulatorAdmin
) -> None:
    record_id, _ = seed_two(emulator)
    with pytest.raises(requests.HTTPError) as excinfo:
        admin.put_raw_fields(BASE, TABLE, record_id, {"Nope": 1})
    assert excinfo.value.response.status_code == 422
    assert excinfo.value.response.json()["error"]["type"] == "UNKNOWN_FIELD_NAME"
    with pytest.raises(requests.HTTPError) as excinfo:
        admin.put_raw_fields(BASE, TABLE, "recNOPE0000000000", {"Name": 1})
    assert excinfo.value.response.status_code == 404
    with pytest.raises(ValueError, match="JSON"):
        emulator.put_raw_fields(BASE, TABLE, record_id, {"Name": datetime.now(UTC)})
    with pytest.raises(ValueError, match="JSON"):
        emulator.seed_raw_records(BASE, TABLE, [{"Name": {1, 2}}])
    # Nothing was half-applied.
    assert emulator.all_records(BASE, TABLE)[0]["fields"]["Name"] == "target"


def test_raw_values_survive_a_save_and_restore_of_the_data_file(
    schema_path: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data.json"
    values = {
        "Name": "\ud800\u0000",
        "Score": math.nan,
        "Calc": {"specialValue": "NaN"},
        "At": "9999-12-31T23:59:59-14:00",
        "Due": 20240101,
        "Notes": None,
        "Tags": ["Archived"],
    }
    first = Emulator(schema_path, data_path=data)
    [record_id] = first.seed_records(BASE, TABLE, [{"Name": "x", "At": "2024-01-01T00:00:00Z"}])
    first.put_raw_fields(BASE, TABLE, record_id, values, modified_time=EDITED)
    [seeded] = first.seed_raw_records(BASE, TABLE, [{"Score": math.inf}], created_time=CREATED)
    first.close()  # saves
    data.read_text(encoding="ascii")  # every odd character escaped in the file

    with run_emulator(schema_path, data_path=data) as second:
        table = Api(second.token, endpoint_url=second.url).table(BASE, TABLE)
        fields = table.get(record_id)["fields"]
        for name, value in values.items():
            assert same(fields[name], value), name
        assert fields["Modified"] == EDITED
        assert table.get(seeded)["fields"]["Score"] == math.inf
        # A regular write after the restore still replaces a raw value.
        assert table.update(record_id, {"At": "2025-01-01T00:00:00Z"})["fields"]["At"] == (
            "2025-01-01T00:00:00.000Z"
        )
