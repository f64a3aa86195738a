"""Stage 1 against real PostgreSQL: set-based inserts and updates, the three-way merge of
portal-owned fields, conflicts with both values kept, quarantine of bad input, local columns
never touched, and re-runs that change nothing."""

import datetime as dt

import pytest
from sqlalchemy import text

from reconcile_pipeline.engine.context import RunContext
from reconcile_pipeline.engine.pull import apply_records, snapshot_pulled, store_snapshot
from reconcile_pipeline.engine.repository import Repository
from reconcile_pipeline_tests.engine.builders import airtable_record, record_id
from reconcile_pipeline_tests.mappings import LEADS_MAPPING

RUN = RunContext(run_id="test-run")


@pytest.fixture
def repo(engine) -> Repository:
    repo = Repository(engine, LEADS_MAPPING)
    repo.register_tracked_columns()
    return repo


def lead(engine, rid: str) -> dict:
    with engine.connect() as conn:
        return dict(
            conn.execute(text("SELECT * FROM leads WHERE airtable_record_id = :r"), {"r": rid})
            .mappings()
            .one()
        )


def portal_write(engine, rid: str, **values) -> None:
    """An ordinary (untagged) portal write, as the portal's API would do it."""
    assignments = ", ".join(f"{column} = :{column}" for column in values)
    with engine.begin() as conn:
        conn.execute(
            text(f"UPDATE leads SET {assignments} WHERE airtable_record_id = :rid"),
            {"rid": rid, **values},
        )


def table_count(engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()


def test_new_records_are_inserted_and_a_rerun_changes_nothing(engine, repo):
    records = [airtable_record(record_id(i), Email=f"l{i}@example.com") for i in range(1, 6)]

    first = apply_records(repo, records, RUN)
    history_after_first = table_count(engine, "reconcile.change_history")
    second = apply_records(repo, records, RUN)

    assert (first.inserted, first.updated) == (5, 0)
    assert (second.inserted, second.updated, second.unchanged) == (0, 0, 5)
    assert table_count(engine, "leads") == 5
    assert table_count(engine, "reconcile.change_history") == history_after_first
    assert repo.count_dirty() == 0  # the reconciler's own inserts are never portal changes


def test_airtable_edit_is_pulled_and_audited(engine, repo):
    rid = record_id(100)
    apply_records(repo, [airtable_record(rid)], RUN)

    result = apply_records(repo, [airtable_record(rid, Status="Engaged", SMS_Sent_Count=3)], RUN)

    assert result.updated == 1
    row = lead(engine, rid)
    assert (row["status"], row["sms_sent_count"]) == ("Engaged", 3)
    with engine.connect() as conn:
        audit = conn.execute(
            text(
                "SELECT field, old_value, new_value, direction, run_id FROM "
                "reconcile.change_history WHERE airtable_record_id = :r AND field <> '*' "
                "ORDER BY field"
            ),
            {"r": rid},
        ).all()
    assert audit == [
        ("sms_sent_count", 0, 3, "airtable_to_postgres", "test-run"),
        ("status", "New", "Engaged", "airtable_to_postgres", "test-run"),
    ]
    assert repo.count_dirty() == 0


def test_portal_only_change_is_kept_and_stays_dirty(engine, repo):
    rid = record_id(101)
    apply_records(repo, [airtable_record(rid)], RUN)
    portal_write(engine, rid, claimed_by="ana")

    result = apply_records(repo, [airtable_record(rid, Status="Contacted")], RUN)

    assert result.conflicts == 0
    row = lead(engine, rid)
    assert (row["claimed_by"], row["status"]) == ("ana", "Contacted")
    assert repo.count_dirty() == 1


def test_both_sides_changed_airtable_wins_and_the_portal_value_is_kept_in_the_conflict(
    engine, repo
):
    rid = record_id(102)
    apply_records(repo, [airtable_record(rid, Claimed_By="base")], RUN)
    portal_write(engine, rid, claimed_by="portal-ana")

    result = apply_records(repo, [airtable_record(rid, Claimed_By="airtable-bo")], RUN)

    assert result.conflicts == 1
    assert lead(engine, rid)["claimed_by"] == "airtable-bo"
    with engine.connect() as conn:
        conflict = conn.execute(
            text(
                "SELECT field, base_value, airtable_value, portal_value, decision, status "
                "FROM reconcile.conflicts"
            )
        ).one()
    assert tuple(conflict) == (
        "claimed_by",
        "base",
        "airtable-bo",
        "portal-ana",
        "airtable_wins",
        "open",
    )


def test_notes_from_both_sides_are_merged_and_the_merge_is_queued_for_push(engine, repo):
    rid = record_id(103)
    apply_records(repo, [airtable_record(rid, Notes="first call")], RUN)
    portal_write(engine, rid, notes="first call\nportal: sent deck")

    apply_records(repo, [airtable_record(rid, Notes="first call\nsms: replied YES")], RUN)

    assert lead(engine, rid)["notes"] == "first call\nsms: replied YES\nportal: sent deck"
    assert repo.count_dirty() == 1


def test_partial_record_never_touches_local_or_unmapped_columns(engine, repo):
    rid = record_id(104)
    apply_records(repo, [airtable_record(rid)], RUN)
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE leads SET portal_priority = 5, last_viewed_at = now() "
                "WHERE airtable_record_id = :r"
            ),
            {"r": rid},
        )
    before = lead(engine, rid)

    apply_records(
        repo,
        [
            {
                "id": rid,
                "createdTime": "2026-01-01T00:00:00.000Z",
                "fields": {"Email": "lead@example.com", "Status": "Engaged"},
            }
        ],
        RUN,
    )

    after = lead(engine, rid)
    assert after["portal_priority"] == 5
    assert after["last_viewed_at"] == before["last_viewed_at"]
    assert after["status"] == "Engaged"


