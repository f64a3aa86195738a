"""Benchmark (issue 13, the scale run): many clients behind one Airtable token, one deployment.

20 clients of 2,000 leads each (`--clients`, `--leads`), one project file, one code location;
every client's base is a copy of the demo base in the emulator (5 requests/s per base, 50 per
token owner: all clients share ONE token, the worst case), and every client syncs the same
portal table public.leads, its rows told apart by `client_id`. One run of each client's
`reconcile_<client>` job (the window containing now) is submitted to the instance's
QueuedRunCoordinator; a `dagster-daemon run` subprocess dequeues them under dagster.yaml's limits
(one run per base, ten per token) and the DefaultRunLauncher starts each in its own process.

Prints the aggregate Airtable requests/s during the busy period (first to last request) against
the floor min(clients × 5, 50) req/s, the total requests and 429s, each base's and the token's
most requests in any one second (emulator request log), runs succeeded/failed, wall time, the
most runs running at once (run records) against the token limit, and the cross-client writes
found in the portal table and the bookkeeping. Exits non-zero on any 429, cross-client write,
failed or unfinished run.

Everything lives in a temporary RECONCILE_HOME (embedded PostgreSQL, DAGSTER_HOME): the user's
data and instance are never touched.

Run: .venv/bin/python benchmarks/many_clients.py [--clients 20 --leads 2000]
"""

import argparse
import contextlib
import copy
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from many_clients_figures import (
    PER_BASE_RATE,
    PER_TOKEN_RATE,
    Outcome,
    cross_client_writes,
    report,
    run_errors,
    run_phases,
    tail,
)
from sqlalchemy import create_engine

from reconcile_pipeline.config.load import CONFIG_ENV, DEMO_FILE, load
from reconcile_pipeline.db.embedded import EmbeddedPostgres
from reconcile_pipeline.demo.seed_data import demo_leads
from reconcile_pipeline.emulator.server import run_emulator
from reconcile_pipeline.instance import PROJECT_ROOT, instance_yaml

TEMPLATE_BASE = "appDemoLeads00001"
TABLE_NAME = "Leads"
TOKEN_ENV = "AIRTABLE_API_KEY"
LOCATION = "reconcile_pipeline"
# Fields of the demo's leads declaration left out: the link to campaigns (a table these clients
# do not sync) and "Client ID" (the sync fills client_id from the client's declaration).
DROPPED_FIELDS = ("fld7c3e9a1d5b6f20", "flda766cd7ff02c32")
# Variables that could point the benchmark at the user's own databases, instance or base.
CLEARED_ENV = (
    "DATABASE_URL",
    "DAGSTER_POSTGRES_URL",
    "DAGSTER_HOME",
    "AIRTABLE_ENDPOINT_URL",
    "RECONCILE_PARTITIONS_START",
    "RECONCILE_ALERT_WEBHOOK_URL",
    "RECONCILE_SLACK_TOKEN",
)


@dataclass(frozen=True)
class Client:
    key: str
    base_id: str
    table_id: str
    record_ids: tuple[str, ...]


# ----- setup ------------------------------------------------------------------------------------


def client_key(n: int) -> str:
    return f"client_{n:02d}"


def base_id_of(n: int) -> str:
    return f"appManyClients{n:03d}"  # app + 14 letters or digits


def add_clients(emulator, count: int, leads: int, now: dt.datetime) -> list[Client]:
    """A copy of the demo base per client, seeded with its leads (deterministic per client)."""
    clients = []
    for n in range(1, count + 1):
        key, base_id = client_key(n), base_id_of(n)
        meta = emulator.add_base(base_id, name=f"Many clients {key}", like=TEMPLATE_BASE)
        table_id = next(t["id"] for t in meta["tables"] if t["name"] == TABLE_NAME)
        fields, created, modified = demo_leads(leads, now, seed=n)
        for i, record in enumerate(fields):
            record["Email"] = f"{key}.{i}@example.com"
            record["Client ID"] = key
        ids = emulator.seed_records(
            base_id, TABLE_NAME, fields, created_time=created, modified_time=modified
        )
        clients.append(Client(key, base_id, table_id, tuple(ids)))
    return clients


