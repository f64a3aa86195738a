"""Running the review console: `serve` (blocking, for `reconcile console`), `running_console`
(a background thread, for `reconcile ui` and tests) and `console_from_environment` (the app for
the environment every `reconcile` command reads).

uvicorn comes with dagster-webserver. The console binds to 127.0.0.1 unless told otherwise, and
on a loopback address it answers only requests addressed to a loopback name (a page of another
site that points its own name at 127.0.0.1 gets 400, never the console's data).
"""

import contextlib
import errno
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn
from sqlalchemy import create_engine
from starlette.applications import Starlette
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp

from reconcile_pipeline.config.load import ConfigError, load
from reconcile_pipeline.console.app import create_app

logger = logging.getLogger(__name__)

TOKEN_ENV = "RECONCILE_CONSOLE_TOKEN"
DAGSTER_UI_URL_ENV = "RECONCILE_DAGSTER_UI_URL"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3001  # next to the Dagster UI's 3000
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
SHORT_TOKEN = 16
START_TIMEOUT_S = 30.0


class ConsolePortInUse(OSError):
    """The port is taken; the message names the option to change."""


def console_from_environment(*, start_embedded: bool = True) -> Starlette:
    """The console for this environment: the database of DATABASE_URL (else the embedded
    server's, started when `start_embedded`), the project file (RECONCILE_CONFIG, ./reconcile.yaml
    or the demo's), the token of RECONCILE_CONSOLE_TOKEN (unset or empty: read-only) and the
    Dagster UI of RECONCILE_DAGSTER_UI_URL (unset: run ids are not links).

    Raises ConfigError for a bad project file or a database not at the head schema revision
    (the console never migrates; `reconcile db upgrade` does), and whatever connecting raises
    for an unreachable database. The app owns its engine: `serve` disposes of it."""
    from reconcile_pipeline.db.config import resolve_database_urls
    from reconcile_pipeline.db.migrate import current_revision, head_revision

    project = load()
    urls = resolve_database_urls(start_embedded=start_embedded)
    engine = create_engine(urls.app, pool_pre_ping=True, pool_size=5, max_overflow=5)
    try:
        revision = current_revision(engine)
        if revision != head_revision():
            raise ConfigError(
                f"the database's bookkeeping is at revision {revision or 'none'}, not "
                f"{head_revision()}: run `reconcile db upgrade` first"
            )
    except BaseException:
        engine.dispose()
        raise
    token = (os.environ.get(TOKEN_ENV) or "").strip() or None
    if token is None:
        logger.info("%s is not set: the console is read-only", TOKEN_ENV)
    elif len(token) < SHORT_TOKEN:
        logger.warning(
            "%s is only %d characters long: use a long random one, e.g. the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`",
            TOKEN_ENV,
            len(token),
        )
    app = create_app(engine, project, token, os.environ.get(DAGSTER_UI_URL_ENV) or None)
    app.state.owns_engine = True
    return app


def _is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def _guarded(app: ASGIApp, host: str) -> ASGIApp:
    """On a loopback address, only requests to a loopback name reach the app."""
    if not _is_loopback(host):
        logger.warning(
            "The review console listens on %s: anybody who reaches this address can read "
            "conflicts, quarantine and history (and, with the token, write). Put it behind TLS "
            "and an access control of your own.",
            host,
        )
        return app
    return TrustedHostMiddleware(app, allowed_hosts=[*LOOPBACK_HOSTS, "[::1]"])


def _config(app: ASGIApp, host: str, port: int, *, quiet: bool) -> uvicorn.Config:
    return uvicorn.Config(
        _guarded(app, host),
        host=host,
        port=port,
        log_level="warning" if quiet else "info",
        log_config=None if quiet else uvicorn.config.LOGGING_CONFIG,
        access_log=not quiet,
        server_header=False,
        lifespan="off",
    )


def _check_port(host: str, port: int, option: str) -> None:
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConsolePortInUse(
                    f"port {port} is in use (another console?): pass {option} with a free port"
                ) from None
            raise


def _dispose(app: ASGIApp) -> None:
    state = getattr(app, "state", None)
    if state is not None and getattr(state, "owns_engine", False):
        state.console.engine.dispose()


def serve(
    app: ASGIApp | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    port_option: str = "--port",
) -> int:
    """Serve the console until SIGINT or SIGTERM (uvicorn shuts down gracefully); returns 0.
    `app`: create_app's, else console_from_environment()'s."""
    app = console_from_environment() if app is None else app
    try:
        _check_port(host, port, port_option)
        server = uvicorn.Server(_config(app, host, port, quiet=False))
        shown_host = f"[{host}]" if ":" in host else host
        print(f"Review console: http://{shown_host}:{port}  (Ctrl-C stops it)", flush=True)
        # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again for the
        # handler it found: with these no-op handlers in place, a stop ends the command with 0.
        stops = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, lambda *_: None) for sig in stops}
        try:
            with contextlib.suppress(KeyboardInterrupt):
                server.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    finally:
        _dispose(app)
    return 0


@dataclass
class RunningConsole:
    url: str
    host: str
    port: int


@contextlib.contextmanager
def running_console(
    app: ASGIApp | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    port_option: str = "--console-port",
) -> Iterator[RunningConsole]:
    """The console served from a background thread for the duration of the block (port 0 picks
    a free one); stopped, and an engine it owns disposed of, on exit. Raises ConsolePortInUse
    when the port is taken."""
    app = console_from_environment() if app is None else app
    _check_port(host, port, port_option)
    server = uvicorn.Server(_config(app, host, port, quiet=True))
    thread = threading.Thread(target=server.run, name="review-console", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"the review console could not listen on {host}:{port}")
            if time.monotonic() > deadline:
                raise RuntimeError("the review console did not start in time")
            time.sleep(0.02)
        bound = server.servers[0].sockets[0].getsockname()[1] if port == 0 else port
        shown_host = f"[{host}]" if ":" in host else host
        yield RunningConsole(url=f"http://{shown_host}:{bound}", host=host, port=bound)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        _dispose(app)
