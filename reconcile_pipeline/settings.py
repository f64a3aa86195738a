"""Where the project keeps its local state and how it finds its databases.

Every knob is an environment variable (documented in README.md). Nothing here starts a server;
`reconcile_pipeline.db.embedded` does that when no URL is configured.
"""

import os
from pathlib import Path

RECONCILE_HOME_ENV = "RECONCILE_HOME"
DATABASE_URL_ENV = "DATABASE_URL"
DAGSTER_POSTGRES_URL_ENV = "DAGSTER_POSTGRES_URL"

APP_DATABASE_NAME = "reconcile"
DAGSTER_DATABASE_NAME = "dagster"


def reconcile_home() -> Path:
    """The project-local home for embedded state (`.reconcile/` in the working directory)."""
    return Path(os.environ.get(RECONCILE_HOME_ENV) or ".reconcile").expanduser().resolve()


def configured_database_url() -> str | None:
    """The user's own application database URL, or None to use the embedded server."""
    return os.environ.get(DATABASE_URL_ENV) or None


def configured_dagster_url() -> str | None:
    """The user's own Dagster storage URL, or None to derive it."""
    return os.environ.get(DAGSTER_POSTGRES_URL_ENV) or None
