"""`AirtableClient` over real HTTP: windows, scans, batched reads and writes, and failures.

Behaviour under test: a record never edited since creation is found by its creation time;
an expired list offset restarts the scan without duplicates; reads by id go 100 at a time
by POST listRecords; writes are at most 10 a request; 429 (and the block after it) and 5xx
are retried with backoff while a POST create is never re-sent after a 5xx and no write is
re-sent after its response was lost; errors carry Airtable's type and never the token.
"""

from datetime import UTC, datetime, timedelta

import pytest

from reconcile_pipeline.airtable.client import AirtableClient
from reconcile_pipeline.airtable.errors import (
    AirtableConfigError,
    AirtableMappingError,
    AirtableRequestError,
)
from reconcile_pipeline.emulator import Emulator
from reconcile_pipeline_tests.airtable.conftest import BASE, TABLE, ClientFactory, lead

START = datetime(2024, 6, 1, tzinfo=UTC)
END = START + timedelta(minutes=20)


def logged(emulator: Emulator) -> list[tuple[str, str, int]]:
    return [(e["method"], e["path"], e["status"]) for e in emulator.request_log()["entries"]]


def flatten(pages: object) -> list[dict]:
    return [record for page in pages for record in page]


def test_window_finds_new_and_edited_records_but_not_others(
    emulator: Emulator, make_client: ClientFactory
) -> None:
    inside, before = START + timedelta(minutes=5), START - timedelta(hours=1)
    new = emulator.seed_records(BASE, TABLE, [lead()] * 3, created_time=inside)
    edited, edited_later, untouched = emulator.seed_records(
        BASE, TABLE, [lead()] * 3, created_time=before
    )
    emulator.update_record_fields(BASE, TABLE, edited, {"Notes": "x"}, modified_time=inside)
    emulator.update_record_fields(BASE, TABLE, edited_later, {"Notes": "y"}, modified_time=END)
    [created_inside_edited_after] = emulator.seed_records(
        BASE, TABLE, [lead()], created_time=inside, modified_time=END + timedelta(minutes=1)
    )

    found = {r["id"] for r in flatten(make_client().iter_modified(START, END))}

    # New records were never edited: only their creation time puts them in the window.
    assert found == {*new, edited}
    assert untouched not in found and created_inside_edited_after not in found


def test_window_pages_hold_100_records(emulator: Emulator, make_client: ClientFactory) -> None:
    emulator.seed_records(BASE, TABLE, [lead()] * 250, created_time=START)

    pages = list(make_client().iter_modified(START, END, fields=["Email"]))

    assert [len(page) for page in pages] == [100, 100, 50]
    assert {tuple(r["fields"]) for r in flatten(pages)} == {("Email",)}


def test_naive_datetimes_are_refused_before_any_request(make_client: ClientFactory) -> None:
    client = make_client()

    with pytest.raises(ValueError, match="timezone-aware"):
        next(client.iter_modified(datetime(2024, 6, 1), END))

    assert client.requests_sent == 0


def test_expired_offset_restarts_the_scan_without_duplicates(
    emulator: Emulator, make_client: ClientFactory
) -> None:
    ids = emulator.seed_records(BASE, TABLE, [lead()] * 250, created_time=START)
    pages = make_client().iter_modified(START, END)

    first = next(pages)
    emulator.expire_offsets()
    rest = flatten(pages)

    returned = [r["id"] for r in first + rest]
    assert sorted(returned) == sorted(ids)  # every record exactly once
    assert ("GET", "/v0/{base}/{table}", 422) in logged(emulator)


def test_scan_restarts_are_bounded(emulator: Emulator, make_client: ClientFactory) -> None:
    emulator.seed_records(BASE, TABLE, [lead()] * 150)
    emulator.set_offset_ttl(0.0)  # every offset is already expired when used

    with pytest.raises(AirtableRequestError) as excinfo:
        flatten(make_client(max_scan_restarts=2).iter_all())

    assert excinfo.value.error_type == "LIST_RECORDS_ITERATOR_NOT_AVAILABLE"
    assert [s for _, _, s in logged(emulator)].count(422) == 3


def test_get_records_reads_100_ids_per_post(emulator: Emulator, make_client: ClientFactory) -> None:
    ids = emulator.seed_records(BASE, TABLE, [lead(Notes=str(i)) for i in range(160)])
    emulator.delete_record(BASE, TABLE, ids[7])
    wanted = ids[:150] + ["recMissing0000000"]

    found = make_client().get_records(wanted, fields=["Notes"])

    assert sorted(r["id"] for r in found) == sorted(set(ids[:150]) - {ids[7]})
    assert all(set(r["fields"]) == {"Notes"} for r in found)
    assert logged(emulator) == [("POST", "/v0/{base}/{table}/listRecords", 200)] * 2


def test_list_record_ids_fetches_only_the_primary_field(
    emulator: Emulator, make_client: ClientFactory
) -> None:
    ids = emulator.seed_records(BASE, TABLE, [lead()] * 230)

    assert make_client().list_record_ids() == ids

    lists = [e for e in emulator.request_log()["entries"] if e["path"] == "/v0/{base}/{table}"]
    assert len(lists) == 3
    assert all("fields%5B%5D=fld84add5b2952787" in e["query"] for e in lists)


def test_update_records_patches_at_most_ten(emulator: Emulator, make_client: ClientFactory) -> None:
    ids = emulator.seed_records(BASE, TABLE, [lead()] * 11)
    client = make_client()

    with pytest.raises(ValueError, match="At most 10"):
        client.update_records([{"id": i, "fields": {"Notes": "n"}} for i in ids])
    updated = client.update_records([{"id": i, "fields": {"Notes": "n"}} for i in ids[:10]])

    assert [r["fields"]["Notes"] for r in updated] == ["n"] * 10
    assert logged(emulator) == [("PATCH", "/v0/{base}/{table}", 200)]


