"""End to end through real PostgreSQL and the real pyairtable client over HTTP to the emulator:
portal edits reach Airtable, Airtable edits reach the portal, conflicts keep both values, and
nothing loops: a second run after the echo writes nothing on either side."""

import pytest
from sqlalchemy import text

from reconcile_pipeline.engine.context import RunContext
from reconcile_pipeline.engine.pull import store_snapshot
from reconcile_pipeline.engine.push import push_dirty
from reconcile_pipeline_tests.engine.conftest import BASE, TABLE

LEAD = {
    "Email": "grace@example.com",
    "First Name": "Grace",
    "Status": "New",
    "Processing Status": "Active",
    "Campaign ID": "cmp-7",
    "Notes": "imported",
}


def seed(emulator, **overrides) -> str:
    fields = {**LEAD, **overrides}
    return emulator.seed_records(BASE, TABLE, [fields])[0]


def airtable_fields(emulator, record_id: str) -> dict:
    return next(r for r in emulator.all_records(BASE, TABLE) if r["id"] == record_id)["fields"]


def portal_write(engine, record_id: str, **values) -> None:
    assignments = ", ".join(f"{column} = :{column}" for column in values)
    with engine.begin() as conn:
        conn.execute(
            text(f"UPDATE leads SET {assignments} WHERE airtable_record_id = :rid"),
            {"rid": record_id, **values},
        )


def lead_value(engine, record_id: str, column: str):
    with engine.connect() as conn:
        return conn.execute(
            text(f"SELECT {column} FROM leads WHERE airtable_record_id = :r"), {"r": record_id}
        ).scalar_one()


def writes(emulator) -> int:
    counts = emulator.request_log()["counts"]
    return sum(
        n
        for key, n in counts.items()
        if key.split()[0] in {"PATCH", "PUT", "DELETE"}
        or (key.startswith("POST") and not key.endswith("listRecords"))
    )


def history_rows(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM reconcile.change_history")).scalar_one()


def test_claim_and_unclaim_are_pushed(emulator, engine, reconcile):
    rid = seed(emulator)
    reconcile()
    portal_write(engine, rid, claimed_by="ana", claimed_at="2026-11-21T10:00:00Z")

    _, push = reconcile()

    assert push.updated == 1
    fields = airtable_fields(emulator, rid)
    assert fields["Claimed By"] == "ana"
    assert fields["Claimed At"].startswith("2026-11-21T10:00:00")

    portal_write(engine, rid, claimed_by=None, claimed_at=None)
    reconcile()

    fields = airtable_fields(emulator, rid)
    assert "Claimed By" not in fields and "Claimed At" not in fields  # pushed as empty


def test_remove_from_campaign_is_pushed(emulator, engine, reconcile):
    rid = seed(emulator)
    reconcile()
    portal_write(engine, rid, processing_status="Removed", campaign_id=None)

    reconcile()

    fields = airtable_fields(emulator, rid)
    assert fields["Processing Status"] == "Removed"
    assert "Campaign ID" not in fields


def test_airtable_edit_is_pulled(emulator, engine, reconcile):
    rid = seed(emulator)
    reconcile()
    emulator.update_record_fields(BASE, TABLE, rid, {"Status": "Qualified", "SMS Sent Count": 4})

    pull, push = reconcile()

    assert pull.updated == 1 and push.dirty == 0
    assert lead_value(engine, rid, "status") == "Qualified"
    assert lead_value(engine, rid, "sms_sent_count") == 4


def test_notes_added_on_both_sides_keep_both_lines(emulator, engine, reconcile):
    rid = seed(emulator)
    reconcile()
    portal_write(engine, rid, notes="imported\nportal: called, wants a demo")
    emulator.update_record_fields(BASE, TABLE, rid, {"Notes": "imported\nsms: replied YES"})

    reconcile()

    expected = "imported\nsms: replied YES\nportal: called, wants a demo"
    assert lead_value(engine, rid, "notes") == expected
    assert airtable_fields(emulator, rid)["Notes"] == expected


def test_true_conflict_airtable_wins_and_the_portal_value_is_kept(emulator, engine, reconcile):
    rid = seed(emulator)
    reconcile()
    portal_write(engine, rid, claimed_by="portal-ana")
    emulator.update_record_fields(BASE, TABLE, rid, {"Claimed By": "airtable-bo"})

    pull, push = reconcile()

    assert pull.conflicts == 1
    assert lead_value(engine, rid, "claimed_by") == "airtable-bo"
    assert airtable_fields(emulator, rid)["Claimed By"] == "airtable-bo"
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT portal_value, airtable_value, decision FROM reconcile.conflicts")
        ).one()
    assert tuple(row) == ("portal-ana", "airtable-bo", "airtable_wins")
    assert push.updated == 0


