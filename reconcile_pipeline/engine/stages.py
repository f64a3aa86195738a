"""The reconcile stages as the orchestrator runs them, window by window.

Each stage reads through the Airtable port and the repository, calls the pull/push logic and
records its figures in `reconcile.runs` (what the freshness and loop checks read). Nothing here
knows about Dagster; the assets are thin adapters over these functions.
"""

import datetime as dt
import logging
import time
from dataclasses import dataclass, field

from reconcile_pipeline.engine.airtable_port import AirtablePort
from reconcile_pipeline.engine.context import RunContext
from reconcile_pipeline.engine.pull import (
    PullResult,
    apply_records,
    dedupe,
    readable,
    resolve_held_links,
    store_snapshot,
)
from reconcile_pipeline.engine.push import PushResult, push_dirty
from reconcile_pipeline.engine.repository import Repository
from reconcile_pipeline.engine.retry import without_contents

logger = logging.getLogger(__name__)


@dataclass
class FetchResult:
    records: list[dict]
    requests: int
    pages: int
    pull_start: dt.datetime | None  # None: a full pull
    pull_end: dt.datetime
    seconds: float
    repeated_in_pull: int = 0
    quarantinable: int = 0
    notes: list[str] = field(default_factory=list)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def pull_range(
    repo: Repository, run: RunContext, overlap: dt.timedelta
) -> tuple[dt.datetime | None, dt.datetime]:
    """Where this run's pull starts and ends (DESIGN §3.6).

    It starts at the earlier of the window's start and the high-water mark, minus the overlap,
    so a window whose run failed, a scheduler that was down or a skipped tick is covered by the
    next successful run as one query. With no mark yet (a new deployment or table) it is a full
    pull (start None). It ends at the window's end.
    """
    assert run.window_start is not None and run.window_end is not None
    mark = repo.high_water_mark()
    if mark is None:
        return None, run.window_end
    return min(run.window_start, mark) - overlap, run.window_end


def fetch_window(
    repo: Repository,
    airtable: AirtablePort,
    run: RunContext,
    overlap: dt.timedelta,
) -> FetchResult:
    """Pull records created or modified since `pull_range`'s start, persist the snapshot and
    record the interval the pull covers (committed, and the mark advanced, by the merge). One
    filtered query whatever the window's width (a range backfill is one query)."""
    started = time.monotonic()
    started_at = _now()
    before = airtable.requests_sent
    repeats_before = len(airtable.repeated_ids)
    pull_start, pull_end = pull_range(repo, run, overlap)
    # A record edited after the listing began may or may not be in it: the pull covers time up
    # to the listing's start (or the window's end, if earlier), never beyond.
    covered_until = min(pull_end, _now())
    if pull_start is None:
        logger.info("No high-water mark yet for %s: full pull", repo.mapping.name)
        pages_iter = airtable.iter_all(fields=repo.mapping.airtable_field_names)
    else:
        pages_iter = airtable.iter_modified(
            pull_start, pull_end, fields=repo.mapping.airtable_field_names
        )
    records: list[dict] = []
    pages = 0
    for page in pages_iter:
        records.extend(page)
        pages += 1
        if pages % 20 == 0:
            logger.info("Pulled %d records (%d pages) so far", len(records), pages)

    kept, _ = readable(records)
    _, repeats_kept = dedupe(repo, kept)
    # Repeats the client dropped (the listing shifted under pagination) and any it kept.
    repeated_ids = airtable.repeated_ids[repeats_before:]
    repeats = len(repeated_ids) + repeats_kept

    def persist() -> None:
        store_snapshot(repo, records, run)
        if not run.dry_run:
            repo.record_pull(run, pull_start, covered_until)
        stats = {"pulled": len(records), "pages": pages, "repeated_in_pull": repeats}
        repo.record_run("fetch", run, {**stats, "repeated_ids": repeated_ids[:100]}, started_at)

    without_contents("Storing the Airtable snapshot", persist)
    return FetchResult(
        records=records,
        requests=airtable.requests_sent - before,
        pages=pages,
        pull_start=pull_start,
        pull_end=pull_end,
        seconds=time.monotonic() - started,
        repeated_in_pull=repeats,
    )


def merge_snapshot(repo: Repository, run: RunContext) -> PullResult:
    """Stage 1 over the records this run pulled (read back from the persisted snapshot); once
    every batch committed, the pull counts as covered and the high-water mark advances."""
    assert run.run_id is not None
    started_at = _now()

    def merge() -> PullResult:
        with repo.engine.connect() as conn:
            records = repo.snapshot_records(conn, run.run_id)
        result = apply_records(repo, records, run, store_snapshots=False)
        result.links_resolved = resolve_held_links(repo, run)
        if not run.dry_run:
            with repo.reconciler_transaction() as conn:
                result.high_water_mark = repo.commit_pull(conn, run)
        repo.record_run("pull", run, result.counts(), started_at, result.transaction_ids)
        return result

    return without_contents("Stage 1 (merge)", merge)


def push_window(
    repo: Repository, airtable: AirtablePort, run: RunContext, *, lock_name: str
) -> PushResult:
    """Stage 2 for every lead dirty as of the window's end (all of them for a window still in
    progress): a lead whose earlier push failed is never stranded."""
    started_at = _now()
    as_of = run.window_end if run.window_end and run.window_end < started_at else None

    def push() -> PushResult:
        result = push_dirty(repo, airtable, run, lock_name=lock_name, as_of=as_of)
        repo.record_run("push", run, result.counts(), started_at)
        return result

    return without_contents("Stage 2 (push)", push)
