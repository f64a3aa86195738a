"""Shared fixtures: a real PostgreSQL for the whole session and a fresh database per test.

Tests use the server named by TEST_DATABASE_URL when set (any PostgreSQL 14+ the user can create
databases on); otherwise they start the embedded server in a temporary home and stop it at the
end of the session. Never SQLite, never a mock.
"""

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine, make_url

from reconcile_pipeline.db import urls
from reconcile_pipeline.db.embedded import EmbeddedPostgres
from reconcile_pipeline.db.migrate import upgrade
from reconcile_pipeline.demo.portal_schema import ensure_demo_portal
from reconcile_pipeline.instance import instance_yaml

TEMPLATE_DB = "reconcile_test_template"


class PostgresServerForTests:
    """Creates and drops databases on one server; URLs use the psycopg 3 driver."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url

    def url(self, database: str, driver: str = "psycopg") -> str:
        return (
            make_url(self.admin_url)
            .set(drivername=f"postgresql+{driver}", database=database)
            .render_as_string(hide_password=False)
        )

    def _admin(self) -> psycopg.Connection:
        dsn = make_url(self.admin_url).set(drivername="postgresql")
        return psycopg.connect(dsn.render_as_string(hide_password=False), autocommit=True)

    def create_database(self, template: str | None = None) -> str:
        name = f"rp_test_{uuid.uuid4().hex[:12]}"
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        with self._admin() as conn:
            conn.execute(statement)
        return name

    def drop_database(self, name: str) -> None:
        with self._admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServerForTests]:
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        yield PostgresServerForTests(configured)
        return
    embedded = EmbeddedPostgres(home=Path(tmp_path_factory.mktemp("embedded-pg")))
    with embedded.running() as info:
        yield PostgresServerForTests(info.admin_url)


@pytest.fixture(scope="session")
def migrated_template(postgres_server: PostgresServerForTests) -> Iterator[str]:
    """A database at the head revision, copied (CREATE DATABASE … TEMPLATE) for each test."""
    postgres_server.drop_database(TEMPLATE_DB)
    with postgres_server._admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE_DB)))
    engine = create_engine(postgres_server.url(TEMPLATE_DB))
    upgrade(engine)
    ensure_demo_portal(engine)  # the demo project's campaigns table (tests run the demo)
    engine.dispose()
    yield TEMPLATE_DB
    postgres_server.drop_database(TEMPLATE_DB)


@pytest.fixture
def empty_database_url(postgres_server: PostgresServerForTests) -> Iterator[str]:
    """A new, empty database (no schema at all); dropped after the test."""
    name = postgres_server.create_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)


@pytest.fixture
def project_dagster_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_server: PostgresServerForTests
) -> Iterator[str]:
    """DAGSTER_HOME holding the project's dagster.yaml, its storage a new empty database (whose
    URL is returned); dropped after the test."""
    name = postgres_server.create_database()
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copyfile(instance_yaml(), dagster_home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", urls.dagster_storage_url(postgres_server.url(name)))
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)


@pytest.fixture
def database_url(postgres_server: PostgresServerForTests, migrated_template: str) -> Iterator[str]:
    """A new database at the head schema revision; dropped after the test."""
    name = postgres_server.create_database(template=migrated_template)
    yield postgres_server.url(name)
    postgres_server.drop_database(name)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A SQLAlchemy engine (psycopg 3) on the per-test migrated database."""
    engine = create_engine(database_url)
    yield engine
    engine.dispose()
