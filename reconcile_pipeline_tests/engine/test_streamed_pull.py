"""The streamed pull (`stages.pull_window`) against real PostgreSQL and the emulator over HTTP:
the same outcome merged page by page while the listing runs as merged only once the whole
listing ended, merging while the listing still runs, an Airtable failure halfway that loses
nothing, the dedupe rule across batches, and each record converted once with nothing read back
from the snapshot."""

import dataclasses
import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from reconcile_pipeline.airtable.errors import AirtableRequestError
from reconcile_pipeline.engine import convert
from reconcile_pipeline.engine.context import RunContext
from reconcile_pipeline.engine.frames import pulled_frame
from reconcile_pipeline.engine.invariants import window_drift
from reconcile_pipeline.engine.mapping import TableMapping
from reconcile_pipeline.engine.repository import Repository
from reconcile_pipeline.engine.stages import pull_window
from reconcile_pipeline_tests.engine.builders import airtable_record, record_id
from reconcile_pipeline_tests.engine.conftest import BASE, TABLE
from reconcile_pipeline_tests.mappings import LEADS_MAPPING

OVERLAP = dt.timedelta(minutes=5)
LISTING_PATHS = {f"/v0/{BASE}/{TABLE}", f"/v0/{BASE}/{TABLE}/listRecords"}
STATUSES = ["New", "Contacted", "Engaged", "Qualified"]
# Columns a database sets on its own (serials, now(), transaction ids): not the outcome.
VOLATILE = {
    "id",
    "created_at",
    "updated_at",
    "portal_changed_at",
    "portal_changed_xid",
    "last_pushed_at",
    "last_pulled_at",
    "owned_write_at",
    "first_seen_at",
    "last_seen_at",
    "resolved_at",
    "detected_at",
    "changed_at",
}


def run_context(run_id: str | None = None, dry_run: bool = False) -> RunContext:
    now = dt.datetime.now(dt.UTC)
    return RunContext(
        run_id=run_id or f"test-{uuid.uuid4().hex[:8]}",
        window_start=now - dt.timedelta(hours=2),
        window_end=now + dt.timedelta(minutes=20),
        dry_run=dry_run,
    )


def lead_fields(n: int) -> dict:
    return {
        "Email": f"lead{n}@example.com",
        "First Name": f"Ada{n}",
        "Status": STATUSES[n % len(STATUSES)],
        "Processing Status": "Active",
        "Campaign ID": "cmp-1",
        "SMS Sent Count": n % 7,
        "Notes": f"imported {n}",
    }


def seed(emulator, count: int) -> list[str]:
    return emulator.seed_records(BASE, TABLE, [lead_fields(n) for n in range(count)])


def listing_requests(emulator) -> int:
    return sum(
        1
        for entry in emulator.request_log()["entries"]
        if entry["target"].partition("?")[0] in LISTING_PATHS
    )


def outcome(engine, run_id: str) -> dict[str, list]:
    """Everything a pull leaves in PostgreSQL, without what the database sets on its own."""

    def rows(sql: str) -> list[dict]:
        with engine.connect() as conn:
            found = []
            for (row,) in conn.execute(text(sql), {"run": run_id}).all():
                row = {k: v for k, v in row.items() if k not in VOLATILE}
                if "released_at" in row:
                    row["released_at"] = row["released_at"] is not None
                found.append(row)
        return sorted(found, key=lambda r: json.dumps(r, sort_keys=True, default=str))

    return {
        "leads": rows("SELECT to_jsonb(l) FROM leads l"),
        "sync_state": rows("SELECT to_jsonb(s) FROM reconcile.sync_state s"),
        "history": rows("SELECT to_jsonb(h) FROM reconcile.change_history h"),
        "conflicts": rows("SELECT to_jsonb(c) FROM reconcile.conflicts c"),
        "quarantine": rows("SELECT to_jsonb(q) FROM reconcile.quarantine q"),
        "runs": rows(
            "SELECT jsonb_build_object('stage', stage, 'stats', stats, 'dry_run', dry_run) "
            "FROM reconcile.runs WHERE run_id = :run"
        ),
        "coverage": rows(
            "SELECT jsonb_build_object('committed', committed_at IS NOT NULL, "
            "'full', pull_start IS NULL) FROM reconcile.pull_coverage WHERE run_id = :run"
        ),
    }


def portal_write(engine, rids: list[str], **values) -> None:
    assignments = ", ".join(f"{column} = :{column}" for column in values)
    with engine.begin() as conn:
        conn.execute(
            text(f"UPDATE leads SET {assignments} WHERE airtable_record_id = ANY(:rids)"),
            {"rids": rids, **values},
        )


