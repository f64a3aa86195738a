"""The reconcile stages as the orchestrator runs them, window by window.

Each stage reads through the Airtable port and the repository, calls the pull/push logic and
records its figures in `reconcile.runs` (what the freshness and loop checks read). Nothing here
knows about Dagster; the assets are thin adapters over these functions.
"""

import datetime as dt
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType

from reconcile_pipeline.engine.airtable_port import AirtablePort
from reconcile_pipeline.engine.context import RunContext
from reconcile_pipeline.engine.mapping import TableMapping
from reconcile_pipeline.engine.pull import (
    PullResult,
    StreamedMerge,
    resolve_held_links,
    store_snapshot,
)
from reconcile_pipeline.engine.push import PushResult, push_dirty
from reconcile_pipeline.engine.repository import Repository
from reconcile_pipeline.engine.retry import without_contents

logger = logging.getLogger(__name__)

# The streamed pull merges the pages that have arrived, at most this many at a time: at 5
# requests/s a burst of pages is merged during the pacer's pause that follows it, so after the
# last page only its burst's merge and the commit remain.
STREAM_BATCH_PAGES = 5
# Pages arriving within this of each other belong to one burst of the paced listing (at 5
# requests/s, five pages a few milliseconds apart, then a pause of most of a second): the merge
# waits for the burst's last page, or this long, before it starts. Merging a burst's first
# page while the rest were requested slowed those requests (the merge holds the interpreter);
# the run waits on the last burst's: at 10k records its five pages took 81 ms instead of 22,
# and the listing 0.25 s beyond its pacing floor instead of 0.18.
BURST_GAP_SECONDS = 0.05

# Given a part of the pull's raw records before they are converted: the mapping to convert it
# and the rest of the pull with when the part holds what the cached schema does not know (a new
# field or select option, the schema re-read), or None to keep the current one.
SchemaCheck = Callable[[list[dict]], TableMapping | None]


@dataclass
class FetchResult:
    records: list[dict]
    requests: int
    pages: int
    pull_start: dt.datetime | None  # None: a full pull
    pull_end: dt.datetime
    seconds: float
    repeated_in_pull: int = 0


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


@dataclass
class _Listing:
    """One run's Airtable listing: its range, the pages the client returns, and its figures."""

    repo: Repository
    airtable: AirtablePort
    run: RunContext
    pull_start: dt.datetime | None
    pull_end: dt.datetime
    # A record edited after the listing began may or may not be in it: the pull covers time up
    # to the listing's start (or the window's end, if earlier), never beyond.
    covered_until: dt.datetime
    requests_before: int
    repeats_before: int
    started: float
    started_at: dt.datetime
    records: list[dict] = field(default_factory=list)
    pages: int = 0

    @classmethod
    def start(
        cls, repo: Repository, airtable: AirtablePort, run: RunContext, overlap: dt.timedelta
    ) -> "_Listing":
        started, started_at = time.monotonic(), _now()
        pull_start, pull_end = pull_range(repo, run, overlap)
        return cls(
            repo,
            airtable,
            run,
            pull_start,
            pull_end,
            covered_until=min(pull_end, _now()),
            requests_before=airtable.requests_sent,
            repeats_before=len(airtable.repeated_ids),
            started=started,
            started_at=started_at,
        )

    def pages_iter(self) -> Iterator[list[dict]]:
        """The filtered query (one whatever the window's width), or every record without a
        high-water mark."""
        fields = self.repo.mapping.airtable_field_names
        if self.pull_start is None:
            logger.info("No high-water mark yet for %s: full pull", self.repo.mapping.name)
            return self.airtable.iter_all(fields=fields)
        return self.airtable.iter_modified(self.pull_start, self.pull_end, fields=fields)

    def took(self, page: list[dict]) -> None:
        self.records.extend(page)
        self.pages += 1
        if self.pages % 20 == 0:
            logger.info("Pulled %d records (%d pages) so far", len(self.records), self.pages)

    def finish(self, repeats_kept: int) -> FetchResult:
        """Record the interval the listing covered (committed, and the mark advanced, by the
        merge) and the fetch's figures; `repeats_kept` are the repeats the client passed on."""
        repeated_ids = self.airtable.repeated_ids[self.repeats_before :]
        # Repeats the client dropped (the listing shifted under pagination) and any it kept.
        repeats = len(repeated_ids) + repeats_kept
        if not self.run.dry_run:
            self.repo.record_pull(self.run, self.pull_start, self.covered_until)
        stats = {"pulled": len(self.records), "pages": self.pages, "repeated_in_pull": repeats}
        self.repo.record_run(
            "fetch", self.run, {**stats, "repeated_ids": repeated_ids[:100]}, self.started_at
        )
        return FetchResult(
            records=self.records,
            requests=self.airtable.requests_sent - self.requests_before,
            pages=self.pages,
            pull_start=self.pull_start,
            pull_end=self.pull_end,
            seconds=time.monotonic() - self.started,
            repeated_in_pull=repeats,
        )


