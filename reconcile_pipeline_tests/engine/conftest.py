"""Fixtures for end-to-end engine tests: the emulator over real HTTP, the real client, and a
`reconcile()` helper that runs stage 1 and stage 2 exactly as a Dagster run does."""

import datetime as dt
import uuid
from collections.abc import Iterator

import pytest

from reconcile_pipeline.airtable.client import AirtableClient
from reconcile_pipeline.emulator.server import run_emulator
from reconcile_pipeline.engine.context import RunContext
from reconcile_pipeline.engine.repository import Repository
from reconcile_pipeline.engine.stages import pull_window, push_window
from reconcile_pipeline_tests.mappings import LEADS_MAPPING

BASE = "appDemoLeads00001"
TABLE = "Leads"


@pytest.fixture
def emulator() -> Iterator:
    with run_emulator(rate_limit=0, penalty_seconds=1.0) as emulator:
        yield emulator


@pytest.fixture
def client(emulator) -> Iterator[AirtableClient]:
    client = AirtableClient(
        token=emulator.token,
        base_id=BASE,
        table=TABLE,
        endpoint_url=emulator.url,
        requests_per_second=0,
        backoff_factor=0.05,
        backoff_max_seconds=1.5,
        max_retries=6,
    )
    yield client
    client.close()


@pytest.fixture
def repo(engine) -> Repository:
    repo = Repository(engine, LEADS_MAPPING)
    repo.register_tracked_columns()
    return repo


class Reconciler:
    """Runs one reconcile (pull the recent window, merge, push) like the Dagster job."""

    def __init__(self, repo: Repository, client: AirtableClient) -> None:
        self.repo, self.client = repo, client

    def __call__(self, dry_run: bool = False, after_read=None, after_pull=None):
        now = dt.datetime.now(dt.UTC)
        run = RunContext(
            run_id=f"test-{uuid.uuid4().hex[:8]}",
            window_start=now - dt.timedelta(hours=2),
            window_end=now + dt.timedelta(minutes=20),
            dry_run=dry_run,
        )
        _, pull = pull_window(self.repo, self.client, run, overlap=dt.timedelta(minutes=5))
        if after_pull is not None:
            after_pull()
        if after_read is not None:
            from reconcile_pipeline.engine.push import push_dirty

            push = push_dirty(self.repo, self.client, run, lock_name="test", after_read=after_read)
        else:
            push = push_window(self.repo, self.client, run, lock_name="test")
        return pull, push


@pytest.fixture
def reconcile(repo, client) -> Reconciler:
    return Reconciler(repo, client)
