"""Rate limit, fault injection, the request log, admin endpoints and persistence.

Airtable allows 5 requests/s per base; the request over the limit gets 429 and the base is
then blocked (every request 429) for a penalty period. Faults are switched at run time:
deterministic ones (n-th request, next N requests, next N writes dropped after being applied)
and seeded random rates. Admin endpoints are neither authenticated, rate limited nor logged.
"""

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import requests
from pyairtable import Table

from reconcile_pipeline.emulator import Emulator, EmulatorAdmin, run_emulator
from reconcile_pipeline.emulator.tokens import fingerprint
from reconcile_pipeline_tests.airtable.conftest import BASE, TABLE, lead

LIST_URL = f"/v0/{BASE}/{TABLE}"


@pytest.fixture
def http(emulator: Emulator) -> Iterator[requests.Session]:
    """A raw keep-alive session with the emulator's token (no retries)."""
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {emulator.token}"
        yield session


def statuses(emulator: Emulator) -> list[int]:
    return [entry["status"] for entry in emulator.request_log()["entries"]]


def test_going_over_the_rate_limit_blocks_the_base_for_the_penalty() -> None:
    with run_emulator(rate_limit=5, penalty_seconds=1.0) as emulator, requests.Session() as s:
        s.headers["Authorization"] = f"Bearer {emulator.token}"
        burst = [s.get(emulator.url + LIST_URL) for _ in range(7)]
        meta = s.get(f"{emulator.url}/v0/meta/bases")  # not tied to a base: not limited

        assert [r.status_code for r in burst] == [200] * 5 + [429, 429]
        [error] = burst[5].json()["errors"]
        assert error["error"] == "RATE_LIMIT_REACHED"
        assert meta.status_code == 200
        blocked_since = emulator.request_log()["entries"][5]["monotonic"]
        # Every request during the block answers 429, then the base recovers.
        while True:
            response = s.get(emulator.url + LIST_URL)
            last = emulator.request_log()["entries"][-1]
            if response.status_code == 200:
                break
            assert last["monotonic"] - blocked_since < 1.0
        assert last["monotonic"] - blocked_since >= 1.0


def test_fail_nth_request_from_now(emulator: Emulator, http: requests.Session) -> None:
    emulator.set_faults(fail_nth={2: 503, 4: 500})

    codes = [http.get(emulator.url + LIST_URL).status_code for _ in range(5)]

    assert codes == [200, 503, 200, 500, 200]


def test_injected_429_starts_the_penalty_block(emulator: Emulator, http: requests.Session) -> None:
    emulator.configure_rate_limit(penalty_seconds=30.0)
    emulator.set_faults(fail_next=1, fail_status=429)

    codes = [http.get(emulator.url + LIST_URL).status_code for _ in range(3)]

    # Only the first was injected; the other two met the block it started.
    assert codes == [429, 429, 429]
    assert emulator.fault_state()["remaining"]["fail_next"] == 0
    emulator.configure_rate_limit()  # reconfiguring lifts the block
    assert http.get(emulator.url + LIST_URL).status_code == 200


def test_seeded_error_rates_repeat(emulator: Emulator, http: requests.Session) -> None:
    runs = []
    for _ in range(2):
        emulator.set_faults(error_rates={503: 0.3, 502: 0.2}, seed=7)
        runs.append([http.get(emulator.url + LIST_URL).status_code for _ in range(40)])

    assert runs[0] == runs[1]
    assert {200, 502, 503} == set(runs[0])


def test_dropped_write_is_applied_but_never_answered(emulator: Emulator, table: Table) -> None:
    record_id = table.create(lead(Notes="before"))["id"]
    emulator.set_faults(drop_next_writes=1)

    with pytest.raises(requests.ConnectionError):
        table.update(record_id, {"Notes": "after"})

    assert table.get(record_id)["fields"]["Notes"] == "after"
    dropped = [e for e in emulator.request_log()["entries"] if e["dropped"]]
    assert [(e["method"], e["path"], e["status"]) for e in dropped] == [
        ("PATCH", "/v0/{base}/{table}/{record}", 0)
    ]


