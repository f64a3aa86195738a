"""Airtable's per-token limit: 50 requests/s per token owner across all bases, with the 30 s block.

Everything goes through real HTTP (pyairtable and raw requests). The emulator's clock is frozen
(every request arrives at the same instant, so "within one second" holds on any machine) and
advanced instead of sleeping. In the emulator a token is its own owner; the request log and
the admin API show a token's fingerprint only.
"""

import json
from collections.abc import Iterator

import pytest
import requests
from pyairtable import Api

from reconcile_pipeline.airtable.secrets import secret_forms
from reconcile_pipeline.emulator import (
    DEFAULT_TOKEN_RATE_LIMIT,
    Emulator,
    EmulatorAdmin,
    run_emulator,
    token_fingerprint,
)
from reconcile_pipeline.emulator.cli import build_parser
from reconcile_pipeline_tests.airtable.conftest import BASE, TABLE, lead

TOKEN_A = "patTokenLimitAaaaa.0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd"
TOKEN_B = "patTokenLimitBbbbb.fedcba9876543210fedcba9876543210fedcba9876543210fedcba98765432"
RATE_LIMITED = {
    "errors": [
        {"error": "RATE_LIMIT_REACHED", "message": "Rate limit exceeded. Please try again later"}
    ]
}


def bases(count: int) -> list[str]:
    """The demo base and ``count - 1`` copies of it (ids ``appTokenLimit0NN``)."""
    return [BASE] + [f"appTokenLimit{n:04d}" for n in range(1, count)]


@pytest.fixture
def limited() -> Iterator[Emulator]:
    """Airtable's limits (5/s per base, 50/s per token, 30 s blocks), two tokens, 12 bases,
    the clock frozen."""
    with run_emulator(token=TOKEN_A, rate_limit=5, extra_tokens=[TOKEN_B]) as emulator:
        admin = EmulatorAdmin(emulator.url)
        for base_id in bases(12)[1:]:
            admin.add_base(base_id, like=BASE)
        admin.freeze_clock()
        admin.close()
        yield emulator


@pytest.fixture
def session_a(limited: Emulator) -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {TOKEN_A}"
        yield session


def list_url(emulator: Emulator, base_id: str) -> str:
    return f"{emulator.url}/v0/{base_id}/{TABLE}?pageSize=1"


def burst(session: requests.Session, emulator: Emulator, base_ids: list[str], n: int) -> list[int]:
    """``n`` list requests, round-robin over ``base_ids``; their status codes."""
    return [
        session.get(list_url(emulator, base_ids[i % len(base_ids)])).status_code for i in range(n)
    ]


def first_of_each(token: str, emulator: Emulator, base_ids: list[str]) -> list[int]:
    """One pyairtable read (no retries) per base; the status codes (200 when it worked)."""
    api = Api(token, endpoint_url=emulator.url, retry_strategy=None)
    codes = []
    for base_id in base_ids:
        try:
            api.table(base_id, TABLE).first()
            codes.append(200)
        except requests.HTTPError as error:
            codes.append(error.response.status_code)
    return codes


def test_defaults_follow_airtable() -> None:
    with run_emulator(rate_limit=5) as on, run_emulator(rate_limit=0) as off:
        assert on.rate_limit_state()["token_rate"] == DEFAULT_TOKEN_RATE_LIMIT == 50
        assert on.rate_limit_state()["penalty_seconds"] == 30
        assert off.rate_limit_state()["token_rate"] == 0  # no Airtable limits at all
    args = build_parser().parse_args([])
    assert (args.rate_limit, args.token_rate_limit, args.penalty_seconds) == (5, 50, 30)
    assert build_parser().parse_args(["--token-rate-limit", "0"]).token_rate_limit == 0


def test_the_51st_request_in_a_second_is_refused_for_that_token_only(
    limited: Emulator, session_a: requests.Session
) -> None:
    limited.configure_rate_limit(rate=100)  # three bases may take 51 requests between them
    three = bases(3)

    first_fifty = burst(session_a, limited, three, 50)
    refused = session_a.get(list_url(limited, three[2]))
    other_token = first_of_each(TOKEN_B, limited, three * 3)
    # The block covers the owner's every base (one it never used) and the metadata API.
    elsewhere = session_a.get(list_url(limited, bases(12)[11]))
    meta = session_a.get(f"{limited.url}/v0/meta/bases")

    assert first_fifty == [200] * 50
    assert refused.status_code == 429
    assert refused.json() == RATE_LIMITED
    assert other_token == [200] * 9
    assert (elsewhere.status_code, meta.status_code) == (429, 429)
    log = limited.request_log()
    assert log["by_owner"] == {
        token_fingerprint(TOKEN_A): {"requests": 53, "rate_limited": 3},
        token_fingerprint(TOKEN_B): {"requests": 9, "rate_limited": 0},
    }
    assert log["by_base"][three[2]] == {"requests": 20, "rate_limited": 1}
    assert [e["limit"] for e in log["entries"] if e["status"] == 429] == ["token"] * 3
    state = limited.rate_limit_state()
    assert list(state["blocked_owners"]) == [token_fingerprint(TOKEN_A)]
    assert state["blocked_bases"] == {}


