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
from reconcile_pipeline.engine.pull import PullResult, apply_records, dedupe, store_snapshot
from reconcile_pipeline.engine.push import PushResult, push_dirty
from reconcile_pipeline.engine.repository import Repository

logger = logging.getLogger(__name__)


@dataclass
class FetchResult:
    records: list[dict]
    requests: int
    pages: int
    pull_start: dt.datetime
    pull_end: dt.datetime
    seconds: float
    repeated_in_pull: int = 0
    quarantinable: int = 0
    notes: list[str] = field(default_factory=list)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def fetch_window(
    repo: Repository,
    airtable: AirtablePort,
    run: RunContext,
    overlap: dt.timedelta,
) -> FetchResult:
    """Pull records created or modified in [window start − overlap, window end) and persist the
    snapshot. One filtered query whatever the window's width (a range backfill is one query)."""
    assert run.window_start is not None and run.window_end is not None
    started = time.monotonic()
    before = airtable.requests_sent
    pull_start = run.window_start - overlap
    records: list[dict] = []
    pages = 0
    for page in airtable.iter_modified(
        pull_start, run.window_end, fields=repo.mapping.airtable_field_names
    ):
        records.extend(page)
        pages += 1
        if pages % 20 == 0:
            logger.info("Pulled %d records (%d pages) so far", len(records), pages)
    store_snapshot(repo, records, run)
    _, repeats = dedupe(repo, records)
    return FetchResult(
        records=records,
        requests=airtable.requests_sent - before,
        pages=pages,
        pull_start=pull_start,
        pull_end=run.window_end,
        seconds=time.monotonic() - started,
        repeated_in_pull=repeats,
    )


def merge_snapshot(repo: Repository, run: RunContext) -> PullResult:
    """Stage 1 over the records this run pulled (read back from the persisted snapshot)."""
    assert run.run_id is not None
    started_at = _now()
    with repo.engine.connect() as conn:
        records = repo.snapshot_records(conn, run.run_id)
    result = apply_records(repo, records, run, store_snapshots=False)
    repo.record_run("pull", run, result.counts(), started_at)
    return result


def push_window(
    repo: Repository, airtable: AirtablePort, run: RunContext, *, lock_name: str
) -> PushResult:
    """Stage 2 for every lead dirty as of the window's end (all of them for a window still in
    progress): a lead whose earlier push failed is never stranded."""
    started_at = _now()
    as_of = run.window_end if run.window_end and run.window_end < started_at else None
    result = push_dirty(
        repo, airtable, run, lock_name=lock_name, pulled_run_id=run.run_id, as_of=as_of
    )
    repo.record_run("push", run, result.counts(), started_at)
    return result