def test_expired_offsets_answer_iterator_not_available(emulator: Emulator, table: Table) -> None:
    emulator.seed_records(BASE, TABLE, [lead() for _ in range(150)])
    pages = table.iterate(page_size=100)
    next(pages)

    assert emulator.expire_offsets() == 1
    with pytest.raises(requests.HTTPError) as excinfo:
        next(pages)

    error = excinfo.value.response.json()["error"]
    assert (excinfo.value.response.status_code, error["type"]) == (
        422,
        "LIST_RECORDS_ITERATOR_NOT_AVAILABLE",
    )


def test_offsets_expire_after_their_idle_lifetime(emulator: Emulator, table: Table) -> None:
    emulator.seed_records(BASE, TABLE, [lead() for _ in range(150)])
    emulator.set_offset_ttl(0.0)
    pages = table.iterate(page_size=100)
    next(pages)

    with pytest.raises(requests.HTTPError):
        next(pages)


def test_request_log_counts_by_path_template(
    emulator: Emulator, table: Table, http: requests.Session
) -> None:
    record_id = table.create(lead())["id"]
    table.get(record_id)
    table.all()
    http.get(emulator.url + LIST_URL, headers={"Authorization": "Bearer nope"})

    log = emulator.request_log()

    assert log["counts"] == {
        "POST /v0/{base}/{table}": 1,
        "GET /v0/{base}/{table}/{record}": 1,
        "GET /v0/{base}/{table}": 2,
    }
    assert [e["status"] for e in log["entries"]] == [200, 200, 200, 401]
    assert {e["base"] for e in log["entries"][:3]} == {BASE}
    assert all(e["time"] > 0 and e["monotonic"] > 0 for e in log["entries"])
    # Per owner: authenticated requests only; per base: every request to it.
    assert log["by_owner"] == {fingerprint(emulator.token): {"requests": 3, "rate_limited": 0}}
    assert log["by_base"] == {BASE: {"requests": 4, "rate_limited": 0}}
    emulator.reset_request_log()
    assert emulator.request_log() == {
        "total": 0, "counts": {}, "by_owner": {}, "by_base": {}, "entries": []
    }  # fmt: skip


def test_admin_endpoints_drive_a_separate_emulator(emulator: Emulator, table: Table) -> None:
    admin = EmulatorAdmin(emulator.url)
    admin.wait_until_ready()
    created = [datetime(2024, 1, day, tzinfo=UTC) for day in (1, 2)]

    ids = admin.seed_records(BASE, TABLE, [lead(), lead(Email="b@example.com")], created)
    admin.update_record_fields(BASE, TABLE, ids[0], {"Notes": "edited"}, "2024-01-03T00:00:00Z")
    admin.set_faults(fail_nth={1: 503})
    with pytest.raises(requests.HTTPError):
        table.all()
    records = admin.all_records(BASE, TABLE)
    admin.delete_record(BASE, TABLE, ids[1])

    assert [r["createdTime"] for r in records] == [
        "2024-01-01T00:00:00.000Z",
        "2024-01-02T00:00:00.000Z",
    ]
    assert records[0]["fields"]["Last Modified"] == "2024-01-03T00:00:00.000Z"
    assert "Last Modified" not in records[1]["fields"]
    assert admin.fault_state()["remaining"]["fail_nth"] == {}
    # Only the one API request is logged, not the admin calls.
    assert admin.request_log()["counts"] == {"GET /v0/{base}/{table}": 1}
    admin.reset_request_log()
    assert admin.request_log()["total"] == 0
    assert admin.clear_records(BASE, TABLE) == 1
    assert admin.all_records(BASE, TABLE) == []
    admin.close()


def test_data_file_keeps_records_across_restarts(tmp_path) -> None:
    data = tmp_path / "airtable.json"
    with run_emulator(data_path=data) as first:
        [record_id] = first.seed_records(BASE, TABLE, [lead()], created_time="2024-01-01T00:00Z")
        first.update_record_fields(
            BASE, TABLE, record_id, {"Status": "Nurture", "Booked At": "2024-02-01T09:30:00Z"},
            modified_time="2024-02-01T10:00:00Z", typecast=True,
        )  # fmt: skip
        before = first.all_records(BASE, TABLE)

    with run_emulator(data_path=data) as second:
        after = second.all_records(BASE, TABLE)
        [new_id] = second.seed_records(BASE, TABLE, [lead()])
        numbers = [r["fields"]["Lead Number"] for r in second.all_records(BASE, TABLE)]

    assert after == before
    assert after[0]["fields"]["Status"] == "Nurture"  # the typecast-added choice survived
    assert new_id != record_id and numbers == [1, 2]
