"""`reconcile backfill` ("sync now") brings a database behind the shipped schema to head before
it runs, as it always did, although a database already at head is no longer handed to Alembic."""

import dagster as dg
import pytest
from sqlalchemy import create_engine

from reconcile_pipeline.db.migrate import current_revision, head_revision
from reconcile_pipeline.emulator.server import run_emulator
from reconcile_pipeline_tests.dagster.cli import BASE, TABLE, reconcile_env, run_reconcile_cli
from reconcile_pipeline_tests.foundation.test_migrations import _upgrade_to

TICK = "2026-03-02T10:45:00Z"


@pytest.fixture
def emulator():
    with run_emulator(rate_limit=0) as emulator:
        emulator.seed_records(BASE, TABLE, [{"Email": "a@example.com", "Status": "New"}])
        yield emulator


def test_sync_now_upgrades_a_database_one_revision_behind_then_runs(
    tmp_path, emulator, empty_database_url, project_dagster_database
):
    engine = create_engine(empty_database_url)
    _upgrade_to(engine, "0005_clients", legacy_client="demo")  # as the CLI did, for the demo
    assert current_revision(engine) != head_revision()
    env = reconcile_env(tmp_path / "home", empty_database_url, emulator.url, emulator.token)

    done = run_reconcile_cli(["backfill", "--now", TICK], env)

    assert done.returncode == 0, done.stdout + done.stderr
    assert current_revision(engine) == head_revision()
    engine.dispose()
    with dg.DagsterInstance.get() as instance:
        (run,) = instance.get_runs()
    assert run.status == dg.DagsterRunStatus.SUCCESS