def project_file(clients: Sequence[Client], path: Path) -> Path:
    """Every client with the demo's `leads` declaration, all on public.leads (client_id)."""
    demo = yaml.safe_load(DEMO_FILE.read_text(encoding="utf-8"))
    leads = demo["clients"]["demo"]["tables"]["leads"]
    for field_id in DROPPED_FIELDS:
        leads["fields"].pop(field_id)
        leads["ignored_fields"].append(field_id)
    leads["postgres"]["client_column"] = "client_id"
    declared = {}
    for client in clients:
        table = copy.deepcopy(leads)
        table["airtable_table"] = client.table_id
        declared[client.key] = {
            "name": f"Scale run {client.key}",
            "base_id": client.base_id,
            "token_env": TOKEN_ENV,
            "tables": {"leads": table},
        }
    path.write_text(yaml.safe_dump({"version": 1, "clients": declared}, sort_keys=False))
    return path


def prepare_database(app_url: str, config: Path) -> None:
    """What `reconcile db upgrade` does: migrations, then each client's capture trigger."""
    from reconcile_pipeline.config.install import install_capture, project_mappings
    from reconcile_pipeline.db.migrate import upgrade

    engine = create_engine(app_url)
    try:
        upgrade(engine)
        report = install_capture(engine, project_mappings(load(config)))
        if not report.ok:
            raise RuntimeError("change capture not installed:\n" + "\n".join(report.lines()))
    finally:
        engine.dispose()


