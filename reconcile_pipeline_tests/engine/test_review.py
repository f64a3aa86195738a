"""operations/review.py against real runs of the engine: quarantine listed, retried (the next
run looks at the record again, which an untouched record would otherwise never get) and
released; a record's history newest first; records found by e-mail and phone."""

import dataclasses
import datetime as dt

import pytest
from sqlalchemy import text

from reconcile_pipeline.engine.mapping import TableMapping
from reconcile_pipeline.engine.repository import Repository
from reconcile_pipeline.operations import review
from reconcile_pipeline_tests.engine.conftest import BASE, TABLE, Reconciler
from reconcile_pipeline_tests.mappings import LEADS_MAPPING

LONG_COMPANY = "Initech " * 40  # 320 characters: the mapping holds at most 255
A_DAY_AGO = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)


def widened(column: str, max_length: int) -> TableMapping:
    """The same table with one field's max_length raised (the operator fixed the mapping)."""
    fields = tuple(
        dataclasses.replace(f, max_length=max_length) if f.column == column else f
        for f in LEADS_MAPPING.fields
    )
    return dataclasses.replace(LEADS_MAPPING, fields=fields)


def holds(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                text(
                    "SELECT airtable_record_id, field, direction, attempts, released_at IS NULL "
                    "FROM reconcile.quarantine ORDER BY id"
                )
            ).all()
        ]


def lead(engine, record_id: str, column: str):
    with engine.connect() as conn:
        return conn.execute(
            text(f"SELECT {column} FROM public.leads WHERE airtable_record_id = :r"),
            {"r": record_id},
        ).scalar_one()


@pytest.fixture
def held_company(emulator, reconcile, engine) -> str:
    """A record synced a day after its last Airtable edit, whose Company is too long."""
    [rid] = emulator.seed_records(
        BASE,
        TABLE,
        [{"Email": "ada@initech.test", "Phone": "+44 20 7946 0018", "Company": LONG_COMPANY}],
        created_time=A_DAY_AGO,
        modified_time=A_DAY_AGO,
    )
    reconcile()  # no high-water mark yet: a full pull
    assert holds(engine) == [(rid, "company", "pull", 1, True)]
    return rid


def test_list_shows_open_holds_with_reason_field_and_raw_value(engine, held_company):
    [hold] = review.list_quarantine(engine)

    assert (hold.table_key, hold.record_id, hold.field, hold.direction) == (
        "leads",
        held_company,
        "company",
        "pull",
    )
    assert "255" in hold.reason
    assert hold.raw_value == LONG_COMPANY
    assert hold.released_at is None
    assert review.count_quarantine(engine) == 1
    assert review.list_quarantine(engine, table="campaigns") == []
    assert hold.client == "demo"
    assert review.list_quarantine(engine, client="demo") == [hold]
    assert review.list_quarantine(engine, client="acme") == []
    assert review.release_quarantine(engine, [hold.id], client="acme") == []  # not its hold
    assert review.list_quarantine(engine, limit=1, offset=1) == []
    assert len(review.shorten(hold.raw_value, 40)) == 40


def test_without_retry_a_fixed_mapping_never_sees_the_untouched_record(
    engine, client, held_company
):
    repo = Repository(engine, widened("company", 400))

    Reconciler(repo, client)()

    assert holds(engine) == [(held_company, "company", "pull", 1, True)]
    assert lead(engine, held_company, "company") is None


def test_retry_makes_the_next_pull_read_the_record_again(engine, client, held_company):
    [hold] = review.list_quarantine(engine)
    repo = Repository(engine, widened("company", 400))
    mark_before = repo.high_water_mark()

    outcome = review.retry_quarantine(engine, [hold.id, 999_999])

    assert outcome.retried == [hold.id]
    assert outcome.not_open == [999_999]
    [(key, mark)] = outcome.refetch.items()
    assert key[1] == "leads"
    assert mark is not None and mark <= A_DAY_AGO + dt.timedelta(seconds=1) < mark_before
    assert holds(engine) == [(held_company, "company", "pull", 1, True)]  # still open

    Reconciler(repo, client)()

    assert holds(engine) == [(held_company, "company", "pull", 1, False)]  # released
    assert lead(engine, held_company, "company") == LONG_COMPANY
    assert repo.high_water_mark() >= mark_before  # the mark caught up again


def test_retry_of_a_value_still_invalid_counts_an_attempt_and_stays_held(
    engine, reconcile, held_company
):
    [hold] = review.list_quarantine(engine)

    review.retry_quarantine(engine, [hold.id])
    reconcile()

    assert holds(engine) == [(held_company, "company", "pull", 2, True)]


