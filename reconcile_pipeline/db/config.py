"""Resolve the database URLs the project uses: the user's own, or the embedded server's."""

from dataclasses import dataclass

from reconcile_pipeline import settings
from reconcile_pipeline.db import urls
from reconcile_pipeline.db.embedded import EmbeddedPostgres


@dataclass(frozen=True)
class DatabaseUrls:
    """The application database (psycopg 3) and Dagster's storage (psycopg2)."""

    app: str
    dagster: str
    embedded: bool


def resolve_database_urls(start_embedded: bool = True) -> DatabaseUrls:
    """Use DATABASE_URL / DAGSTER_POSTGRES_URL when set; otherwise the embedded server.

    With only DATABASE_URL set, Dagster's storage goes to the same database (its tables do not
    clash with the portal's); set DAGSTER_POSTGRES_URL to keep them apart.
    """
    app = settings.configured_database_url()
    if app:
        dagster = settings.configured_dagster_url() or app
        return DatabaseUrls(
            app=urls.app_url(app), dagster=urls.dagster_storage_url(dagster), embedded=False
        )
    embedded = EmbeddedPostgres()
    info = embedded.start() if start_embedded else embedded.info()
    if info is None:
        raise RuntimeError(
            "No DATABASE_URL is set and the embedded PostgreSQL is not running. "
            "Run `reconcile db start` or set DATABASE_URL."
        )
    return DatabaseUrls(
        app=info.database_url(settings.APP_DATABASE_NAME, "psycopg"),
        dagster=settings.configured_dagster_url()
        or info.database_url(settings.DAGSTER_DATABASE_NAME, "psycopg2"),
        embedded=True,
    )
