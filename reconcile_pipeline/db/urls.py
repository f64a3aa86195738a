"""PostgreSQL URL normalisation.

Our own code talks psycopg 3 (`postgresql+psycopg://`). Dagster's storage must be given
`postgresql+psycopg2://`: with SQLAlchemy 2.1 a bare `postgresql://` selects psycopg 3, whose
server-side parameter binding breaks dagster-postgres' `NOTIFY` statements (DESIGN §8).
"""

from sqlalchemy.engine import URL, make_url

_POSTGRES_SCHEMES = ("postgres", "postgresql")


def _with_driver(url: str, driver: str) -> URL:
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    backend = parsed.get_backend_name()
    if backend not in _POSTGRES_SCHEMES:
        raise ValueError(
            f"Expected a PostgreSQL URL (postgresql://user:password@host:5432/dbname), got a "
            f"'{backend}' URL. Set DATABASE_URL / DAGSTER_POSTGRES_URL to a PostgreSQL database."
        )
    return parsed.set(drivername=f"postgresql+{driver}")


def app_url(url: str) -> str:
    """`url` with the psycopg 3 driver, for the engine and migrations."""
    return _with_driver(url, "psycopg").render_as_string(hide_password=False)


def dagster_storage_url(url: str) -> str:
    """`url` with the psycopg2 driver, for dagster-postgres."""
    return _with_driver(url, "psycopg2").render_as_string(hide_password=False)


def redact(url: str) -> str:
    """`url` safe to print: the password replaced by `***` (an empty one is left empty, so
    `user:@host` does not suggest a password where there is none)."""
    parsed = make_url(url)
    return parsed.render_as_string(hide_password=bool(parsed.password))
