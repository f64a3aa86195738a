"""The embedded PostgreSQL: start is idempotent (a running server is reused), stop is clean, and a
process holding it with `running()` leaves no orphan server when it is sent SIGTERM."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from reconcile_pipeline.db.embedded import EmbeddedPostgres


def _postgres_processes(pgdata: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(attrs=("name", "cmdline")):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and str(pgdata) in cmdline:
            found.append(proc)
    return found


def _wait_until(condition, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.fixture
def home(tmp_path: Path):
    home = tmp_path / "home"
    yield home
    EmbeddedPostgres(home).stop()  # never leak a server from a failed test


def test_start_reuse_stop(home: Path):
    embedded = EmbeddedPostgres(home)

    first = embedded.start()
    second = EmbeddedPostgres(home).start()  # a second handle, as another process would have

    assert second.pid == first.pid
    with psycopg.connect(first.database_url("reconcile").replace("+psycopg", "")) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("reconcile",)
    with psycopg.connect(first.database_url("dagster").replace("+psycopg", "")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)

    assert embedded.stop() is True
    assert _wait_until(lambda: not _postgres_processes(embedded.pgdata))
    assert embedded.info() is None
    assert embedded.stop() is False


def test_sigterm_to_the_owning_process_stops_the_server(home: Path):
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from reconcile_pipeline.db.embedded import EmbeddedPostgres
        with EmbeddedPostgres(Path({str(home)!r})).running() as info:
            print(info.pid, flush=True)
            time.sleep(120)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        server_pid = int(owner.stdout.readline())
        assert psutil.pid_exists(server_pid)

        os.kill(owner.pid, signal.SIGTERM)
        owner.wait(timeout=30)
    finally:
        if owner.poll() is None:
            owner.kill()

    pgdata = EmbeddedPostgres(home).pgdata
    assert _wait_until(lambda: not psutil.pid_exists(server_pid))
    assert _postgres_processes(pgdata) == []
