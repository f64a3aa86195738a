"""The emulator's record API behaves like api.airtable.com for the real pyairtable client.

Quirks under test: empty values are omitted from responses; writes are limited to 10 records a
request (11 is a 422 INVALID_RECORDS); pages hold at most 100 records and continue through an
opaque offset; a record never edited since creation has no last-modified time; computed fields
reject writes; unknown select options need ``typecast``; errors use Airtable's JSON shapes.
"""

import json
import re
from pathlib import Path

import pytest
import requests
from pyairtable import Api, Table

from reconcile_pipeline.emulator import Emulator, run_emulator
from reconcile_pipeline_tests.airtable.conftest import BASE, TABLE, lead

RECORD_ID = re.compile(r"^rec[A-Za-z0-9]{14}$")
AIRTABLE_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def error_of(excinfo: pytest.ExceptionInfo[requests.HTTPError]) -> tuple[int, object]:
    response = excinfo.value.response
    return response.status_code, response.json()["error"]


def test_create_returns_airtable_shaped_record_without_empty_values(table: Table) -> None:
    created = table.create(lead(Notes="", Booked=False, Tags=[], Phone=None))

    assert RECORD_ID.match(created["id"])
    assert AIRTABLE_TIME.match(created["createdTime"])
    fields = created["fields"]
    # Empty string, false checkbox, empty list and null are all omitted, like Airtable.
    assert not {"Notes", "Booked", "Tags", "Phone"} & fields.keys()
    assert fields["Email"] == "ada@example.com"
    # Computed fields come back with the record: created time, autonumber, the formula.
    assert fields["Created"] == created["createdTime"]
    assert fields["Lead Number"] == 1
    assert fields["Full Name"] == "Ada Lovelace"
    # Never edited: no last-modified time.
    assert "Last Modified" not in fields


def test_get_update_replace_and_delete_round_trip(table: Table) -> None:
    record_id = table.create(lead(Notes="first"))["id"]

    patched = table.update(record_id, {"Notes": "second"})
    assert patched["fields"]["Notes"] == "second"
    assert patched["fields"]["First Name"] == "Ada"  # PATCH keeps other fields
    assert AIRTABLE_TIME.match(patched["fields"]["Last Modified"])

    replaced = table.update(record_id, {"Email": "new@example.com"}, replace=True)
    assert set(replaced["fields"]) - {"Created", "Last Modified", "Lead Number"} == {"Email"}
    assert table.get(record_id)["fields"]["Email"] == "new@example.com"

    assert table.delete(record_id) == {"id": record_id, "deleted": True}
    with pytest.raises(requests.HTTPError) as excinfo:
        table.get(record_id)
    assert error_of(excinfo) == (404, "NOT_FOUND")


def test_batch_of_ten_is_accepted_and_eleven_is_rejected(table: Table) -> None:
    ten = [{"fields": lead(Email=f"p{i}@example.com")} for i in range(10)]
    response = table.api.post(table.urls.records, json={"records": ten})
    assert len(response["records"]) == 10

    eleven = [{"fields": lead(Email=f"q{i}@example.com")} for i in range(11)]
    with pytest.raises(requests.HTTPError) as excinfo:
        table.api.post(table.urls.records, json={"records": eleven})
    status, error = error_of(excinfo)
    assert (status, error["type"]) == (422, "INVALID_RECORDS")
    updates = [{"id": r["id"], "fields": {"Notes": "x"}} for r in response["records"]]
    with pytest.raises(requests.HTTPError) as excinfo:
        table.api.patch(table.urls.records, json={"records": [*updates, updates[0]]})
    assert error_of(excinfo)[0] == 422
    assert len(table.all()) == 10  # nothing from the rejected requests was written


def test_a_failing_record_rejects_the_whole_batch(table: Table) -> None:
    ok, bad = table.batch_create([lead(), lead(Email="other@example.com")])

    with pytest.raises(requests.HTTPError):
        table.batch_update(
            [{"id": ok["id"], "fields": {"Notes": "applied?"}},
             {"id": bad["id"], "fields": {"ICP Score": "high"}}]
        )  # fmt: skip

    assert "Notes" not in table.get(ok["id"])["fields"]


def test_pagination_with_a_filter_visits_every_match_once(emulator: Emulator, table: Table) -> None:
    emulator.seed_records(BASE, TABLE, [lead(**{"ICP Score": i % 2}) for i in range(500)])
    emulator.reset_request_log()

    pages = list(table.iterate(formula="{ICP Score}=1", page_size=100))

    assert [len(p) for p in pages] == [100, 100, 50]
    ids = [r["id"] for page in pages for r in page]
    assert len(set(ids)) == 250
    assert emulator.request_log()["counts"] == {"GET /v0/{base}/{table}": 3}