def lead_count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM leads")).scalar_one()


@pytest.fixture
def twin(postgres_server, migrated_template) -> Iterator[Repository]:
    """A second portal database, for the same run made the other way."""
    name = postgres_server.create_database(template=migrated_template)
    engine = create_engine(postgres_server.url(name))
    repo = Repository(engine, LEADS_MAPPING)
    repo.register_tracked_columns()
    yield repo
    engine.dispose()
    postgres_server.drop_database(name)


class ListedFirst:
    """The client's listing with every page requested before the first is handed on: a pull
    through it merges nothing until the whole listing ended (list everything, then merge)."""

    def __init__(self, client) -> None:
        self.client = client

    @property
    def requests_sent(self) -> int:
        return self.client.requests_sent

    @property
    def repeated_ids(self) -> list[str]:
        return self.client.repeated_ids

    def iter_all(self, fields=None):
        return iter(list(self.client.iter_all(fields=fields)))

    def iter_modified(self, start, end, fields=None):
        return iter(list(self.client.iter_modified(start, end, fields=fields)))


def test_merging_page_by_page_leaves_what_merging_after_the_whole_listing_leaves(
    emulator, client, repo, twin
):
    ids = seed(emulator, 250)
    first = run_context("first")
    for table in (repo, twin):  # the same start on both sides
        pull_window(table, client, first, OVERLAP)
        portal_write(table.engine, ids[:20], claimed_by="portal-ana")
        portal_write(table.engine, ids[20:25], status="Customer")  # Airtable owns it: reverted
        portal_write(table.engine, ids[25:30], notes="portal line")
    for n, rid in enumerate(ids[:10]):  # both sides changed Claimed By: Airtable wins
        emulator.update_record_fields(BASE, TABLE, rid, {"Claimed By": f"airtable-{n}"})
    for rid in ids[25:30]:  # merge_lines keeps both sides' lines
        emulator.update_record_fields(BASE, TABLE, rid, {"Notes": "airtable line"})
    for rid in ids[100:105]:  # held in quarantine, the rest of each record syncs
        emulator.put_raw_fields(BASE, TABLE, rid, {"SMS Sent Count": "lots"})
        emulator.update_record_fields(BASE, TABLE, rid, {"Status": "Qualified"})
    for rid in ids[200:240]:
        emulator.update_record_fields(BASE, TABLE, rid, {"Status": "Engaged", "ICP Score": 70})

    second = run_context("second")
    emulator.reset_request_log()
    listed_before_merging: list[int] = []

    def note_listing(records: list[dict]) -> None:
        listed_before_merging.append(listing_requests(emulator))

    # The reference: the whole listing first, then the merge (batches as large as can be).
    fetched, merged = pull_window(
        repo, ListedFirst(client), second, OVERLAP, check_schema=note_listing, batch_pages=1000
    )
    assert listed_before_merging[0] == 3  # nothing was converted or merged before the end
    streamed_fetch, streamed = pull_window(twin, client, second, OVERLAP, batch_pages=1)

    assert merged.counts() == streamed.counts()
    assert (merged.conflicts, merged.quarantined, merged.reverted) == (15, 5, 5)
    assert (streamed_fetch.pages, len(streamed_fetch.records)) == (3, 250)
    assert (streamed_fetch.pages, streamed_fetch.repeated_in_pull) == (
        fetched.pages,
        fetched.repeated_in_pull,
    )
    assert len(streamed.transaction_ids) >= 3  # one merge transaction per batch at least
    sequential, overlapped = outcome(repo.engine, "second"), outcome(twin.engine, "second")
    for key, rows in sequential.items():
        assert rows == overlapped[key], key
    assert repo.high_water_mark() > twin.high_water_mark() - dt.timedelta(minutes=1)
    assert twin.high_water_mark() >= second.window_start  # advanced by the streamed pull


def test_merging_starts_before_the_listing_ends(emulator, client, repo, monkeypatch):
    seed(emulator, 350)  # 4 pages
    serve = emulator.handle
    merged_while_held: list[int] = []

    def hold_the_last_page(method, target, headers, body):
        """Before answering the last list page, wait (boundedly) for the merge to write the
        pages already answered: a pull that merges only after the listing never does."""
        if target.partition("?")[0] in LISTING_PATHS and listing_requests(emulator) == 3:
            deadline = time.monotonic() + 5
            while lead_count(repo.engine) < 100 and time.monotonic() < deadline:
                time.sleep(0.02)
            merged_while_held.append(lead_count(repo.engine))
        return serve(method, target, headers, body)

    monkeypatch.setattr(emulator, "handle", hold_the_last_page)
    fetched, result = pull_window(repo, client, run_context(), OVERLAP)

    assert fetched.pages == 4
    assert merged_while_held and merged_while_held[0] >= 100
    assert (result.inserted, lead_count(repo.engine)) == (350, 350)