def dagster_home(home: Path, dequeue_workers: int = 0) -> tuple[Path, Path]:
    """DAGSTER_HOME with the project's dagster.yaml, and a workspace.yaml naming the module.

    `dequeue_workers` > 0 (an experiment, off by default): the copy's queued run coordinator
    launches runs from that many threads instead of one after another."""
    dagster = home / "dagster_home"
    dagster.mkdir()
    shutil.copyfile(instance_yaml(), dagster / "dagster.yaml")
    if dequeue_workers > 0:
        settings = yaml.safe_load((dagster / "dagster.yaml").read_text())
        settings["run_coordinator"]["config"] = {
            "dequeue_use_threads": True,
            "dequeue_num_workers": dequeue_workers,
        }
        (dagster / "dagster.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    workspace = home / "workspace.yaml"
    location = {
        "module_name": "reconcile_pipeline.definitions",
        "location_name": LOCATION,
        "working_directory": str(PROJECT_ROOT),
        "executable_path": sys.executable,
    }
    workspace.write_text(yaml.safe_dump({"load_from": [{"python_module": location}]}))
    return dagster, workspace


# ----- the queue --------------------------------------------------------------------------------


def create_runs(instance, workspace_context, clients: Sequence[Client], partition: str) -> list:
    """One NOT_STARTED run per client of its reconcile job, built from the code location as
    `dagster job launch` and the launchpad build them (snapshots, plan, origins)."""
    from dagster._core.definitions.selector import JobSubsetSelector

    from reconcile_pipeline.defs.naming import reconcile_job_name, run_tags

    context = workspace_context.create_request_context()
    location = context.get_code_location(LOCATION)
    (repository,) = location.get_repositories().values()
    runs = []
    for client in clients:
        selector = JobSubsetSelector(
            location_name=LOCATION,
            repository_name=repository.name,
            job_name=reconcile_job_name(client.key),
            op_selection=None,
        )
        remote_job = location.get_job(selector)
        plan = location.get_execution_plan(
            remote_job, {}, step_keys_to_execute=None, known_state=None, instance=instance
        ).execution_plan_snapshot
        tags = {
            **remote_job.tags,
            **run_tags(client.key, client.base_id, TOKEN_ENV),
            "dagster/partition": partition,
        }
        runs.append(
            instance.create_run(
                job_name=remote_job.name,
                run_id=None,
                run_config={},
                resolved_op_selection=None,
                step_keys_to_execute=plan.step_keys_to_execute,
                op_selection=None,
                status=None,
                root_run_id=None,
                parent_run_id=None,
                tags=tags,
                job_snapshot=remote_job.job_snapshot,
                execution_plan_snapshot=plan,
                parent_job_snapshot=remote_job.parent_job_snapshot,
                remote_job_origin=remote_job.get_remote_origin(),
                job_code_origin=remote_job.get_python_origin(),
                asset_selection=None,
                asset_check_selection=None,
                asset_graph=repository.asset_graph,
            )
        )
    return runs


def stop_schedules(instance, workspace_context) -> int:
    """Schedules off in this throwaway instance: a tick during the measurement would add runs."""
    context = workspace_context.create_request_context()
    location = context.get_code_location(LOCATION)
    stopped = 0
    for repository in location.get_repositories().values():
        for schedule in repository.get_schedules():
            instance.stop_schedule(schedule.get_remote_origin_id(), schedule.selector_id, schedule)
            stopped += 1
    return stopped


def daemon_command(workspace: Path) -> list[str]:
    script = Path(sys.executable).with_name("dagster-daemon")
    program = str(script) if script.exists() else shutil.which("dagster-daemon")
    if program is None:
        raise RuntimeError("dagster-daemon not found next to this Python nor on PATH")
    return [program, "run", "-w", str(workspace)]


@contextlib.contextmanager
def daemon(workspace: Path, log: Path) -> Iterator[subprocess.Popen]:
    """`dagster-daemon run` in a session of its own; stopped with SIGTERM (its graceful
    shutdown), then SIGKILL for whatever of its session is left."""
    with log.open("w") as out:
        process = subprocess.Popen(
            daemon_command(workspace),
            cwd=PROJECT_ROOT,
            env=os.environ.copy(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            for sig, grace in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 5.0)):
                if process.poll() is not None and not group_alive(process.pid):
                    break
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, sig)
                deadline = time.monotonic() + grace
                while time.monotonic() < deadline:
                    process.poll()
                    if process.returncode is not None and not group_alive(process.pid):
                        break
                    time.sleep(0.2)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_for_daemon(instance, process: subprocess.Popen, log: Path, timeout: float) -> float:
    """Seconds until the queued-run daemon's first heartbeat (its workspace is loaded)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"dagster-daemon exited ({process.returncode}):\n{tail(log)}")
        if "QUEUED_RUN_COORDINATOR" in instance.get_daemon_heartbeats():
            return time.monotonic() - started
        time.sleep(0.5)
    raise RuntimeError(f"no queued-run daemon heartbeat in {timeout:.0f} s:\n{tail(log)}")


def wait_for_runs(instance, run_ids: Sequence[str], emulator, timeout: float, every: float):
    """Poll the run records until every run ended (or `timeout`); progress every `every` s."""
    from dagster import RunsFilter

    started = time.monotonic()
    last = 0.0
    while True:
        records = instance.get_run_records(filters=RunsFilter(run_ids=list(run_ids)))
        by_status: dict[str, int] = {}
        for record in records:
            status = record.dagster_run.status.value
            by_status[status] = by_status.get(status, 0) + 1
        finished = all(record.dagster_run.is_finished for record in records)
        elapsed = time.monotonic() - started
        if finished or elapsed > timeout or elapsed - last >= every:
            last = elapsed
            counts = emulator.request_log(entries=False)
            rate_limited = sum(o.get("rate_limited", 0) for o in counts["by_owner"].values())
            print(
                f"  {elapsed:5.0f} s  "
                + ", ".join(f"{k.lower()} {v}" for k, v in sorted(by_status.items()))
                + f"  | Airtable requests {counts['total']}, 429s {rate_limited}",
                flush=True,
            )
        if finished or elapsed > timeout:
            return records, finished
        time.sleep(1.0)


# ----- main -------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--leads", type=int, default=2000, help="leads per client")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds for the runs")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    parser.add_argument(
        "--dequeue-workers",
        type=int,
        default=0,
        help="experiment: launch queued runs from N threads (dagster.yaml's copy only; "
        "default 0: the project's dagster.yaml as it is)",
    )
    args = parser.parse_args()
    if not 1 <= args.clients <= 999:
        parser.error("--clients: 1 to 999")

    for name in CLEARED_ENV:
        os.environ.pop(name, None)
    home = Path(tempfile.mkdtemp(prefix="rp-many-clients-"))
    os.environ["RECONCILE_HOME"] = str(home)
    print(
        f"{args.clients} clients × {args.leads} leads, one token; home {home}"
        + (
            f"; EXPERIMENT: dequeue_use_threads with {args.dequeue_workers} workers"
            if args.dequeue_workers
            else ""
        ),
        flush=True,
    )
    try:
        return scale_run(args, home)
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)


def scale_run(args: argparse.Namespace, home: Path) -> int:
    import dagster as dg
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    setup_started = time.monotonic()
    now = dt.datetime.now(dt.UTC)
    with (
        EmbeddedPostgres(home).running() as server,
        run_emulator(rate_limit=PER_BASE_RATE, token_rate_limit=PER_TOKEN_RATE) as emulator,
    ):
        clients = add_clients(emulator, args.clients, args.leads, now)
        config = project_file(clients, home / "reconcile.yaml")
        app_url = server.database_url("reconcile")
        dagster, workspace = dagster_home(home, args.dequeue_workers)
        os.environ.update(
            {
                CONFIG_ENV: str(config),
                "DATABASE_URL": app_url,
                "DAGSTER_POSTGRES_URL": server.database_url("dagster", "psycopg2"),
                "DAGSTER_HOME": str(dagster),
                TOKEN_ENV: emulator.token,
                "AIRTABLE_ENDPOINT_URL": emulator.url,
            }
        )
        prepare_database(app_url, config)

        from reconcile_pipeline.defs.partitions import partition_key_for
        from reconcile_pipeline.instance import register_base_pool

        register_base_pool()  # every client's pool, before the daemon's first pass
        partition = partition_key_for(dt.datetime.now(dt.UTC))
        with (
            dg.DagsterInstance.get() as instance,
            WorkspaceProcessContext(
                instance, WorkspaceFileTarget([str(workspace)]), code_server_log_level="ERROR"
            ) as context,
        ):
            stopped = stop_schedules(instance, context)
            runs = create_runs(instance, context, clients, partition)
            log = home / "daemon.log"
            print(
                f"setup: {time.monotonic() - setup_started:.1f} s (bases seeded, project file, "
                f"migrations, capture triggers, {stopped} schedules stopped, {len(runs)} runs "
                f"created for window {partition})",
                flush=True,
            )
            with daemon(workspace, log) as process:
                ready = wait_for_daemon(instance, process, log, timeout=180.0)
                print(f"dagster-daemon ready in {ready:.1f} s; submitting", flush=True)
                emulator.reset_request_log()
                submitted = time.time()
                load_at_submission = os.getloadavg()[0]
                for run in runs:
                    instance.submit_run(run.run_id, context.create_request_context())
                records, finished = wait_for_runs(
                    instance, [r.run_id for r in runs], emulator, args.timeout, every=5.0
                )
            log_snapshot = emulator.request_log()
            load = (load_at_submission, os.getloadavg()[0])
            phases = run_phases(instance, [r.run_id for r in runs])
            failures = {
                r.dagster_run.run_id: run_errors(instance, r.dagster_run.run_id)
                for r in records
                if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS
            }
        crossed, rows_per_client = cross_client_writes(app_url, clients)
    return report(
        Outcome(
            clients=clients,
            leads=args.leads,
            records=records,
            finished=finished,
            submitted=submitted,
            load=load,
            request_log=log_snapshot,
            phases=phases,
            crossed=crossed,
            rows_per_client=rows_per_client,
            failures=failures,
            daemon_log=log,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
