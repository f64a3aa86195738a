"""The 15-minute schedule requests one run per tick: the window containing the tick (its pull
starts at the high-water mark, so it covers tick - 15 min too: one Airtable listing per table
per tick), and every window is some tick's own.

Evaluated through the real schedule definition (the demo client's), inside Definitions with a
stand-in for the client's reconcile job on the real partitions, so Dagster itself resolves every
requested partition key as of the tick, as the daemon does: it raises for an unknown key, which
the window still in progress at the tick would be without `end_offset=1`.
"""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from reconcile_pipeline.config.load import CONFIG_ENV, DEMO_FILE
from reconcile_pipeline.defs import project
from reconcile_pipeline.defs.assets import build_client_assets
from reconcile_pipeline.defs.jobs import build_client_jobs, client_jobs
from reconcile_pipeline.defs.naming import BASE_TAG, reconcile_job_name, reconcile_schedule_name
from reconcile_pipeline.defs.partitions import reconcile_windows
from reconcile_pipeline.defs.schedules import windows_to_request

DEMO_CLIENT, DEMO_BASE = "demo", "appDemoLeads00001"
# The code location's schedule of the demo client (the project file read at import).
reconcile_schedule = client_jobs[DEMO_CLIENT].schedules[0]


@dg.asset(partitions_def=reconcile_windows)
def stand_in_window() -> None:
    """Stands in for the reconcile assets: only the partitions matter here."""


def repository(schedule: dg.ScheduleDefinition) -> dg.RepositoryDefinition:
    job = dg.define_asset_job(
        reconcile_job_name(DEMO_CLIENT),
        selection=[stand_in_window],
        partitions_def=reconcile_windows,
    )
    defs = dg.Definitions(assets=[stand_in_window], jobs=[job], schedules=[schedule])
    return defs.get_repository_def()


def reloaded_schedule() -> dg.ScheduleDefinition:
    """The demo client's schedule as a code location loading the project file now builds it
    (the file is read once per load: the jobs and schedules take its client's tags)."""
    project.project.cache_clear()
    project.clients.cache_clear()
    [spec] = project.clients()
    assert spec.key == DEMO_CLIENT
    return build_client_jobs(spec, build_client_assets(spec)).schedules[0]


@pytest.fixture
def fresh_project_file() -> Iterator[None]:
    """The project file is read again by the test (and again after it, for the next test)."""
    try:
        yield
    finally:
        project.project.cache_clear()
        project.clients.cache_clear()


def evaluate(
    tick: datetime, schedule: dg.ScheduleDefinition = reconcile_schedule
) -> list[dg.RunRequest]:
    context = dg.build_schedule_context(
        scheduled_execution_time=tick, repository_def=repository(schedule)
    )
    data = schedule.evaluate_tick(context)
    assert data.skip_message is None
    return list(data.run_requests or [])


def windows_of(request: dg.RunRequest) -> list[str]:
    """The partition keys a run request covers: its partition, or every key of its range."""
    if request.partition_key is not None:
        return [request.partition_key]
    start = request.tags["dagster/asset_partition_range_start"]
    end = request.tags["dagster/asset_partition_range_end"]
    return reconcile_windows.get_partition_keys_in_range(dg.PartitionKeyRange(start, end))


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
    tick: datetime,
    windows: list[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path,
    fresh_project_file: None,
) -> None:
    own = tmp_path / "reconcile.yaml"
    own.write_text(DEMO_FILE.read_text().replace(DEMO_BASE, "appTestBase000042"))
    monkeypatch.setenv(CONFIG_ENV, str(own))

    requests = evaluate(tick, reloaded_schedule())

    keys = [f"2026-03-02-{window}" for window in windows]
    assert windows_to_request(tick) == keys  # the time since the previous tick
    [request] = requests  # one run per tick: the tick's own window (a single partition)
    assert request.partition_key == keys[-1]
    assert windows_of(request) == [keys[-1]]
    # The run key names the window and the tick.
    assert request.run_key == f"{keys[-1]}@{tick.isoformat()}"
    assert request.tags[BASE_TAG] == "appTestBase000042"


def test_every_window_of_a_day_is_some_tick_s_own() -> None:
    ticks = [utc(0, 0) + timedelta(minutes=15 * i) for i in range(24 * 4)]
    requested = {r.partition_key for tick in ticks for r in evaluate(tick)}

    day = reconcile_windows.get_partition_keys_in_range(
        dg.PartitionKeyRange("2026-03-02-00:00", "2026-03-02-23:40")
    )
    assert requested == set(day)


def test_consecutive_ticks_requesting_one_window_have_distinct_run_keys() -> None:
    # Dagster drops a run request whose run key it has seen: the window must run again.
    first = evaluate(utc(10, 0))
    second = evaluate(utc(10, 15))

    [shared] = {k for r in first for k in windows_of(r)} & {
        k for r in second for k in windows_of(r)
    }
    assert shared == "2026-03-02-10:00"
    assert {r.run_key for r in first}.isdisjoint({r.run_key for r in second})


def test_without_a_project_file_runs_are_tagged_with_the_demo_base(
    monkeypatch: pytest.MonkeyPatch, tmp_path, fresh_project_file: None
) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # no ./reconcile.yaml: the demo's file

    requests = evaluate(utc(10, 20), reloaded_schedule())

    assert {r.tags[BASE_TAG] for r in requests} == {DEMO_BASE}


def test_windows_before_the_first_partition_are_not_requested() -> None:
    # The first tick after the partitions start: tick - 15 min has no partition.
    start = datetime(2026, 1, 1, tzinfo=UTC)

    assert windows_to_request(start, first_window_start=start) == ["2026-01-01-00:00"]


def test_the_schedule_runs_every_15_minutes_in_utc_on_the_reconcile_job() -> None:
    assert reconcile_schedule.cron_schedule == "*/15 * * * *"
    assert reconcile_schedule.execution_timezone == "UTC"
    assert reconcile_schedule.name == reconcile_schedule_name(DEMO_CLIENT)
    assert reconcile_schedule.job_name == reconcile_job_name(DEMO_CLIENT)
    assert reconcile_schedule.default_status == dg.DefaultScheduleStatus.RUNNING
