"""Prepare the environment Dagster processes run in: storage URL and DAGSTER_HOME.

Used by the `reconcile` CLI before it runs or launches Dagster, so that the user who sets nothing
gets the embedded PostgreSQL for Dagster's run, event-log and schedule storage.
"""

import logging
import os
import shutil
from pathlib import Path

from reconcile_pipeline import settings
from reconcile_pipeline.db.config import DatabaseUrls, resolve_database_urls
from reconcile_pipeline.db.migrate import upgrade
from reconcile_pipeline.db.urls import redact

PROJECT_ROOT = Path(__file__).resolve().parents[1]

logger = logging.getLogger(__name__)


def instance_yaml() -> Path:
    """The project's dagster.yaml (the working directory's, else the source tree's)."""
    for candidate in (Path.cwd() / "dagster.yaml", PROJECT_ROOT / "dagster.yaml"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "dagster.yaml not found: run from the project directory or set DAGSTER_HOME yourself"
    )


def prepare_environment(start_embedded: bool = True, migrate: bool = True) -> DatabaseUrls:
    """Resolve databases, apply migrations and export what Dagster needs into os.environ.

    Exports DATABASE_URL (psycopg 3), DAGSTER_POSTGRES_URL (psycopg2) and DAGSTER_HOME (unless
    the user set one), so child processes (webserver, daemon, run workers) see the same setup.
    """
    urls = resolve_database_urls(start_embedded=start_embedded)
    if migrate:
        upgrade(urls.app)
    os.environ[settings.DATABASE_URL_ENV] = urls.app
    os.environ[settings.DAGSTER_POSTGRES_URL_ENV] = urls.dagster
    if not os.environ.get("DAGSTER_HOME"):
        home = settings.reconcile_home() / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(instance_yaml(), home / "dagster.yaml")
        os.environ["DAGSTER_HOME"] = str(home)
    return urls


def register_base_pool(pool: str | None = None) -> bool:
    """Give this base's concurrency pool its limit in the Dagster instance before the daemon
    runs; returns whether it did. Best-effort: a failure is logged, never raised.

    The queued-run daemon creates a pool's limit (dagster.yaml's default, 1) only when it first
    sees a queued run of it, and does not hold that run back in the same pass; registering the
    pool up front closes that gap. A pool that already has a limit (set earlier, or by you with
    `dagster instance concurrency set`) is left alone, and nothing is done on an instance without
    a default pool limit (a DAGSTER_HOME of your own without the project's dagster.yaml).
    """
    import dagster as dg

    from reconcile_pipeline.defs.schedules import base_id_from_env, base_pool

    pool = pool or base_pool(base_id_from_env())
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