def test_rejected_values_raise_unprocessable_without_retry(
    emulator: Emulator, make_client: ClientFactory
) -> None:
    [record_id] = emulator.seed_records(BASE, TABLE, [lead()])

    with pytest.raises(AirtableRequestError) as excinfo:
        make_client().update_records([{"id": record_id, "fields": {"ICP Score": "high"}}])

    error = excinfo.value
    assert error.is_unprocessable and error.status_code == 422
    assert error.error_type == "INVALID_VALUE_FOR_COLUMN" and "ICP Score" in error.message
    assert len(logged(emulator)) == 1


def test_rate_limit_block_is_waited_out_without_duplicate_creates(
    emulator: Emulator, make_client: ClientFactory
) -> None:
    emulator.set_faults(fail_next=1, fail_status=429)  # starts the 1-second penalty block
    client = make_client()

    [created] = client.create_records([lead(Email="once@example.com")])

    posts = [s for m, _, s in logged(emulator) if m == "POST"]
    assert posts[0] == 429 and posts[-1] == 200 and posts.count(200) == 1
    blocked = emulator.request_log()["entries"]
    assert blocked[-1]["monotonic"] - blocked[0]["monotonic"] >= 1.0  # outlasted the block
    assert [r["id"] for r in emulator.all_records(BASE, TABLE)] == [created["id"]]
    assert client.requests_sent == len(posts)


def test_server_errors_are_retried_for_updates_and_reads(
    emulator: Emulator, make_client: ClientFactory
) -> None:
    [record_id] = emulator.seed_records(BASE, TABLE, [lead()])
    client = make_client()

    emulator.set_faults(fail_next=2, fail_status=503)
    client.update_records([{"id": record_id, "fields": {"Notes": "retried"}}])
    emulator.set_faults(fail_next=1, fail_status=502)
    [found] = client.get_records([record_id])

    assert found["fields"]["Notes"] == "retried"
    assert [s for _, _, s in logged(emulator)] == [503, 503, 200, 502, 200]
    assert client.requests_sent == 5


def test_creates_are_not_resent_after_a_server_error(
    emulator: Emulator, make_client: ClientFactory
) -> None:
    emulator.set_faults(fail_next=1, fail_status=503)

    with pytest.raises(AirtableRequestError) as excinfo:
        make_client().create_records([lead()])

    assert excinfo.value.status_code == 503
    assert logged(emulator) == [("POST", "/v0/{base}/{table}", 503)]


def test_lost_response_raises_and_the_write_is_not_resent(
    emulator: Emulator, make_client: ClientFactory
) -> None:
    [record_id] = emulator.seed_records(BASE, TABLE, [lead()])
    emulator.set_faults(drop_next_writes=1)

    with pytest.raises(AirtableRequestError) as excinfo:
        make_client().update_records([{"id": record_id, "fields": {"Notes": "applied"}}])

    assert excinfo.value.outcome_unknown and excinfo.value.status_code is None
    [record] = emulator.all_records(BASE, TABLE)
    assert record["fields"]["Notes"] == "applied"
    assert logged(emulator) == [("PATCH", "/v0/{base}/{table}", 0)]


def test_wrong_token_says_what_to_set_and_never_shows_the_token(
    make_client: ClientFactory,
) -> None:
    secret = "patSECRETtoken.0123456789"
    client = make_client(token=secret)

    with pytest.raises(AirtableConfigError) as config_error:
        client.validate_fields({"Email": "email"})
    with pytest.raises(AirtableRequestError) as request_error:
        client.update_records([{"id": "recAAAAAAAAAAAAAA", "fields": {}}])

    assert "AIRTABLE_API_KEY" in str(config_error.value)
    assert request_error.value.status_code == 401
    assert request_error.value.error_type == "AUTHENTICATION_REQUIRED"
    for text in (str(config_error.value), str(request_error.value), repr(client)):
        assert secret not in text


def test_validate_fields_lists_every_problem_at_once(make_client: ClientFactory) -> None:
    client = make_client()
    client.validate_fields({"Email": "email", "Status": {"singleSelect", "singleLineText"}})

    with pytest.raises(AirtableMappingError) as excinfo:
        client.validate_fields(
            {"Email": "email", "ICP Score": "singleLineText", "Region": "singleSelect"}
        )

    message = str(excinfo.value)
    assert "Leads (tblLeads000000001)" in message and BASE in message
    assert "field 'ICP Score' is number, expected singleLineText" in message
    assert "missing field 'Region' (expected singleSelect)" in message
    assert len(excinfo.value.problems) == 2


@pytest.mark.parametrize(
    ("base_id", "table", "variable"),
    [("appNoSuchBase0001", TABLE, "base_id"), (BASE, "Contacts", "airtable_table")],
)
def test_unknown_base_or_table_says_what_to_set(
    make_client: ClientFactory, base_id: str, table: str, variable: str
) -> None:
    with pytest.raises(AirtableConfigError, match=variable):
        make_client(base_id=base_id, table=table).table_schema()


def test_client_repr_and_requests_count(emulator: Emulator) -> None:
    client = AirtableClient(emulator.token, BASE, TABLE, endpoint_url=emulator.url)

    list(client.iter_all())

    assert emulator.token not in repr(client)
    assert client.requests_sent == 1
    client.close()