def test_retry_of_a_push_hold_sends_the_value_once_the_mapping_takes_it(
    emulator, engine, client, reconcile
):
    [rid] = emulator.seed_records(
        BASE, TABLE, [{"Email": "bo@initech.test"}], created_time=A_DAY_AGO, modified_time=A_DAY_AGO
    )
    reconcile()  # a full pull; later pulls list the last two hours only
    with engine.begin() as conn:  # the portal, in plain SQL
        conn.execute(
            text("UPDATE public.leads SET campaign_id = :v WHERE airtable_record_id = :r"),
            {"v": "c" * 100, "r": rid},
        )
    reconcile()  # longer than the mapping's 64: held, never sent
    [hold] = review.list_quarantine(engine)
    assert (hold.record_id, hold.field, hold.direction) == (rid, "campaign_id", "push")
    repo = Repository(engine, widened("campaign_id", 200))

    Reconciler(repo, client)()  # not dirty any more: nothing is looked at
    assert emulator.all_records(BASE, TABLE)[0]["fields"].get("Campaign ID") is None

    outcome = review.retry_quarantine(engine, [hold.id])
    assert outcome.repush == [rid]
    Reconciler(repo, client)()

    assert emulator.all_records(BASE, TABLE)[0]["fields"]["Campaign ID"] == "c" * 100
    assert review.list_quarantine(engine) == []


def test_release_closes_the_hold_and_keeps_it_as_history(engine, held_company):
    [hold] = review.list_quarantine(engine)

    assert review.release_quarantine(engine, [hold.id]) == [hold.id]
    assert review.release_quarantine(engine, [hold.id]) == []  # already released

    assert review.list_quarantine(engine) == []
    [kept] = review.list_quarantine(engine, include_released=True)
    assert kept.id == hold.id and kept.released_at is not None
    assert review.retry_quarantine(engine, [hold.id]).not_open == [hold.id]


def test_history_lists_both_directions_newest_first(emulator, engine, reconcile):
    [rid] = emulator.seed_records(BASE, TABLE, [{"Email": "cy@initech.test", "Status": "New"}])
    reconcile()
    emulator.update_record_fields(BASE, TABLE, rid, {"Status": "Engaged"})
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE public.leads SET claimed_by = 'dana' WHERE airtable_record_id = :r"),
            {"r": rid},
        )
    reconcile()

    changes = review.record_history(engine, rid)

    assert [(c.field, c.direction) for c in changes][-1] == ("*", "airtable_to_postgres")
    assert changes[-1].reason == "inserted"
    assert ("status", "New", "Engaged", "airtable_to_postgres") in [
        (c.field, c.old_value, c.new_value, c.direction) for c in changes
    ]
    assert ("claimed_by", "dana", "postgres_to_airtable") in [
        (c.field, c.new_value, c.direction) for c in changes
    ]
    assert [c.changed_at for c in changes] == sorted((c.changed_at for c in changes), reverse=True)
    assert all(c.run_id and c.window_start and c.window_end for c in changes)
    assert review.record_history(engine, rid, limit=1) == changes[:1]
    assert review.record_history(engine, rid, table="campaigns") == []
    assert review.record_history(engine, rid, client="acme") == []
    assert {c.client for c in changes} == {"demo"}


def test_records_are_found_by_id_e_mail_or_phone(engine, held_company):
    found = review.find_records(engine, [LEADS_MAPPING], "ADA@initech.test ")
    assert [(m.record_id, m.table_key, m.matched) for m in found] == [
        (held_company, "leads", "email")
    ]
    for phone in ("+44 20 7946 0018", "020 7946 0018", "(20) 7946-0018"):
        found = review.find_records(engine, [LEADS_MAPPING], phone)
        assert [(m.record_id, m.matched) for m in found] == [(held_company, "phone")], phone
    assert review.find_records(engine, [LEADS_MAPPING], "nobody@initech.test") == []
    assert review.find_records(engine, [LEADS_MAPPING], held_company) == [
        review.RecordMatch(held_company)
    ]
    with pytest.raises(review.NotSearchable):
        review.find_records(engine, [LEADS_MAPPING], "Ada Lovelace")
    # Values travel as parameters: a quote is searched for, not executed.
    assert review.find_records(engine, [LEADS_MAPPING], "x'@y.test; DROP TABLE leads") == []


def test_table_counts_give_rows_dirty_conflicts_and_holds(engine, held_company):
    counts = review.table_counts(engine, LEADS_MAPPING)

    assert (counts.client, counts.table_key, counts.rows) == ("demo", "leads", 1)
    assert (counts.dirty, counts.open_conflicts, counts.quarantined) == (0, 0, 1)
    elsewhere = dataclasses.replace(LEADS_MAPPING, postgres_table="no_such_table")
    assert review.table_counts(engine, elsewhere).rows is None
