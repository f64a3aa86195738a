"""Prepare the environment Dagster processes run in: storage URL and DAGSTER_HOME; and say which
process runs a run (its worker identity), so a run whose process died can be told apart.

Used by the `reconcile` CLI before it runs or launches Dagster, so that the user who sets nothing
gets the embedded PostgreSQL for Dagster's run, event-log and schedule storage.
"""

import logging
import os
import shutil
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from reconcile_pipeline import settings
from reconcile_pipeline.db.config import DatabaseUrls, resolve_database_urls
from reconcile_pipeline.db.urls import redact

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Dagster's own variable (read when it stores events; 0 or unset: one write per event).
EVENT_BATCH_SIZE_ENV = "DAGSTER_EVENT_BATCH_SIZE"
DEFAULT_EVENT_BATCH_SIZE = "1000"

logger = logging.getLogger(__name__)


def instance_yaml() -> Path:
    """The project's dagster.yaml (the working directory's, else the source tree's)."""
    for candidate in (Path.cwd() / "dagster.yaml", PROJECT_ROOT / "dagster.yaml"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "dagster.yaml not found: run from the project directory or set DAGSTER_HOME yourself"
    )


def prepare_environment(
    start_embedded: bool = True, migrate: bool = True, *, full_upgrade: bool = False
) -> DatabaseUrls:
    """Resolve databases, apply migrations and export what Dagster needs into os.environ.

    Exports DATABASE_URL (psycopg 3), DAGSTER_POSTGRES_URL (psycopg2), DAGSTER_HOME and
    DAGSTER_EVENT_BATCH_SIZE (unless the user set them), so child processes (webserver, daemon,
    run workers) see the same setup.

    A database already at the shipped head is left alone without loading Alembic
    (`upgrade_if_behind`); `full_upgrade` runs Alembic's upgrade whatever the version table says
    (`reconcile db upgrade`).
    """
    urls = resolve_database_urls(start_embedded=start_embedded)
    if migrate:
        from reconcile_pipeline.db.migrate import upgrade, upgrade_if_behind

        if full_upgrade:
            upgrade(urls.app)
        else:
            upgrade_if_behind(urls.app)
        _demo_portal(urls.app)
    os.environ[settings.DATABASE_URL_ENV] = urls.app
    os.environ[settings.DAGSTER_POSTGRES_URL_ENV] = urls.dagster
    # A range run (a backfill) materializes every asset once per window: Dagster writes those
    # events in batches of this size instead of one statement each (README "Environment").
    os.environ.setdefault(EVENT_BATCH_SIZE_ENV, DEFAULT_EVENT_BATCH_SIZE)
    if not os.environ.get("DAGSTER_HOME"):
        home = settings.reconcile_home() / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(instance_yaml(), home / "dagster.yaml")
        os.environ["DAGSTER_HOME"] = str(home)
    return urls


def _demo_portal(url: str) -> None:
    """The demo portal's second table, when the active project file is the shipped demo."""
    from sqlalchemy import create_engine

    from reconcile_pipeline.config.load import ConfigError, load
    from reconcile_pipeline.demo.portal_schema import ensure_demo_portal

    try:
        is_demo = load().is_demo
    except ConfigError:
        return  # a bad project file is reported by the command that reads it
    if is_demo:
        engine = create_engine(url)
        try:
            ensure_demo_portal(engine)
        finally:
            engine.dispose()