def test_an_invalid_field_is_held_the_record_s_other_fields_sync_and_it_leaves_when_valid(
    engine, repo
):
    good, bad = record_id(105), record_id(106)
    result = apply_records(
        repo,
        [airtable_record(good), airtable_record(bad, ICP_Score="very high", Status="Engaged")],
        RUN,
    )

    # Field-level quarantine (DESIGN §3.5): only ICP Score is held; the record is inserted.
    assert (result.inserted, result.quarantined, result.quarantined_fields) == (2, 1, 1)
    assert lead(engine, bad)["status"] == "Engaged"
    assert lead(engine, bad)["icp_score"] is None
    with engine.connect() as conn:
        held = conn.execute(
            text(
                "SELECT airtable_record_id, field, reason, raw_value #>> '{}' "
                "FROM reconcile.quarantine WHERE released_at IS NULL"
            )
        ).one()
    assert held[0] == bad and held[1] == "icp_score" and "ICP Score" in held[2]
    assert held[3] == "very high"

    later = apply_records(repo, [airtable_record(bad, ICP_Score=80, Status="Engaged")], RUN)

    assert (later.updated, later.released) == (1, 1)
    assert lead(engine, bad)["icp_score"] == 80
    assert table_count(engine, "reconcile.quarantine WHERE released_at IS NULL") == 0


def test_a_held_field_keeps_its_last_good_value_while_other_airtable_changes_arrive(engine, repo):
    rid = record_id(110)
    apply_records(repo, [airtable_record(rid, Email="ok@example.com", Status="New")], RUN)

    # Required Email cleared and an unknown option in Lead Source, while Status changes too.
    result = apply_records(
        repo, [airtable_record(rid, Email=None, Status="Qualified", Lead_Source="Billboard")], RUN
    )

    assert result.quarantined_fields == 2
    row = lead(engine, rid)
    assert row["status"] == "Qualified"  # the record's other fields keep syncing
    assert row["email"] == "ok@example.com"  # the held field keeps its last good value
    with engine.connect() as conn:
        reasons = dict(
            conn.execute(
                text("SELECT field, reason FROM reconcile.quarantine WHERE released_at IS NULL")
            ).all()
        )
    assert "required" in reasons["email"] and "Billboard" in reasons["lead_source"]


def test_dry_run_reports_the_plan_and_writes_nothing(engine, repo):
    rid = record_id(107)
    apply_records(repo, [airtable_record(rid)], RUN)
    history = table_count(engine, "reconcile.change_history")

    plan = apply_records(
        repo, [airtable_record(rid, Status="Qualified")], RunContext(run_id="dry", dry_run=True)
    )

    assert plan.updated == 1
    assert [(c["field"], c["new"]) for c in plan.changes] == [("status", "Qualified")]
    assert lead(engine, rid)["status"] == "New"
    assert table_count(engine, "reconcile.change_history") == history


def test_an_older_snapshot_never_overwrites_a_newer_one(engine, repo):
    import datetime as dt

    rid = record_id(108)
    newer = dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC)
    apply_records(repo, [airtable_record(rid, Status="Qualified", modified=newer)], RUN)

    result = apply_records(
        repo, [airtable_record(rid, Status="New", modified=newer - dt.timedelta(minutes=5))], RUN
    )

    assert result.stale_skipped == 1
    assert lead(engine, rid)["status"] == "Qualified"