def test_max_records_and_page_size_limits(emulator: Emulator, table: Table) -> None:
    emulator.seed_records(BASE, TABLE, [lead() for _ in range(30)])

    assert len(table.all(max_records=25, page_size=10)) == 25
    with pytest.raises(requests.HTTPError) as excinfo:
        table.all(page_size=101)
    assert error_of(excinfo)[0] == 422


def test_sort_fields_and_field_ids(emulator: Emulator, table: Table) -> None:
    emulator.seed_records(
        BASE, TABLE, [lead(**{"ICP Score": s, "Last Name": n}) for s, n in [(5, "b"), (9, "a")]]
    )

    by_score = table.all(sort=["-ICP Score"], fields=["ICP Score"])
    assert [r["fields"] for r in by_score] == [{"ICP Score": 9}, {"ICP Score": 5}]
    by_name = table.all(sort=["Last Name"], use_field_ids=True, fields=["fld863cb39fbe7d70"])
    assert [r["fields"] for r in by_name] == [
        {"fld863cb39fbe7d70": "a"},
        {"fld863cb39fbe7d70": "b"},
    ]


def test_writes_accept_field_ids_and_return_them_on_request(table: Table) -> None:
    created = table.create({"fld84add5b2952787": "id@example.com"}, use_field_ids=True)

    assert created["fields"]["fld84add5b2952787"] == "id@example.com"
    assert table.get(created["id"])["fields"]["Email"] == "id@example.com"


def test_unknown_select_option_needs_typecast(table: Table) -> None:
    with pytest.raises(requests.HTTPError) as excinfo:
        table.create(lead(Status="Dormant"))
    status, error = error_of(excinfo)
    assert (status, error["type"]) == (422, "INVALID_MULTIPLE_CHOICE_OPTIONS")

    created = table.create(lead(Status="Dormant", Tags=["VIP", "Partner"]), typecast=True)
    assert created["fields"]["Status"] == "Dormant"
    assert created["fields"]["Tags"] == ["VIP", "Partner"]
    choices = {
        field.name: [c.name for c in field.options.choices]
        for field in table.schema(force=True).fields
        if field.type in ("singleSelect", "multipleSelects")
    }
    assert "Dormant" in choices["Status"] and "Partner" in choices["Tags"]


def test_typecast_converts_text_to_numbers_and_checkboxes(table: Table) -> None:
    created = table.create(lead(**{"ICP Score": "42", "Booked": "true"}), typecast=True)

    assert created["fields"]["ICP Score"] == 42
    assert created["fields"]["Booked"] is True


@pytest.mark.parametrize(
    ("fields", "error_type", "message_part"),
    [
        # A name not in the table.
        ({"Nickname": "x"}, "UNKNOWN_FIELD_NAME", 'Unknown field name: "Nickname"'),
        # Text for a number field, without typecast.
        ({"ICP Score": "high"}, "INVALID_VALUE_FOR_COLUMN", '"ICP Score"'),
        # A number for a text field.
        ({"Company": 12}, "INVALID_VALUE_FOR_COLUMN", '"Company"'),
        # A date that does not parse.
        ({"Booked At": "next tuesday"}, "INVALID_VALUE_FOR_COLUMN", '"Booked At"'),
        # Computed fields cannot be written.
        ({"Created": "2024-01-01T00:00:00.000Z"}, "INVALID_VALUE_FOR_COLUMN", "computed"),
        ({"Full Name": "x"}, "INVALID_VALUE_FOR_COLUMN", "computed"),
        ({"Lead Number": 7}, "INVALID_VALUE_FOR_COLUMN", "computed"),
    ],
)
def test_invalid_writes_are_422_naming_the_field(
    table: Table, fields: dict[str, object], error_type: str, message_part: str
) -> None:
    with pytest.raises(requests.HTTPError) as excinfo:
        table.create(fields)

    status, error = error_of(excinfo)
    assert status == 422
    assert error["type"] == error_type
    assert message_part in error["message"]


def test_datetime_and_attachment_values_are_normalized(table: Table) -> None:
    created = table.create(
        lead(
            **{
                "Booked At": "2024-03-01T10:00:00+02:00",
                "Attachments": [{"url": "https://files.example.com/cv.pdf"}],
            }
        )
    )

    assert created["fields"]["Booked At"] == "2024-03-01T08:00:00.000Z"
    [attachment] = created["fields"]["Attachments"]
    assert attachment["id"].startswith("att") and attachment["filename"] == "cv.pdf"