def test_the_token_limit_spans_bases_each_under_its_own_limit(
    limited: Emulator, session_a: requests.Session
) -> None:
    """At Airtable's 5/s per base, 50 requests fill ten bases; the 51st goes to an eleventh
    base that has seen nothing, so only the token's limit can refuse it."""
    eleven = bases(11)

    fifty = burst(session_a, limited, eleven[:10], 50)
    refused = session_a.get(list_url(limited, eleven[10]))
    other_token = first_of_each(TOKEN_B, limited, [eleven[10]] * 5)

    assert fifty == [200] * 50
    assert refused.status_code == 429
    assert other_token == [200] * 5
    assert limited.request_log()["entries"][50]["limit"] == "token"
    assert limited.request_log()["by_base"][eleven[10]] == {"requests": 6, "rate_limited": 1}


def test_a_blocked_token_waits_out_thirty_seconds(
    limited: Emulator, session_a: requests.Session
) -> None:
    limited.configure_rate_limit(rate=100)
    three = bases(3)
    admin = EmulatorAdmin(limited.url)

    assert burst(session_a, limited, three, 51)[-1] == 429
    admin.advance_clock(29.9)
    # Still blocked, on every base; these requests do not extend the block.
    assert burst(session_a, limited, bases(12), 12) == [429] * 12
    assert first_of_each(TOKEN_B, limited, three) == [200] * 3
    admin.advance_clock(0.2)
    after = first_of_each(TOKEN_A, limited, bases(12))

    assert after == [200] * 12
    assert admin.request_log(entries=False)["by_owner"][token_fingerprint(TOKEN_A)] == {
        "requests": 75,
        "rate_limited": 13,
    }
    admin.close()


def test_under_the_limit_nothing_is_refused(limited: Emulator, session_a: requests.Session) -> None:
    """50 requests in a second, five per base; a second later 50 more: the window slides."""
    ten = bases(10)

    codes = burst(session_a, limited, ten, 50)
    limited.advance_clock(1.0)
    codes += burst(session_a, limited, ten, 50)
    codes += first_of_each(TOKEN_B, limited, bases(12)[10:])

    assert codes == [200] * 102
    log = limited.request_log(entries=False)
    assert log["by_owner"][token_fingerprint(TOKEN_A)] == {"requests": 100, "rate_limited": 0}
    assert log["entries"] == []


def test_the_token_limit_is_configurable_and_off_able(
    limited: Emulator, session_a: requests.Session
) -> None:
    admin = EmulatorAdmin(limited.url)
    twelve = bases(12)

    admin.configure_rate_limit(token_rate=0)
    off = burst(session_a, limited, twelve, 60)  # 5 per base: within the per-base limit
    limited.advance_clock(1.0)
    state = admin.configure_rate_limit(token_rate=3, penalty_seconds=2.0)
    three = burst(session_a, limited, twelve, 4)
    admin.advance_clock(2.0)
    recovered = burst(session_a, limited, twelve, 1)

    assert off == [200] * 60
    assert (state["rate"], state["token_rate"], state["penalty_seconds"]) == (5, 3, 2)
    assert three == [200, 200, 200, 429]
    assert recovered == [200]
    admin.close()


def test_several_tokens_may_share_an_owner_and_its_limit(
    limited: Emulator, session_a: requests.Session
) -> None:
    limited.configure_rate_limit(rate=100)
    shared_a = "fake-token-shared-owner-one"
    shared_b = "fake-token-shared-owner-two"
    added = [
        EmulatorAdmin(limited.url).add_token(t, owner="usrShared") for t in (shared_a, shared_b)
    ]
    three = bases(3)

    codes = first_of_each(shared_a, limited, three * 10) + first_of_each(
        shared_b, limited, three * 7
    )

    assert added == [
        {"token": token_fingerprint(shared_a), "owner": "usrShared"},
        {"token": token_fingerprint(shared_b), "owner": "usrShared"},
    ]
    assert codes == [200] * 50 + [429]
    assert limited.request_log()["by_owner"]["usrShared"] == {"requests": 51, "rate_limited": 1}
    assert first_of_each(TOKEN_A, limited, three) == [200] * 3


