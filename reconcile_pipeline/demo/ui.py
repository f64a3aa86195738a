"""`reconcile ui`: the Dagster UI (webserver + daemon, so schedules and sensors really run) on
the embedded default, with a background trickle of edits on both sides.

Stopping: SIGINT (Ctrl-C), SIGTERM and SIGHUP all stop everything, however the command was
started. A shell starts a background job (`reconcile ui &`) with SIGINT ignored, and an ignored
signal stays ignored across exec: Python then installs no Ctrl-C handler, and `dagster dev`, which
maps SIGTERM to its SIGINT handler, ignored both. So this process installs its own handlers
(which exec resets to the default in children, never to "ignored"), starts `dagster dev` in a
session of its own (webserver, daemon and code servers with it, out of reach of the terminal's
Ctrl-C, which only this process handles), forwards the stop as SIGINT (dagster dev's graceful
shutdown), and ends whatever of that session is left.
"""

import contextlib
import errno
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

from sqlalchemy import create_engine

from reconcile_pipeline import settings
from reconcile_pipeline.db.embedded import EmbeddedPostgres
from reconcile_pipeline.defs.partitions_start import export_partitions_start
from reconcile_pipeline.demo.edits import trickle_step
from reconcile_pipeline.demo.environment import airtable_target
from reconcile_pipeline.instance import PROJECT_ROOT, prepare_environment, register_base_pool

logger = logging.getLogger(__name__)

DEFAULT_PORT = 3000
CONSOLE_PORT = 3001
EMULATOR_PORT = 8765
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
GRACEFUL_SECONDS = 30.0  # dagster dev waits up to 10 s per child itself


class PortInUse(Exception):
    """A port `reconcile ui` needs is taken; the message names the option to change it
    (a configuration error: exit 2)."""


def _trickle(stop: threading.Event, engine, emulator, every: float) -> None:
    rng = random.Random()
    while not stop.wait(every):
        try:
            logger.info("Trickle: %s", trickle_step(engine, emulator, rng))
        except Exception as exc:  # noqa: BLE001 — the demo trickle must never kill the UI
            logger.warning("Trickle edit failed: %s", exc)


def dagster_dev_command(port: int) -> list[str]:
    """`dagster dev` (webserver + daemon) on the project's workspace, on loopback."""
    return [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-w",
        str(PROJECT_ROOT / "workspace.yaml"),
        "-p",
        str(port),
        "-h",
        "127.0.0.1",
    ]


def check_port(port: int, option: str) -> None:
    """Raise PortInUse (naming `option`) when 127.0.0.1:`port` cannot be listened on."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise PortInUse(
                f"port {port} is in use (another `reconcile ui`?): pass {option} with a free port",
            ) from None


class _Stop:
    """The stop signals, handled: the first asks dagster dev to shut down, a second one (an
    impatient Ctrl-C) ends its whole session at once."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.signals: list[int] = []
        self.previous: dict[int, object] = {}
        self.ignored: set[int] = set()

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            current = signal.getsignal(sig)
            if sig == signal.SIGHUP and (current is signal.SIG_IGN or sig in self.ignored):
                self.ignored.add(sig)  # `nohup reconcile ui`: closing the terminal must not stop it
                continue
            previous = signal.signal(sig, self._handle)
            self.previous.setdefault(sig, previous)

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        self.signals.append(signum)
        if self.process is None:
            raise KeyboardInterrupt  # still starting: unwind, stopping what was started
        if len(self.signals) == 1:
            _signal_group(self.process, signal.SIGINT, leader_only=True)
        else:
            _signal_group(self.process, signal.SIGKILL)


def _signal_group(process: subprocess.Popen, sig: int, leader_only: bool = False) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if leader_only:
            os.kill(process.pid, sig)
        else:
            os.killpg(process.pid, sig)  # its own session: the group id is its pid


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _end_session(process: subprocess.Popen) -> None:
    """Wait for dagster dev to shut down; then end whatever of its session is left
    (SIGTERM, then SIGKILL)."""
    deadline = time.monotonic() + GRACEFUL_SECONDS
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if not _group_alive(process.pid) and process.poll() is not None:
            return
        _signal_group(process, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            process.poll()  # reap the leader, or the group never empties
            if not _group_alive(process.pid):
                return
            time.sleep(0.1)


def run_ui(
    port: int = DEFAULT_PORT,
    trickle_seconds: float = 20.0,
    emulator_port: int = EMULATOR_PORT,
    console_port: int = CONSOLE_PORT,
) -> int:
    stop = _Stop()
    stop.install()  # first: a signal during start-up unwinds what was started
    try:
        return _serve(port, trickle_seconds, emulator_port, stop, console_port)
    except KeyboardInterrupt:
        print("Stopped.", flush=True)
        return 0
    finally:
        stop.restore()


def _serve(
    port: int, trickle_seconds: float, emulator_port: int, stop: _Stop, console_port: int
) -> int:
    from reconcile_pipeline.console import console_from_environment, running_console

    check_port(port, "--port")
    with contextlib.ExitStack() as stack:
        if not settings.configured_database_url():
            stack.enter_context(EmbeddedPostgres().running())
            stop.install()  # running() put its own SIGTERM handler in place
        target = stack.enter_context(_emulator(emulator_port))
        urls = prepare_environment()
        # The partitions start at the first recorded run (unless configured): exported before
        # anything loads the definitions, here or in dagster dev's processes.
        export_partitions_start(urls.app)
        register_base_pool()  # before the daemon's first pass (see its docstring)
        # The review console, next to Dagster: its run ids link to this UI.
        os.environ.setdefault("RECONCILE_DAGSTER_UI_URL", f"http://127.0.0.1:{port}")
        console = stack.enter_context(
            running_console(console_from_environment(start_embedded=False), port=console_port)
        )
        engine = create_engine(urls.app)
        stack.callback(engine.dispose)
        trickling = threading.Event()
        stack.callback(trickling.set)
        if target.emulator is not None and trickle_seconds > 0:
            threading.Thread(
                target=_trickle,
                args=(trickling, engine, target.emulator, trickle_seconds),
                daemon=True,
            ).start()
        print(
            f"Dagster UI: http://127.0.0.1:{port}  (Ctrl-C stops everything)\n"
            f"Review console: {console.url}\n"
            f"Airtable: {target.endpoint_url}"
            + (" (the emulator of another `reconcile ui`)" if target.shared else ""),
            flush=True,
        )
        dagster = subprocess.Popen(
            dagster_dev_command(port),
            cwd=PROJECT_ROOT,
            env=os.environ.copy(),
            start_new_session=True,
        )
        stop.process = dagster
        try:
            code = dagster.wait()
        except KeyboardInterrupt:  # only if a signal slipped in before `process` was set
            _signal_group(dagster, signal.SIGINT, leader_only=True)
            code = None
        finally:
            _end_session(dagster)
        if stop.signals:
            print("Stopped.", flush=True)
            return 0
        return dagster.returncode if code is None else code


@contextlib.contextmanager
def _emulator(port: int):
    """The demo's emulator for this home (advertised to the other commands), or the one
    another `reconcile ui` of this home serves; with a token, your base."""
    with contextlib.ExitStack() as stack:
        try:
            target = stack.enter_context(airtable_target(port=port, advertise=True))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise PortInUse(
                f"port {port} is in use (another `reconcile ui`, with another RECONCILE_HOME?): "
                "pass --emulator-port with a free port (0 picks one)",
            ) from None
        yield target