def test_edits_bump_last_modified_but_rewriting_same_values_does_not(
    emulator: Emulator, table: Table
) -> None:
    [record_id] = emulator.seed_records(BASE, TABLE, [lead()], created_time="2024-01-01T00:00:00Z")
    emulator.update_record_fields(
        BASE, TABLE, record_id, {"Notes": "called"}, modified_time="2024-01-02T00:00:00Z"
    )

    table.update(record_id, {"Notes": "called"})  # same value: not a change

    assert table.get(record_id)["fields"]["Last Modified"] == "2024-01-02T00:00:00.000Z"


def test_formula_fields_show_error_and_special_values(tmp_path: Path) -> None:
    schema = {
        "bases": [
            {
                "id": "appFormulas000001",
                "name": "Formulas",
                "tables": [
                    {
                        "id": "tblFormulas000001",
                        "name": "Calc",
                        "primaryFieldId": "fldA",
                        "fields": [
                            {"id": "fldA", "name": "A", "type": "number"},
                            {"id": "fldB", "name": "B", "type": "number"},
                            {"id": "fldR", "name": "Ratio", "type": "formula",
                             "options": {"formula": "{A}/{B}"}},
                            {"id": "fldE", "name": "Err", "type": "formula",
                             "options": {"formula": "VALUE('x') & ERROR()"}},
                        ],
                    }
                ],
            }
        ]
    }  # fmt: skip
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))

    with run_emulator(schema_path=path) as emulator:
        calc = Api(emulator.token, endpoint_url=emulator.url).table("appFormulas000001", "Calc")
        nan, inf, half = calc.batch_create([{"A": 0, "B": 0}, {"A": 1, "B": 0}, {"A": 1, "B": 2}])

    assert nan["fields"]["Ratio"] == {"specialValue": "NaN"}
    assert inf["fields"]["Ratio"] == {"specialValue": "Infinity"}
    assert half["fields"]["Ratio"] == 0.5
    assert half["fields"]["Err"] == {"error": "#ERROR!"}


def test_upsert_creates_updates_and_refuses_ambiguous_matches(table: Table) -> None:
    table.batch_create([lead(Email="dup@example.com"), lead(Email="dup@example.com")])
    existing = table.create(lead(Email="one@example.com"))

    result = table.batch_upsert(
        [
            {"fields": {"Email": "one@example.com", "Notes": "updated"}},
            {"fields": {"Email": "new@example.com", "Notes": "created"}},
        ],
        key_fields=["Email"],
    )
    assert result["updatedRecords"] == [existing["id"]]
    assert len(result["createdRecords"]) == 1
    assert table.get(existing["id"])["fields"]["Notes"] == "updated"

    with pytest.raises(requests.HTTPError) as excinfo:
        table.batch_upsert([{"fields": {"Email": "dup@example.com"}}], key_fields=["Email"])
    assert error_of(excinfo)[0] == 422


def test_batch_delete_by_query_parameters(table: Table) -> None:
    ids = [r["id"] for r in table.batch_create([lead() for _ in range(3)])]

    deleted = table.batch_delete(ids[:2])

    assert deleted == [{"id": i, "deleted": True} for i in ids[:2]]
    assert [r["id"] for r in table.all()] == ids[2:]


def test_errors_for_unknown_base_table_and_token(emulator: Emulator) -> None:
    api = Api(emulator.token, endpoint_url=emulator.url, retry_strategy=None)
    with pytest.raises(requests.HTTPError) as excinfo:
        api.table("appDoesNotExist01", TABLE).all()
    assert excinfo.value.response.status_code == 403

    with pytest.raises(requests.HTTPError) as excinfo:
        api.table(BASE, "Contacts").all()
    status, error = error_of(excinfo)
    assert (status, error["type"]) == (404, "TABLE_NOT_FOUND")

    intruder = Api("wrong-token", endpoint_url=emulator.url, retry_strategy=None)
    with pytest.raises(requests.HTTPError) as excinfo:
        intruder.table(BASE, TABLE).all()
    status, error = error_of(excinfo)
    assert (status, error["type"]) == (401, "AUTHENTICATION_REQUIRED")


def test_metadata_api_parses_with_pyairtable_models(emulator: Emulator) -> None:
    api = Api(emulator.token, endpoint_url=emulator.url)

    [base] = api.bases()
    schema = base.schema()

    assert base.id == BASE
    leads = schema.table("Leads")
    assert leads.id == "tblLeads000000001"
    assert leads.primary_field_id == "fld84add5b2952787"
    assert leads.field("Status").type == "singleSelect"
    assert len(leads.fields) == 31