def test_a_paced_burst_of_pages_is_merged_whole_and_a_pause_ends_the_batch():
    """The pages of one paced burst arrive milliseconds apart, then the pacer pauses: the
    merge takes the burst whole (at most `batch_pages` pages), never its first page while the
    rest are still being requested. (Gaps scaled up fifty-fold, so that a slow machine's
    scheduling cannot split a burst.)"""
    from reconcile_pipeline.engine.stages import PageStream

    burst_gap = 0.5

    def paced_pages() -> Iterator[list[dict]]:
        for burst in ([1, 2, 3, 4, 5, 6, 7], [8, 9]):
            for n in burst:
                time.sleep(burst_gap / 50)  # a request's round trip
                yield [{"page": n}]
            time.sleep(burst_gap * 3)  # the pacer's pause before the next burst

    with PageStream(paced_pages(), batch_pages=5, burst_gap_seconds=burst_gap) as stream:
        batches = [[page[0]["page"] for page in batch] for batch in stream.batches()]

    assert batches == [[1, 2, 3, 4, 5], [6, 7], [8, 9]]


def test_an_airtable_failure_on_a_later_page_keeps_the_mark_and_the_next_run_recovers(
    emulator, client, repo
):
    ids = seed(emulator, 350)
    pull_window(repo, client, run_context(), OVERLAP)
    mark = repo.high_water_mark()
    for rid in ids:
        emulator.update_record_fields(BASE, TABLE, rid, {"Status": "Customer"})
    emulator.reset_request_log()
    # The third page's request is refused (not a status the client retries).
    emulator.set_faults(fail_nth={3: 422})
    failed = run_context()

    with pytest.raises(AirtableRequestError) as raised:
        pull_window(repo, client, failed, OVERLAP, batch_pages=1)

    assert raised.value.error_type == "INJECTED_FAULT"
    assert repo.high_water_mark() == mark
    with repo.engine.connect() as conn:
        stages = conn.execute(
            text("SELECT stage FROM reconcile.runs WHERE run_id = :r"), {"r": failed.run_id}
        ).scalars()
        assert list(stages) == []  # neither the fetch nor the pull counts as done
        customers = conn.execute(
            text("SELECT count(*) FROM leads WHERE status = 'Customer'")
        ).scalar_one()
    assert customers <= 200  # only the pages answered before the failure were merged

    emulator.clear_faults()
    recovered = run_context()
    fetched, result = pull_window(repo, client, recovered, OVERLAP)

    assert len(fetched.records) == 350
    assert result.updated + result.unchanged == 350
    assert repo.high_water_mark() > mark
    with repo.engine.connect() as conn:
        assert (
            conn.execute(text("SELECT count(*) FROM leads WHERE status = 'Customer'")).scalar_one()
            == 350
        )


def test_a_failed_merge_stops_the_listing_and_propagates(emulator, client, repo):
    seed(emulator, 1000)  # 10 pages
    emulator.reset_request_log()
    mark = repo.high_water_mark()

    class SchemaGone(RuntimeError):
        pass

    def refuse(records):
        raise SchemaGone("the merge failed")

    raised: list[BaseException] = []

    def attempt() -> None:
        try:
            pull_window(repo, client, run_context(), OVERLAP, check_schema=refuse, batch_pages=1)
        except BaseException as error:  # noqa: BLE001 — examined below
            raised.append(error)

    # In a thread of its own, so that a listing that never stops fails the test, not hangs it.
    caller = threading.Thread(target=attempt, daemon=True)
    caller.start()
    caller.join(timeout=30)

    assert not caller.is_alive(), "the pull never returned: its listing did not stop"
    assert [type(error) for error in raised] == [SchemaGone]
    # One page taken, at most two queued and one waiting to be: the listing stopped there.
    assert listing_requests(emulator) <= 4
    assert not [t for t in threading.enumerate() if t.name == "airtable-listing"]
    assert repo.high_water_mark() == mark
    assert lead_count(repo.engine) == 0


class ListedPages:
    """An Airtable port whose listing returns these pages as they are (repeats included)."""

    def __init__(self, pages: list[list[dict]]) -> None:
        self.pages = pages
        self.repeated_ids: list[str] = []
        self.requests_sent = 0

    def iter_all(self, fields=None):
        for page in self.pages:
            self.requests_sent += 1
            yield page

    def iter_modified(self, start, end, fields=None):
        return self.iter_all(fields)


