"""`reconcile db start` prints the database URLs with passwords hidden; `reconcile db env`
prints the full values, only when asked, as `export` lines."""

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from reconcile_pipeline.db.embedded import EmbeddedPostgres

RECONCILE = str(Path(sys.executable).parent / "reconcile")
PASSWORD = "Pw-n0t-for-the-screen"


def with_password(url: str) -> tuple[str, str]:
    """`url` and its password; a URL without one gets PASSWORD (the test servers trust local
    connections, so an unneeded password is ignored)."""
    parsed = make_url(url)
    if not parsed.password:
        parsed = parsed.set(password=PASSWORD)
    return parsed.render_as_string(hide_password=False), str(parsed.password)


@pytest.fixture
def env(tmp_path: Path, database_url: str, project_dagster_database: str, monkeypatch):
    import os

    app, app_password = with_password(database_url)
    dagster, dagster_password = with_password(project_dagster_database)
    home = tmp_path / "home"
    values = {
        **os.environ,
        "RECONCILE_HOME": str(home),
        "DATABASE_URL": app,
        "DAGSTER_POSTGRES_URL": dagster.replace("+psycopg:", "+psycopg2:", 1),
    }
    yield values, {app_password, dagster_password}
    EmbeddedPostgres(home=home).stop()  # in case a `db start` started one there


def reconcile(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RECONCILE, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_db_start_hides_passwords_and_says_how_to_get_them(env) -> None:
    values, passwords = env

    done = reconcile("db", "start", env=values)

    assert done.returncode == 0, done.stdout + done.stderr
    for password in passwords:
        assert password not in done.stdout
        assert password not in done.stderr
    assert "DATABASE_URL=postgresql+psycopg://" in done.stdout
    assert ":***@" in done.stdout
    assert 'eval "$(reconcile db env)"' in done.stdout
    # With DATABASE_URL set nothing embedded is needed, so nothing was started.
    assert EmbeddedPostgres(home=Path(values["RECONCILE_HOME"])).info() is None


def test_db_env_prints_the_full_values_as_export_lines(env) -> None:
    values, passwords = env

    done = reconcile("db", "env", env=values)

    assert done.returncode == 0, done.stderr
    exported = dict(
        shlex.split(line.removeprefix("export "))[0].split("=", 1)
        for line in done.stdout.splitlines()
    )
    assert set(exported) == {
        "DATABASE_URL",
        "DAGSTER_POSTGRES_URL",
        "DAGSTER_HOME",
        "DAGSTER_EVENT_BATCH_SIZE",
    }
    assert exported["DAGSTER_EVENT_BATCH_SIZE"] == "1000"  # a range run's events in batches
    assert make_url(exported["DATABASE_URL"]).password in passwords
    assert make_url(exported["DAGSTER_POSTGRES_URL"]).password in passwords
