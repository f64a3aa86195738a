"""Airtable allows 50 requests/s per token owner across all bases and each run paces itself at 5
per base, so the run queue starts at most ten runs of one token at once (dagster.yaml's
`reconcile/token` tag limit), and one run per base; clients on another token are not held back.
Checked with the queued-run daemon's own selection step on the project's instance settings."""

from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.remote_origin import (
    RegisteredCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)

from reconcile_pipeline.config.load import DEMO_FILE, load
from reconcile_pipeline.defs.location import build_definitions
from reconcile_pipeline.defs.naming import TOKEN_TAG, delete_sweep_job_name
from reconcile_pipeline.defs.project import specs_of

# More runs than the token's limit, on more bases than the limit, under a run cap high enough that
# the token's limit is what holds them back.
SHARED_TOKEN_CLIENTS = 12
OTHER_TOKEN_CLIENTS = 2


def many_clients_file(path: Path) -> Path:
    """Clients of the demo's leads table: 12 behind one token, 2 behind another."""
    demo = yaml.safe_load(DEMO_FILE.read_text(encoding="utf-8"))
    leads = demo["clients"]["demo"]["tables"]["leads"]
    leads["fields"] = {
        k: v
        for k, v in leads["fields"].items()
        if v["type"] != "link" and v["column"] != "client_id"
    }
    leads["postgres"]["client_column"] = "client_id"
    clients = {}
    for i in range(SHARED_TOKEN_CLIENTS + OTHER_TOKEN_CLIENTS):
        clients[f"client_{i:02d}"] = {
            "base_id": f"appClient{i:08d}",
            "token_env": "SHARED_TOKEN" if i < SHARED_TOKEN_CLIENTS else "OTHER_TOKEN",
            "tables": {"leads": leads},
        }
    path.write_text(yaml.safe_dump({"version": 1, "clients": clients}), encoding="utf-8")
    return path


@pytest.fixture
def instance(project_dagster_database, tmp_path, monkeypatch) -> dg.DagsterInstance:
    """The project's instance settings, the run cap raised above the token's limit."""
    home = Path(dg.DagsterInstance.get().root_directory)
    settings = yaml.safe_load((home / "dagster.yaml").read_text(encoding="utf-8"))
    settings["concurrency"]["runs"]["max_concurrent_runs"] = 100
    (home / "dagster.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")
    monkeypatch.setenv("DATABASE_URL", project_dagster_database)
    monkeypatch.setenv("SHARED_TOKEN", "not-used")
    monkeypatch.setenv("OTHER_TOKEN", "not-used")
    with dg.DagsterInstance.get() as instance:
        yield instance


def sweep_jobs(path: Path) -> dict[str, dg.JobDefinition]:
    project = load(path)
    specs = specs_of(project)
    defs = build_definitions(specs)
    return {spec.key: defs.resolve_job_def(delete_sweep_job_name(spec.key)) for spec in specs}


def create_run(
    instance: dg.DagsterInstance, job: dg.JobDefinition, status: DagsterRunStatus
) -> dg.DagsterRun:
    """A run of `job` as a schedule or the launchpad leaves it (with the job's tags)."""
    origin = RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(
            code_location_origin=RegisteredCodeLocationOrigin("reconcile_pipeline"),
            repository_name="__repository__",
        ),
        job_name=job.name,
    )
    return instance.create_run_for_job(job, status=status, remote_job_origin=origin, tags=job.tags)


def runs_the_daemon_would_start(instance: dg.DagsterInstance) -> set[str]:
    # The daemon's own selection step (limits, tags, pools), without launching anything.
    with QueuedRunCoordinatorDaemon(interval_seconds=1) as daemon:
        runs = daemon._get_runs_to_dequeue(instance, instance.get_concurrency_config(), None)
    return {run.run_id for run in runs}


def test_at_most_ten_bases_of_one_token_start_and_another_token_is_not_held_back(
    instance, tmp_path
):
    jobs = list(sweep_jobs(many_clients_file(tmp_path / "reconcile.yaml")).values())
    shared, other = jobs[:SHARED_TOKEN_CLIENTS], jobs[SHARED_TOKEN_CLIENTS:]
    assert {job.tags[TOKEN_TAG] for job in shared} == {"SHARED_TOKEN"}

    queued = [create_run(instance, job, DagsterRunStatus.QUEUED) for job in shared + other]
    first_pass = runs_the_daemon_would_start(instance)
    assert sum(run.run_id in first_pass for run in queued[:SHARED_TOKEN_CLIENTS]) == 10
    assert all(run.run_id in first_pass for run in queued[SHARED_TOKEN_CLIENTS:])

    # Ten bases of the shared token running: its other bases wait, the other token's do not.
    for run in queued:
        instance.delete_run(run.run_id)
    running = [create_run(instance, job, DagsterRunStatus.STARTED) for job in shared[:10]]
    waiting = [create_run(instance, job, DagsterRunStatus.QUEUED) for job in shared[10:]]
    elsewhere = [create_run(instance, job, DagsterRunStatus.QUEUED) for job in other]
    assert runs_the_daemon_would_start(instance) == {run.run_id for run in elsewhere}

    # One finishes: one of the waiting bases takes its slot.
    instance.report_run_canceled(running[0])
    started = runs_the_daemon_would_start(instance)
    assert len(started & {run.run_id for run in waiting}) == 1
