"""The 15-minute schedule requests the windows containing the tick and tick - 15 min.

Evaluated through the real schedule definition, inside Definitions with a stand-in
`reconcile_job` on the real partitions, so Dagster itself resolves every requested partition key
as of the tick, as the daemon does: it raises for an unknown key, which the window still in
progress at the tick would be without `end_offset=1`.
"""

from datetime import UTC, datetime

import dagster as dg
import pytest

from reconcile_pipeline.config.load import CONFIG_ENV, DEMO_FILE
from reconcile_pipeline.defs import project
from reconcile_pipeline.defs.partitions import reconcile_windows
from reconcile_pipeline.defs.schedules import (
    BASE_TAG,
    DEFAULT_BASE_ID,
    RECONCILE_JOB_NAME,
    reconcile_schedule,
    windows_to_request,
)


@dg.asset(partitions_def=reconcile_windows)
def stand_in_window() -> None:
    """Stands in for the reconcile assets: only the partitions matter here."""


def repository() -> dg.RepositoryDefinition:
    job = dg.define_asset_job(
        RECONCILE_JOB_NAME, selection=[stand_in_window], partitions_def=reconcile_windows
    )
    defs = dg.Definitions(assets=[stand_in_window], jobs=[job], schedules=[reconcile_schedule])
    return defs.get_repository_def()


def evaluate(tick: datetime) -> list[dg.RunRequest]:
    context = dg.build_schedule_context(scheduled_execution_time=tick, repository_def=repository())
    data = reconcile_schedule.evaluate_tick(context)
    assert data.skip_message is None
    return list(data.run_requests or [])


def utc(hour: int, minute: int) -> datetime:
    return datetime(2026, 3, 2, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("tick", "windows"),
    [
        # On a window boundary: the new window and the whole previous one (09:45 is in 09:40).
        (utc(10, 0), ["09:40", "10:00"]),
        # 09:50 is still in the 09:40 window, which closed after the previous tick at 09:45.
        (utc(10, 5), ["09:40", "10:00"]),
        # 10:00 and 10:15 share a window: requested once.
        (utc(10, 15), ["10:00"]),
        (utc(10, 20), ["10:00", "10:20"]),
        # 10:20 and 10:35 share a window.
        (utc(10, 35), ["10:20"]),
        # 10:30 is in the 10:20 window.
        (utc(10, 45), ["10:20", "10:40"]),
    ],
)
def test_each_tick_requests_the_windows_of_tick_and_tick_minus_15_min(
    tick: datetime, windows: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    own = tmp_path / "reconcile.yaml"
    own.write_text(DEMO_FILE.read_text().replace("appDemoLeads00001", "appTestBase000042"))
    monkeypatch.setenv(CONFIG_ENV, str(own))
    project.project.cache_clear()
    try:
        requests = evaluate(tick)
    finally:
        project.project.cache_clear()

    keys = [f"2026-03-02-{window}" for window in windows]
    assert [request.partition_key for request in requests] == keys
    tick_iso = tick.isoformat()
    assert [request.run_key for request in requests] == [f"{key}@{tick_iso}" for key in keys]
    for request in requests:
        assert request.tags[BASE_TAG] == "appTestBase000042"


def test_consecutive_ticks_requesting_one_window_have_distinct_run_keys() -> None:
    # Dagster drops a run request whose run key it has seen: the window must run again.
    first = evaluate(utc(10, 0))
    second = evaluate(utc(10, 15))

    [shared] = {r.partition_key for r in first} & {r.partition_key for r in second}
    assert shared == "2026-03-02-10:00"
    assert {r.run_key for r in first}.isdisjoint({r.run_key for r in second})


def test_without_a_project_file_runs_are_tagged_with_the_demo_base(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # no ./reconcile.yaml: the demo's file
    project.project.cache_clear()
    try:
        requests = evaluate(utc(10, 20))
    finally:
        project.project.cache_clear()

    assert {r.tags[BASE_TAG] for r in requests} == {DEFAULT_BASE_ID}


def test_windows_before_the_first_partition_are_not_requested() -> None:
    # The first tick after the partitions start: tick - 15 min has no partition.
    start = datetime(2026, 1, 1, tzinfo=UTC)

    assert windows_to_request(start, first_window_start=start) == ["2026-01-01-00:00"]


def test_the_schedule_runs_every_15_minutes_in_utc_on_the_reconcile_job() -> None:
    assert reconcile_schedule.cron_schedule == "*/15 * * * *"
    assert reconcile_schedule.execution_timezone == "UTC"
    assert reconcile_schedule.job_name == RECONCILE_JOB_NAME
    assert reconcile_schedule.default_status == dg.DefaultScheduleStatus.RUNNING
