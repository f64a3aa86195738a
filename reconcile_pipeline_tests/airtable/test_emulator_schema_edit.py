"""Schema edits at run time (what someone editing the base in Airtable's UI does): renaming
tables and fields, deleting and retyping fields, seen through the real pyairtable client.

Ids never change: requests by id keep working across renames, names take effect at once in
the metadata API, in record responses and in formulas.
"""

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from pyairtable import Api, Table
from pyairtable import formulas as F

from reconcile_pipeline.emulator import Emulator, EmulatorAdmin
from reconcile_pipeline_tests.airtable.conftest import BASE, TABLE, lead

TABLE_ID = "tblLeads000000001"
FIRST_NAME_ID = "fldb6ea992aab4668"
EMAIL_ID = "fld84add5b2952787"
NOTES_ID = "fld70440046a3dc2e"
FULL_NAME_ID = "fld64346b483c0adc"


@pytest.fixture
def admin(emulator: Emulator) -> Iterator[EmulatorAdmin]:
    client = EmulatorAdmin(emulator.url)
    yield client
    client.close()


@pytest.fixture
def api(emulator: Emulator) -> Api:
    return Api(emulator.token, endpoint_url=emulator.url, retry_strategy=None)


def meta_tables(api: Api) -> list[dict[str, Any]]:
    """``GET /v0/meta/bases/{base}/tables``, uncached."""
    return api.get(api.build_url(f"meta/bases/{BASE}/tables"))["tables"]


def meta_field(api: Api, field_id: str) -> dict[str, Any]:
    [table] = [t for t in meta_tables(api) if t["id"] == TABLE_ID]
    [field] = [f for f in table["fields"] if f["id"] == field_id]
    return field


def error_of(excinfo: pytest.ExceptionInfo[requests.HTTPError]) -> tuple[int, Any]:
    response = excinfo.value.response
    return response.status_code, response.json()["error"]


def test_renamed_field_keeps_its_id_and_answers_by_its_new_name(
    admin: EmulatorAdmin, api: Api, table: Table
) -> None:
    record_id = table.create(lead())["id"]

    meta = admin.rename_field(BASE, TABLE, "First Name", "Given Name")
    assert (meta["id"], meta["name"]) == (FIRST_NAME_ID, "Given Name")

    assert meta_field(api, FIRST_NAME_ID)["name"] == "Given Name"
    names = [f.name for f in api.table(BASE, TABLE).schema(force=True).fields]
    assert "Given Name" in names and "First Name" not in names

    for record in (table.get(record_id), table.all()[0], table.first(formula="1")):
        assert record is not None
        assert record["fields"]["Given Name"] == "Ada"
        assert "First Name" not in record["fields"]
    # The formula field follows the rename, in its value and in its metadata text.
    assert table.get(record_id)["fields"]["Full Name"] == "Ada Lovelace"
    assert "{Given Name}" in meta_field(api, FULL_NAME_ID)["options"]["formula"]

    # By id, nothing changed.
    assert table.get(record_id, use_field_ids=True)["fields"][FIRST_NAME_ID] == "Ada"
    assert table.all(use_field_ids=True)[0]["fields"][FIRST_NAME_ID] == "Ada"
    body = {"returnFieldsByFieldId": True, "fields": [FIRST_NAME_ID]}
    posted = table.api.post(table.urls.records_post, json=body)["records"]
    assert posted[0]["fields"] == {FIRST_NAME_ID: "Ada"}
    updated = table.update(record_id, {FIRST_NAME_ID: "Augusta"}, use_field_ids=True)
    assert updated["fields"][FIRST_NAME_ID] == "Augusta"
    assert table.all(sort=[FIRST_NAME_ID], fields=[FIRST_NAME_ID])[0]["fields"] == {
        "Given Name": "Augusta"
    }

    # The new name works in writes and formulas; the old one is unknown, as in Airtable.
    assert table.update(record_id, {"Given Name": "Ada"})["fields"]["Given Name"] == "Ada"
    assert [r["id"] for r in table.all(formula=F.EQ(F.Field("Given Name"), "Ada"))] == [record_id]
    with pytest.raises(requests.HTTPError) as excinfo:
        table.update(record_id, {"First Name": "Ada"})
    assert error_of(excinfo)[1]["type"] == "UNKNOWN_FIELD_NAME"
    with pytest.raises(requests.HTTPError) as excinfo:
        table.all(formula=F.EQ(F.Field("First Name"), "Ada"))
    assert error_of(excinfo)[1]["type"] == "INVALID_FILTER_BY_FORMULA"


def test_field_renamed_by_id_twice_and_back(emulator: Emulator, api: Api, table: Table) -> None:
    record_id = table.create(lead())["id"]
    emulator.rename_field(BASE, TABLE_ID, FIRST_NAME_ID, "Vorname")
    emulator.rename_field(BASE, TABLE, "Vorname", "Prénom }{ 'x'")
    assert table.get(record_id)["fields"]["Prénom }{ 'x'"] == "Ada"
    assert table.get(record_id)["fields"]["Full Name"] == "Ada Lovelace"
    emulator.rename_field(BASE, TABLE, FIRST_NAME_ID, "First Name")
    assert meta_field(api, FULL_NAME_ID)["options"]["formula"] == (
        "TRIM({First Name} & ' ' & {Last Name})"
    )
    assert table.get(record_id)["fields"]["First Name"] == "Ada"