def test_no_loop_push_then_echo_then_nothing(emulator, engine, reconcile):
    """Push, pull the echo, run again: the third run writes nothing on either side."""
    rids = [seed(emulator, Email=f"l{i}@example.com") for i in range(12)]
    reconcile()
    for rid in rids:
        portal_write(engine, rid, claimed_by="ana", notes="imported\nclaimed")

    _, push = reconcile()
    assert push.updated == 12 and push.write_requests == 2  # 10 a request
    echo_pull, echo_push = reconcile()
    assert echo_pull.echoes == 12 and echo_pull.updated == 0 and echo_push.dirty == 0

    writes_before, history_before = writes(emulator), history_rows(engine)
    again_pull, again_push = reconcile()

    assert (again_pull.updated, again_pull.inserted, again_push.dirty) == (0, 0, 0)
    assert writes(emulator) == writes_before
    assert history_rows(engine) == history_before


class RereadSpy:
    """The real client, noting which record ids the push re-reads from Airtable."""

    def __init__(self, client) -> None:
        self._client = client
        self.reread: list[str] = []

    def get_records(self, record_ids, fields=None):
        self.reread.extend(record_ids)
        return self._client.get_records(record_ids, fields=fields)

    def __getattr__(self, name):
        return getattr(self._client, name)


def test_the_push_rereads_every_dirty_lead_by_id_100_a_request(
    emulator, engine, client, repo, reconcile
):
    """The values a push decides against are fresh (DESIGN §3.4): never this run's pull."""
    pulled, not_pulled = (
        seed(emulator, Email="a@example.com"),
        seed(emulator, Email="b@example.com"),
    )
    reconcile()
    portal_write(engine, pulled, claimed_by="ana")
    portal_write(engine, not_pulled, claimed_by="bo")
    run = RunContext(run_id="partial-window")
    store_snapshot(repo, [r for r in emulator.all_records(BASE, TABLE) if r["id"] == pulled], run)
    spy = RereadSpy(client)

    push = push_dirty(repo, spy, run, lock_name="test")

    assert sorted(spy.reread) == sorted([pulled, not_pulled])
    assert (push.updated, push.reread_requests) == (2, 1)
    assert airtable_fields(emulator, pulled)["Claimed By"] == "ana"
    assert airtable_fields(emulator, not_pulled)["Claimed By"] == "bo"


def test_edit_during_an_in_flight_push_stays_dirty(emulator, engine, reconcile, repo):
    rid = seed(emulator)
    reconcile()
    portal_write(engine, rid, claimed_by="ana")

    def portal_edits_meanwhile(plans):
        portal_write(engine, rid, claimed_by="bo")

    _, push = reconcile(after_read=portal_edits_meanwhile)

    assert push.updated == 1
    assert airtable_fields(emulator, rid)["Claimed By"] == "ana"  # what was read and sent
    assert repo.count_dirty() == 1  # the newer edit was not marked pushed

    reconcile()

    assert airtable_fields(emulator, rid)["Claimed By"] == "bo"
    assert repo.count_dirty() == 0


