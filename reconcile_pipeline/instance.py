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
    return urls