def test_the_snapshot_read_for_some_ids_takes_the_newest_version_of_each_without_held_fields(
    engine, repo
):
    """The drift check's view of what this run pulled."""
    twice, invalid, other = record_id(120), record_id(121), record_id(122)
    newer = dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC)
    run = RunContext(run_id="pulled-values")
    store_snapshot(
        repo,
        [
            airtable_record(twice, Claimed_By="new", modified=newer),
            airtable_record(invalid, ICP_Score="very high", Claimed_By="x"),
            airtable_record(other, Claimed_By="other"),
            # Stored last, but older: a repeat of the record from an earlier page of the pull.
            airtable_record(twice, Claimed_By="old", modified=newer - dt.timedelta(minutes=5)),
        ],
        run,
    )

    def pulled_values(ids: list[str]) -> dict[str, dict]:
        return {r.record_id: r.values for r in snapshot_pulled(repo, run.run_id, ids)}

    values = pulled_values([twice, invalid])

    assert sorted(values) == sorted([twice, invalid])  # `other` not asked
    assert values[twice]["claimed_by"] == "new"
    assert "icp_score" not in values[invalid] and values[invalid]["claimed_by"] == "x"
    assert pulled_values([]) == {}


def test_quarantine_growth_counts_only_records_first_held_by_the_run(engine, repo):
    from reconcile_pipeline.engine.invariants import quarantine_growth

    bad = record_id(109)
    apply_records(repo, [airtable_record(bad, Email=None)], RunContext(run_id="first"))
    assert quarantine_growth(repo, "first").passed is False

    apply_records(repo, [airtable_record(bad, Email=None)], RunContext(run_id="retry"))
    assert quarantine_growth(repo, "retry").passed is True  # still held, but not new
    assert quarantine_growth(repo, "retry").figures["held_in_total"] == 1


def test_an_airtable_only_edit_still_moves_the_stale_snapshot_guard(engine, repo):
    """An edit of Airtable-owned fields moves no merge base; the modified time it records is
    still what keeps a late, older snapshot from undoing it."""
    import datetime as dt

    rid = record_id(110)
    first = dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC)
    apply_records(repo, [airtable_record(rid, Status="New", modified=first)], RUN)
    edited = first + dt.timedelta(hours=1)
    apply_records(repo, [airtable_record(rid, Status="Qualified", modified=edited)], RUN)

    late = apply_records(
        repo,
        [airtable_record(rid, Status="Contacted", modified=first + dt.timedelta(minutes=30))],
        RUN,
    )

    assert late.stale_skipped == 1
    assert lead(engine, rid)["status"] == "Qualified"


# Each record changes a different set of Airtable-owned fields (written one statement per set).
FIELD_EDITS = [
    {"Status": "Qualified"},
    {"SMS Sent Count": 4},
    {"Company": "Initech"},
    {"Title": "CTO", "Status": "Contacted"},
    {"Phone": "+15550100"},
    {"Last Name": "Byron", "SMS Sent Count": 9},
    {"Status": "Qualified"},
]


def test_each_changed_column_is_written_and_nothing_else_is(engine, repo):
    rids = [record_id(200 + i) for i in range(len(FIELD_EDITS))]
    apply_records(repo, [airtable_record(rid, Company="Acme") for rid in rids], RUN)
    with engine.begin() as conn:  # a local-only column the sync must never touch
        conn.execute(text("UPDATE leads SET portal_priority = 3"))
    before = {rid: lead(engine, rid) for rid in rids}

    result = apply_records(
        repo,
        [
            airtable_record(rid, **{"Company": "Acme", **edit})
            for rid, edit in zip(rids, FIELD_EDITS, strict=True)
        ],
        RUN,
    )

    assert result.updated == len(rids)
    columns = {
        "Status": "status",
        "SMS Sent Count": "sms_sent_count",
        "Company": "company",
        "Title": "title",
        "Phone": "phone",
        "Last Name": "last_name",
    }
    for rid, edit in zip(rids, FIELD_EDITS, strict=True):
        expected = {**before[rid], **{columns[name]: value for name, value in edit.items()}}
        assert lead(engine, rid) == expected


def sync_state_pages(engine) -> dict[str, int]:
    """Record id → the heap page its current sync-state row version lives on."""
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT airtable_record_id, (ctid::text::point)[0] FROM reconcile.sync_state")
        ).all()
    return {rid: int(page) for rid, page in rows}


def test_a_pull_touching_every_record_rewrites_sync_state_in_place(engine, repo):
    """Migration 0003 leaves half of each sync-state page free, so a pull that moves the
    modified time of every record on a page keeps each new row version on its page (a HOT
    update: no index entries written, nothing for vacuum to chase)."""
    started = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    rids = [record_id(300 + i) for i in range(400)]
    apply_records(repo, [airtable_record(rid, modified=started) for rid in rids], RUN)
    before = sync_state_pages(engine)
    assert len(set(before.values())) > 2  # the rows span several pages

    later = started + dt.timedelta(minutes=5)
    result = apply_records(
        repo, [airtable_record(rid, modified=later, SMS_Sent_Count=3) for rid in rids], RUN
    )

    assert result.updated == len(rids)
    assert sync_state_pages(engine) == before