def test_a_second_push_for_the_base_waits_for_the_first_and_sends_nothing_again(
    emulator, engine, reconcile, repo, client
):
    """Two pushes for the same base at once: the second blocks on the advisory lock while the
    first is in flight, then finds nothing dirty; each lead reaches Airtable exactly once."""
    import threading
    import uuid

    from reconcile_pipeline.airtable.client import AirtableClient
    from reconcile_pipeline.engine.context import RunContext
    from reconcile_pipeline.engine.push import push_dirty

    rids = [seed(emulator, Email=f"c{i}@example.com") for i in range(3)]
    reconcile()
    for rid in rids:
        portal_write(engine, rid, claimed_by="ana")
    writes_before = writes(emulator)
    first_in_flight, let_first_finish = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def hold(plans):
        first_in_flight.set()
        let_first_finish.wait(timeout=30)

    def push(name: str, airtable, after_read=None) -> None:
        run = RunContext(run_id=f"{name}-{uuid.uuid4().hex[:6]}")
        results[name] = push_dirty(
            repo, airtable, run, lock_name="base-under-test", after_read=after_read
        )

    second_client = AirtableClient(
        emulator.token, BASE, TABLE, endpoint_url=emulator.url, requests_per_second=0
    )
    first = threading.Thread(target=push, args=("first", client, hold))
    second = threading.Thread(target=push, args=("second", second_client))
    first.start()
    assert first_in_flight.wait(timeout=30)
    second.start()
    waiting = False
    for _ in range(300):  # until the second push is seen queued on the lock (≤ 30 s)
        with engine.connect() as conn:
            waiting = (
                conn.execute(
                    text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    )
                ).scalar_one()
                == 1
            )
        if waiting:
            break
        threading.Event().wait(0.1)
    second_done_early = "second" in results
    let_first_finish.set()
    first.join(timeout=60)
    second.join(timeout=60)
    second_client.close()

    assert waiting and not second_done_early
    assert results["first"].updated == 3
    assert results["second"].dirty == 0
    assert writes(emulator) - writes_before == 1  # one PATCH of three records, sent once
    assert all(airtable_fields(emulator, rid)["Claimed By"] == "ana" for rid in rids)


def test_a_batch_with_one_record_airtable_rejects_pushes_nine_and_quarantines_one(
    emulator, engine, client
):
    """A value our mapping accepts but Airtable answers 422 for: the batch is bisected down to
    the one record, which is quarantined; the nine others go out."""
    import dataclasses

    from reconcile_pipeline.engine.repository import Repository
    from reconcile_pipeline_tests.engine.conftest import Reconciler
    from reconcile_pipeline_tests.mappings import LEADS_MAPPING

    permissive = dataclasses.replace(
        LEADS_MAPPING,
        fields=tuple(
            dataclasses.replace(f, choices=None) if f.column == "processing_status" else f
            for f in LEADS_MAPPING.fields
        ),
    )
    repo = Repository(engine, permissive)
    repo.register_tracked_columns()
    reconcile = Reconciler(repo, client)
    rids = [seed(emulator, Email=f"b{i}@example.com") for i in range(10)]
    reconcile()
    for rid in rids:
        portal_write(engine, rid, claimed_by="ana")
    portal_write(engine, rids[4], processing_status="Not An Option")  # Airtable answers 422

    _, push = reconcile()

    assert (push.updated, push.quarantined) == (9, 1)
    assert all(
        airtable_fields(emulator, r).get("Claimed By") == "ana" for r in rids if r != rids[4]
    )
    with engine.connect() as conn:
        held = conn.execute(
            text(
                "SELECT airtable_record_id, reason FROM reconcile.quarantine "
                "WHERE direction = 'push'"
            )
        ).one()
    assert held[0] == rids[4]
    assert "422" in held[1]