def test_a_record_listed_again_on_a_later_page_follows_the_dedupe_rule(engine, repo):
    t = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
    newer_later, older_later = record_id(501), record_id(502)
    pages = [
        [
            airtable_record(newer_later, modified=t, Status="Contacted"),
            airtable_record(older_later, modified=t, Status="Engaged"),
        ],
        [airtable_record(record_id(503), modified=t)],
        [
            airtable_record(newer_later, modified=t + dt.timedelta(minutes=1), Status="Qualified"),
            airtable_record(older_later, modified=t - dt.timedelta(minutes=1), Status="New"),
        ],
    ]

    fetched, result = pull_window(repo, ListedPages(pages), run_context(), OVERLAP, batch_pages=1)

    with engine.connect() as conn:
        status = dict(conn.execute(text("SELECT airtable_record_id, status FROM leads")).all())
    # What merging the whole listing at once keeps (dedupe: the later copy unless it is older).
    assert status == {newer_later: "Qualified", older_later: "Engaged", record_id(503): "New"}
    assert (result.pulled, result.duplicates_in_pull, fetched.repeated_in_pull) == (3, 2, 2)
    assert {r.record_id: r.values["status"] for r in result.records} == status
    with engine.connect() as conn:
        stats = conn.execute(
            text("SELECT stats FROM reconcile.runs WHERE stage = 'fetch'")
        ).scalar_one()
    assert (stats["pulled"], stats["pages"], stats["repeated_in_pull"]) == (5, 3, 2)


def test_each_record_is_converted_once_and_the_snapshot_is_not_read_back(
    emulator, client, repo, monkeypatch
):
    seed(emulator, 250)
    reads: list[str] = []
    read_snapshot = Repository.snapshot_records

    def counted(self, conn, run_id, record_ids=None):
        reads.append(run_id)
        return read_snapshot(self, conn, run_id, record_ids)

    monkeypatch.setattr(Repository, "snapshot_records", counted)
    run = run_context()
    before = convert.conversions.value

    _, result = pull_window(repo, client, run, OVERLAP)
    frame = pulled_frame(repo.mapping, result.records)
    drift = window_drift(repo, run.run_id, result.records)

    assert convert.conversions.value - before == result.pulled == 250
    assert reads == []
    assert len(frame) == 250 and drift.passed and drift.figures["records"] == 250
    # A check run apart from the pull reads the snapshot back and converts it once more.
    assert window_drift(repo, run.run_id).figures == drift.figures
    assert reads == [run.run_id]
    assert convert.conversions.value - before == 500


def test_a_dry_run_streamed_pull_writes_nothing_and_keeps_the_mark(emulator, client, repo):
    seed(emulator, 150)
    run = run_context(dry_run=True)

    fetched, result = pull_window(repo, client, run, OVERLAP)

    assert (len(fetched.records), result.inserted, result.dry_run) == (150, 150, True)
    assert lead_count(repo.engine) == 0
    assert repo.high_water_mark() is None
    assert outcome(repo.engine, run.run_id)["coverage"] == []


def test_records_without_an_id_are_kept_in_the_snapshot_only(engine, repo):
    good = airtable_record(record_id(601))
    pages = [[{"fields": {"Email": "no-id@example.com"}}, good]]

    fetched, result = pull_window(repo, ListedPages(pages), run_context(), OVERLAP)

    assert (len(fetched.records), result.pulled, result.inserted) == (2, 1, 1)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM reconcile.airtable_snapshots")).scalar() == 2


def test_a_batch_the_cached_schema_does_not_know_is_converted_with_the_mapping_re_read(
    emulator, client, engine
):
    """A select option added in Airtable since the schema was cached: `check_schema` sees the
    batch before it is converted, so the option is taken, not held in quarantine."""
    stale = dataclasses.replace(
        LEADS_MAPPING,
        fields=tuple(
            dataclasses.replace(spec, choices=spec.choices - {"Qualified"})
            if spec.column == "status"
            else spec
            for spec in LEADS_MAPPING.fields
        ),
    )
    repo = Repository(engine, stale)
    repo.register_tracked_columns()
    seed(emulator, 250)  # every fourth lead is Qualified
    seen: list[int] = []

    def check_schema(records: list[dict]) -> TableMapping | None:
        seen.append(len(records))
        if any(r["fields"].get("Status") == "Qualified" for r in records):
            return LEADS_MAPPING
        return None

    _, result = pull_window(repo, client, run_context(), OVERLAP, check_schema=check_schema)

    assert sum(seen) == 250
    assert (result.inserted, result.quarantined) == (250, 0)
    with engine.connect() as conn:
        assert (
            conn.execute(text("SELECT count(*) FROM leads WHERE status = 'Qualified'")).scalar()
            == 62
        )