def test_renames_reject_duplicates_and_blank_names(admin: EmulatorAdmin) -> None:
    for call in (
        lambda: admin.rename_field(BASE, TABLE, "First Name", "last name"),
        lambda: admin.rename_field(BASE, TABLE, "First Name", "  "),
        lambda: admin.rename_field(BASE, TABLE, "No Such Field", "X"),
        lambda: admin.rename_table(BASE, TABLE, ""),
    ):
        with pytest.raises(requests.HTTPError) as excinfo:
            call()
        assert excinfo.value.response.status_code == 422
    # Renaming to its own name (or a case variant of it) is fine.
    assert admin.rename_field(BASE, TABLE, "Email", "EMAIL")["name"] == "EMAIL"


def test_renamed_table_keeps_its_id_and_answers_by_its_new_name(
    admin: EmulatorAdmin, api: Api, table: Table
) -> None:
    record_id = table.create(lead())["id"]

    meta = admin.rename_table(BASE, TABLE, "Prospects")
    assert (meta["id"], meta["name"]) == (TABLE_ID, "Prospects")
    assert (TABLE_ID, "Prospects") in [(t["id"], t["name"]) for t in meta_tables(api)]

    assert api.table(BASE, "Prospects").get(record_id)["fields"]["Email"] == "ada@example.com"
    assert [r["id"] for r in api.table(BASE, TABLE_ID).all()] == [record_id]
    with pytest.raises(requests.HTTPError) as excinfo:
        table.all()  # still addressed by the old name
    message = f"Could not find table {TABLE} in application {BASE}"
    assert error_of(excinfo) == (404, {"type": "TABLE_NOT_FOUND", "message": message})
    # pyairtable resolves a table name through the metadata API too.
    assert api.base(BASE).table("Prospects").schema().id == TABLE_ID


def test_deleted_field_disappears_from_metadata_records_and_writes(
    emulator: Emulator, admin: EmulatorAdmin, api: Api, table: Table
) -> None:
    record_id = table.create(lead(Notes="keep?"))["id"]

    assert admin.delete_field(BASE, TABLE, "Notes") == {"id": NOTES_ID, "deleted": True}
    [meta] = [t for t in meta_tables(api) if t["id"] == TABLE_ID]
    assert NOTES_ID not in {f["id"] for f in meta["fields"]}
    assert "Notes" not in table.get(record_id)["fields"]
    with pytest.raises(requests.HTTPError) as excinfo:
        table.update(record_id, {"Notes": "x"})
    assert error_of(excinfo)[1]["type"] == "UNKNOWN_FIELD_NAME"
    with pytest.raises(requests.HTTPError) as excinfo:
        admin.delete_field(BASE, TABLE, EMAIL_ID)  # the primary field
    assert excinfo.value.response.status_code == 422
    assert all("Notes" not in r["fields"] for r in emulator.all_records(BASE, TABLE))


def test_deleting_a_field_a_formula_uses_makes_the_formula_an_error(
    emulator: Emulator, api: Api, table: Table
) -> None:
    record_id = table.create(lead())["id"]
    emulator.delete_field(BASE, TABLE, "Last Name")
    assert table.get(record_id)["fields"]["Full Name"] == {"error": "#ERROR!"}
    assert meta_field(api, FULL_NAME_ID)["options"]["isValid"] is False


def test_retyped_fields_convert_their_values(admin: EmulatorAdmin, api: Api, table: Table) -> None:
    ids = [
        table.create(lead(Company="Acme", **{"Booked At": "2024-03-04T05:06:07Z"}))["id"],
        table.create(lead(Email="b@example.com", Company="Initech", **{"ICP Score": 7}))["id"],
    ]

    meta = admin.retype_field(BASE, TABLE, "Company", "singleSelect")
    assert meta["type"] == "singleSelect"
    assert [c["name"] for c in meta["options"]["choices"]] == ["Acme", "Initech"]
    assert meta_field(api, meta["id"]) == meta
    assert table.get(ids[1])["fields"]["Company"] == "Initech"
    with pytest.raises(requests.HTTPError) as excinfo:
        table.update(ids[0], {"Company": "Globex"})  # now a select without that option
    assert error_of(excinfo)[1]["type"] == "INVALID_MULTIPLE_CHOICE_OPTIONS"

    admin.retype_field(BASE, TABLE, "ICP Score", "singleLineText")
    assert [table.get(i)["fields"]["ICP Score"] for i in ids] == ["80", "7"]
    admin.retype_field(BASE, TABLE, "Booked At", "date", {"dateFormat": {"name": "iso"}})
    assert table.get(ids[0])["fields"]["Booked At"] == "2024-03-04"
    admin.retype_field(BASE, TABLE, "Status", "number")  # "New" is no number: cleared
    assert "Status" not in table.get(ids[0])["fields"]
    admin.retype_field(BASE, TABLE, "Title", "formula", {"formula": "UPPER({Company})"})
    assert table.get(ids[0])["fields"]["Title"] == "ACME"
    # pyairtable can still parse the edited schema.
    schema = api.table(BASE, TABLE).schema(force=True)
    assert schema.field("Booked At").type == "date"


def test_raw_values_stay_when_their_field_is_renamed_or_retyped(
    emulator: Emulator, table: Table
) -> None:
    [record_id] = emulator.seed_raw_records(BASE, TABLE, [{"Email": "a@b.c", "Notes": {"x": 1}}])
    emulator.rename_field(BASE, TABLE, "Notes", "Remarks")
    emulator.retype_field(BASE, TABLE, "Remarks", "number")
    assert table.get(record_id)["fields"]["Remarks"] == {"x": 1}