def _commit_merge(
    repo: Repository, run: RunContext, result: PullResult, started_at: dt.datetime
) -> PullResult:
    """After every batch of the pull merged: held links whose record arrived are resolved, the
    pull counts as covered and the high-water mark advances (not in a dry run), and the stage's
    figures are recorded."""
    result.links_resolved = resolve_held_links(repo, run)
    if not run.dry_run:
        with repo.reconciler_transaction() as conn:
            result.high_water_mark = repo.commit_pull(conn, run)
    repo.record_run("pull", run, result.counts(), started_at, result.transaction_ids)
    return result


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


class PageStream:
    """The pages of a (paced) listing, fetched by a thread of their own into a bounded queue
    while the caller works on the pages already here.

    An error of the listing reaches the caller, with its own type, when it takes the next
    batch; leaving the block early (the caller failed) stops the listing after the request in
    flight and waits for its thread.
    """

    def __init__(
        self,
        pages: Iterator[list[dict]],
        batch_pages: int,
        burst_gap_seconds: float = BURST_GAP_SECONDS,
    ) -> None:
        self._pages = pages
        self._batch_pages = batch_pages
        self._burst_gap_seconds = burst_gap_seconds
        self._queue: queue.Queue = queue.Queue(maxsize=2 * batch_pages)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="airtable-listing", daemon=True)

    def __enter__(self) -> "PageStream":
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _put(self, item: object) -> bool:
        """Queue `item` unless the caller stopped the stream (then False)."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for page in self._pages:
                if not self._put(page):
                    return
            self._put(_END)
        except BaseException as error:  # noqa: BLE001 — handed to the caller's thread as is
            self._put(_Failed(error))
        finally:
            close = getattr(self._pages, "close", None)
            if close is not None:
                close()

    def batches(self) -> Iterator[list[list[dict]]]:
        """Batches of the pages that have arrived (waiting for one when none has), at most
        `batch_pages` each, until the listing ends. A batch takes the pages that follow its
        first within the burst gap (`BURST_GAP_SECONDS`) of each other: a paced burst is
        merged whole, after its requests."""
        while True:
            batch: list[list[dict]] = []
            item = self._queue.get()
            while True:
                if isinstance(item, _Failed):
                    raise item.error
                if item is _END:
                    if batch:
                        yield batch
                    return
                batch.append(item)
                if len(batch) == self._batch_pages:
                    break
                try:
                    item = self._queue.get(timeout=self._burst_gap_seconds)
                except queue.Empty:
                    break
            yield batch


def pull_window(
    repo: Repository,
    airtable: AirtablePort,
    run: RunContext,
    overlap: dt.timedelta,
    *,
    check_schema: SchemaCheck | None = None,
    batch_pages: int = STREAM_BATCH_PAGES,
) -> tuple[FetchResult, PullResult]:
    """Stage 1 for one window: list the records created or modified since `pull_range`'s
    start (one filtered query whatever the window's width: a range backfill is one query; every
    record without a high-water mark) and merge them. The listing runs in a thread of its own
    while this one stores and merges the pages that have arrived, at most `batch_pages` at a
    time, each record converted once and nothing read back from the snapshot.

    The outcome does not depend on the batching, and neither does the bookkeeping: the
    snapshot, the `fetch` and `pull` rows of `reconcile.runs`, the coverage recorded and the
    high-water mark advanced only once the listing finished and every batch committed (never
    in a dry run, whose merge writes nothing). A failure halfway (an Airtable error on a later
    page, a database error, a killed process) leaves the mark where it was: the next run pulls
    the same range again and its merge of the batches already merged changes nothing.
    `check_schema` sees each batch before it is converted (see `SchemaCheck`).
    """
    listing = _Listing.start(repo, airtable, run, overlap)

    def pull() -> tuple[FetchResult, PullResult]:
        merge = StreamedMerge(repo, run)
        with PageStream(listing.pages_iter(), batch_pages) as stream:
            for batch in stream.batches():
                records = [record for page in batch for record in page]
                for page in batch:
                    listing.took(page)
                if check_schema is not None and (mapping := check_schema(records)) is not None:
                    merge.repo = Repository(repo.engine, mapping)
                store_snapshot(merge.repo, records, run)
                merge.add(records)
        result = merge.finish()
        fetched = listing.finish(result.duplicates_in_pull)
        return fetched, _commit_merge(merge.repo, run, result, listing.started_at)

    return without_contents("Stage 1 (streamed pull)", pull)


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