def test_no_token_reaches_the_request_log_or_an_answer(
    limited: Emulator, session_a: requests.Session
) -> None:
    limited.configure_rate_limit(rate=100)
    stranger = "patNotKnownHere.aaaabbbbccccddddeeeeffff0000111122223333"
    answers = [session_a.get(list_url(limited, BASE)) for _ in range(51)]
    answers.append(session_a.get(f"{limited.url}/v0/{BASE}/{TABLE}", params={"api_key": TOKEN_A}))
    answers.append(
        requests.get(
            f"{limited.url}/v0/{BASE}/{TABLE}/{TOKEN_B}",
            headers={"Authorization": f"Bearer {TOKEN_B}"},
        )
    )
    answers.append(
        requests.get(
            list_url(limited, BASE) + f"&note={stranger}",
            headers={"Authorization": f"Bearer {stranger}"},
        )
    )
    admin = EmulatorAdmin(limited.url)
    one_more = "patOneMoreToken.0123456789abcdef0123456789abcdef"
    added = admin.add_token(one_more)

    log_text = json.dumps(admin.request_log())
    texts = [log_text, json.dumps(added), *(a.text for a in answers)]
    forms = secret_forms([TOKEN_A, TOKEN_B, stranger, one_more])
    assert [s for s in forms for text in texts if s in text] == []
    assert [a.status_code for a in answers[49:]] == [200, 429, 429, 404, 401]
    entries = admin.request_log()["entries"]
    assert entries[-1]["token"] == token_fingerprint(stranger)
    assert entries[-1]["owner"] is None
    assert entries[-2]["token"] == entries[-2]["owner"] == token_fingerprint(TOKEN_B)
    assert "***" in entries[-3]["query"] and "***" in entries[-2]["target"]
    admin.close()


def test_advancing_the_clock_expires_list_offsets(limited: Emulator) -> None:
    limited.configure_rate_limit(rate=0, token_rate=0)
    limited.seed_records(BASE, TABLE, [lead(Email=f"{n}@example.com") for n in range(3)])
    limited.set_offset_ttl(60)
    table = Api(TOKEN_A, endpoint_url=limited.url, retry_strategy=None).table(BASE, TABLE)
    pages = table.iterate(page_size=1)
    next(pages)

    limited.advance_clock(61)

    with pytest.raises(requests.HTTPError) as raised:
        next(pages)
    assert "LIST_RECORDS_ITERATOR_NOT_AVAILABLE" in raised.value.response.text


def test_many_bases_are_added_and_seeded_through_the_admin_client(limited: Emulator) -> None:
    admin = EmulatorAdmin(limited.url)
    base_ids = [f"appScaleBench{n:04d}" for n in range(20)]
    for n, base_id in enumerate(base_ids):
        admin.add_base(base_id, like=BASE)
        admin.seed_records(
            base_id, TABLE, [lead(Email=f"c{n}-{i}@example.com") for i in range(200)]
        )
    limited.configure_rate_limit(rate=0, token_rate=0)
    api = Api(TOKEN_B, endpoint_url=limited.url, retry_strategy=None)

    counts = {base_id: len(api.table(base_id, TABLE).all()) for base_id in base_ids}
    served = {b.id for b in api.bases()}
    copy = api.base(base_ids[0]).schema()
    demo = api.base(BASE).schema()

    assert counts == dict.fromkeys(base_ids, 200)
    assert served >= {*base_ids, BASE}
    assert api.table(BASE, TABLE).all() == []  # the template keeps no copy's records
    # Same tables, names and field ids; fresh table ids; links point inside the copy.
    assert [t.name for t in copy.tables] == [t.name for t in demo.tables]
    assert not {t.id for t in copy.tables} & {t.id for t in demo.tables}
    leads = copy.table(TABLE)
    assert [f.id for f in leads.fields] == [f.id for f in demo.table(TABLE).fields]
    links = [f for f in leads.fields if f.type == "multipleRecordLinks"]
    assert links and {f.options.linked_table_id for f in links} <= {t.id for t in copy.tables}
    with pytest.raises(requests.HTTPError):
        admin.add_base(base_ids[0], like=BASE)  # taken
    admin.close()
