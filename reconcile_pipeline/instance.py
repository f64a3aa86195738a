"""Prepare the environment Dagster processes run in: storage URL and DAGSTER_HOME.

Used by the `reconcile` CLI before it runs or launches Dagster, so that the user who sets nothing
gets the embedded PostgreSQL for Dagster's run, event-log and schedule storage.
"""

import os
import shutil
from pathlib import Path

from reconcile_pipeline import settings
from reconcile_pipeline.db.config import DatabaseUrls, resolve_database_urls
from reconcile_pipeline.db.migrate import upgrade

PROJECT_ROOT = Path(__file__).resolve().parents[1]


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
    if migrate:
        register_base_pool()
    return urls


def register_base_pool() -> str:
    """Give this base's concurrency pool its limit in the Dagster instance now.

    The queued-run daemon creates a pool's limit (dagster.yaml's default, 1) only when it first
    sees a queued run of it, and does not hold that run back in the same pass; registering the
    pool up front closes that gap. A limit already set (`dagster instance concurrency set`) is
    kept.
    """
    import dagster as dg

    from reconcile_pipeline.defs.schedules import base_id_from_env, base_pool

    pool = base_pool(base_id_from_env())
    with dg.DagsterInstance.get() as instance:
        instance.event_log_storage.initialize_concurrency_limit_to_default(pool)
    return pool