def register_base_pool(pool: str | None = None) -> bool:
    """Give a base's concurrency pool (`pool`, else every client's) its limit in the Dagster
    instance before the daemon runs; returns whether it did (for any). Best-effort: a failure is
    logged, never raised.

    The queued-run daemon creates a pool's limit (dagster.yaml's default, 1) only when it first
    sees a queued run of it, and does not hold that run back in the same pass; registering the
    pool up front closes that gap. A pool that already has a limit (set earlier, or by you with
    `dagster instance concurrency set`) is left alone, and nothing is done on an instance without
    a default pool limit (a DAGSTER_HOME of your own without the project's dagster.yaml).
    """
    import dagster as dg

    if pool is None:  # every client's base
        from reconcile_pipeline.defs.naming import base_pool
        from reconcile_pipeline.defs.project import clients

        done = [register_base_pool(base_pool(spec.base_id)) for spec in clients()]
        return any(done)
    try:
        with dg.DagsterInstance.get() as instance:
            storage = instance.event_log_storage
            if (
                instance.global_op_concurrency_default_limit is None
                or not storage.supports_global_concurrency_limits
                or any(limit.name == pool for limit in storage.get_pool_limits())
            ):
                return False
            return bool(storage.initialize_concurrency_limit_to_default(pool))
    except Exception as exc:  # the UI still works; the daemon creates the pool on first sight
        # The type and the redacted storage URL only: a driver's message may quote credentials.
        storage_url = os.environ.get(settings.DAGSTER_POSTGRES_URL_ENV)
        logger.warning(
            "Could not register the Dagster concurrency pool %s (%s); the daemon will create it "
            "when it first queues a run of it. Dagster storage: %s",
            pool,
            type(exc).__name__,
            redact(storage_url) if storage_url else "not set",
        )
        return False


# ----- run workers ------------------------------------------------------------------------------
# Every run records the process executing it in three tags: the CLI puts them on the runs it
# starts in-process (`execute_in_process`), and the `postgres` resource writes them from inside
# the run worker for runs the daemon launched. A STARTED run whose process on this host is gone
# was killed (SIGKILL, OOM killer, a closed terminal) and can never end by itself: the run failure
# sensor marks it failed (see defs/sensors.py `fail_dead_runs`).

WORKER_HOST_TAG = "reconcile/worker_host"
WORKER_PID_TAG = "reconcile/worker_pid"
# The process's start time in clock ticks since boot (Linux /proc): a pid reused by a later
# process does not pass for the run's worker.
WORKER_STARTED_TAG = "reconcile/worker_started"
# The pid namespace (Linux): two containers may share a host name but not their pids.
WORKER_PID_NAMESPACE_TAG = "reconcile/worker_pid_namespace"


@dataclass(frozen=True)
class Worker:
    """The process running a run."""

    host: str
    pid: int
    started: str | None = None  # None where the OS does not tell (no /proc)
    pid_namespace: str | None = None

    def tags(self) -> dict[str, str]:
        tags = {WORKER_HOST_TAG: self.host, WORKER_PID_TAG: str(self.pid)}
        if self.started is not None:
            tags[WORKER_STARTED_TAG] = self.started
        if self.pid_namespace is not None:
            tags[WORKER_PID_NAMESPACE_TAG] = self.pid_namespace
        return tags

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> "Worker | None":
        try:
            return cls(
                tags[WORKER_HOST_TAG],
                int(tags[WORKER_PID_TAG]),
                tags.get(WORKER_STARTED_TAG),
                tags.get(WORKER_PID_NAMESPACE_TAG),
            )
        except (KeyError, ValueError):
            return None


def this_host() -> str:
    return socket.gethostname()


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of a process from /proc, or None when /proc has no such entry."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces
    return fields[0], fields[19]


def current_worker() -> Worker:
    """This process, as a run's worker."""
    pid = os.getpid()
    stat = _proc_stat(pid)
    return Worker(this_host(), pid, stat[1] if stat else None, _pid_namespace())


def worker_is_gone(worker: Worker) -> bool | None:
    """Whether the worker process has ended: None when that cannot be told from here (it runs
    on another host, or in another pid namespace). A zombie (ended, not yet reaped) has ended; a
    live process with the same pid but another start time is not the worker."""
    if worker.host != this_host() or worker.pid_namespace != _pid_namespace():
        return None
    stat = _proc_stat(worker.pid)
    if stat is not None:
        state, started = stat
        return state in ("Z", "X") or (worker.started is not None and started != worker.started)
    if Path("/proc/self/stat").exists():
        return True  # /proc works here and has no such process
    try:
        os.kill(worker.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # exists, owned by someone else
    return False
