"""`reconcile backfill` without --hours/--days ("sync now") reconciles the window holding now,
as the schedule's tick does: one run, reported; a failed run exits 1 with its id and where to
see it.

The clock is fixed with --now (a tick at :45, whose window is :40, 15 minutes after a tick in
the :20 window), so the test does not depend on when it runs.
"""

import dagster as dg
import pytest

from reconcile_pipeline.emulator.server import run_emulator
from reconcile_pipeline_tests.dagster.cli import BASE, TABLE, reconcile_env, run_reconcile_cli

# now - 15 min = 10:30 lies in the 10:20 window, now in the 10:40 window: one run, of the 10:40
# window (its pull starts at the high-water mark, so the 10:20 window's edits are in it).
TICK = "2026-03-02T10:45:00Z"
WINDOWS = ["2026-03-02-10:40"]


@pytest.fixture
def emulator():
    with run_emulator(rate_limit=0) as emulator:
        emulator.seed_records(BASE, TABLE, [{"Email": "a@example.com", "Status": "New"}])
        yield emulator


def runs_by_window(instance: dg.DagsterInstance) -> dict[str, dg.DagsterRun]:
    return {run.tags["dagster/partition"]: run for run in instance.get_runs()}


def test_without_hours_the_tick_s_own_window_runs_once_and_is_reported(
    tmp_path, emulator, database_url, project_dagster_database
):
    env = reconcile_env(tmp_path / "home", database_url, emulator.url, emulator.token)

    done = run_reconcile_cli(["backfill", "--now", TICK], env)

    assert done.returncode == 0, done.stdout + done.stderr
    with dg.DagsterInstance.get() as instance:
        runs = runs_by_window(instance)
    assert sorted(runs) == WINDOWS
    for window, run in runs.items():
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert f"Window {window}: run {run.run_id} succeeded" in done.stdout
    assert "Traceback" not in done.stderr


def test_a_failed_run_exits_1_with_its_id_error_and_where_to_see_it(
    tmp_path, emulator, database_url, project_dagster_database
):
    env = reconcile_env(
        tmp_path / "home",
        database_url,
        emulator.url,
        "patNotTheRightToken.0",  # every run fails: Airtable answers 401
    )

    done = run_reconcile_cli(["backfill", "--now", TICK], env)

    assert done.returncode == 1, done.stdout + done.stderr
    with dg.DagsterInstance.get() as instance:
        runs = runs_by_window(instance)
    assert sorted(runs) == WINDOWS
    for window, run in runs.items():
        assert run.status == dg.DagsterRunStatus.FAILURE
        assert f"Window {window}: run {run.run_id} FAILED" in done.stdout
        assert f"See run {run.run_id} in the Dagster UI: `reconcile ui`" in done.stdout
    assert "set AIRTABLE_API_KEY to a valid personal access token" in done.stdout
    assert "patNotTheRightToken" not in done.stdout + done.stderr