def test_a_portal_value_the_mapping_rejects_is_held_and_never_sent(emulator, engine, reconcile):
    """DESIGN §3.4: a 300-character Claimed By is not sent (Airtable would take it, and its
    echo would then be quarantined on every pull); the lead's valid edits still go out."""
    rid = seed(emulator)
    reconcile()
    portal_write(engine, rid, claimed_by="x" * 300, notes="called back")
    patches_before = writes(emulator)

    _, push = reconcile()

    fields = airtable_fields(emulator, rid)
    assert "Claimed By" not in fields  # never sent
    assert fields["Notes"] == "called back"  # the valid edit of the same lead went out
    assert (push.updated, push.held) == (1, 1)
    assert writes(emulator) - patches_before == 1
    with engine.connect() as conn:
        held = conn.execute(
            text(
                "SELECT field, reason FROM reconcile.quarantine "
                "WHERE direction = 'push' AND released_at IS NULL"
            )
        ).one()
    assert held[0] == "claimed_by" and "300 characters" in held[1]

    # Held is not dirty-forever: the next runs send nothing and do not re-mark the lead.
    pull, push = reconcile()
    assert (push.dirty, writes(emulator) - patches_before) == (0, 1)

    # The portal fixes the value: it goes out and the hold is released.
    portal_write(engine, rid, claimed_by="ana")
    reconcile()
    assert airtable_fields(emulator, rid)["Claimed By"] == "ana"
    with engine.connect() as conn:
        open_holds = conn.execute(
            text("SELECT count(*) FROM reconcile.quarantine WHERE released_at IS NULL")
        ).scalar_one()
    assert open_holds == 0


@pytest.mark.parametrize(
    "faults",
    [
        {"fail_next": 3, "fail_status": 429},  # rate limited, then the base is blocked
        {"fail_next": 2, "fail_status": 503},  # outage
        {"drop_next_writes": 1},  # the write is applied but the response never arrives
    ],
)
def test_faults_lose_no_edit_and_a_second_run_converges(emulator, engine, reconcile, repo, faults):
    rids = [seed(emulator, Email=f"f{i}@example.com") for i in range(5)]
    reconcile()
    for rid in rids:
        portal_write(engine, rid, claimed_by="ana")

    emulator.set_faults(**faults)
    try:
        reconcile()
    finally:
        emulator.clear_faults()
    reconcile()

    assert repo.count_dirty() == 0
    assert [airtable_fields(emulator, r).get("Claimed By") for r in rids] == ["ana"] * 5
    assert len(emulator.all_records(BASE, TABLE)) == 5  # no duplicate record


def test_dry_run_push_sends_nothing(emulator, engine, reconcile, repo):
    rid = seed(emulator)
    reconcile()
    portal_write(engine, rid, claimed_by="ana")
    before = writes(emulator)

    _, push = reconcile(dry_run=True)

    assert push.updated == 1 and push.dry_run
    assert writes(emulator) == before
    assert repo.count_dirty() == 1


def test_conflict_resolved_with_the_portal_value_goes_out_through_the_normal_push(
    emulator, engine, reconcile, repo
):
    from reconcile_pipeline.engine import conflicts

    rid = seed(emulator)
    reconcile()
    portal_write(engine, rid, claimed_by="portal-ana")
    emulator.update_record_fields(BASE, TABLE, rid, {"Claimed By": "airtable-bo"})
    reconcile()
    [conflict] = conflicts.list_open(repo)

    conflicts.resolve(repo, conflict.id, "portal")
    reconcile()

    assert airtable_fields(emulator, rid)["Claimed By"] == "portal-ana"
    assert lead_value(engine, rid, "claimed_by") == "portal-ana"
    assert conflicts.list_open(repo) == []
    with engine.connect() as conn:
        reasons = set(
            conn.execute(
                text(
                    "SELECT reason, direction FROM reconcile.change_history "
                    "WHERE airtable_record_id = :r"
                ),
                {"r": rid},
            ).all()
        )
    # The portal's value goes to Airtable: audited in that direction.
    assert ("conflict_resolution:portal", "postgres_to_airtable") in reasons
