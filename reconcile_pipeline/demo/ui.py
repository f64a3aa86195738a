"""`reconcile ui`: the Dagster UI (webserver + daemon, so schedules and sensors really run) on
the embedded default, with a background trickle of edits on both sides."""

import logging
import os
import random
import signal
import subprocess
import sys
import threading

from sqlalchemy import create_engine

from reconcile_pipeline.db.embedded import EmbeddedPostgres
from reconcile_pipeline.demo.edits import trickle_step
from reconcile_pipeline.demo.environment import airtable_target
from reconcile_pipeline.instance import PROJECT_ROOT, prepare_environment, register_base_pool

logger = logging.getLogger(__name__)

EMULATOR_PORT = 8765


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


def run_ui(port: int = 3000, trickle_seconds: float = 20.0) -> int:
    with EmbeddedPostgres().running(), airtable_target(port=EMULATOR_PORT) as target:
        urls = prepare_environment()
        register_base_pool()  # before the daemon's first pass (see its docstring)
        engine = create_engine(urls.app)
        stop = threading.Event()
        if target.emulator is not None and trickle_seconds > 0:
            threading.Thread(
                target=_trickle, args=(stop, engine, target.emulator, trickle_seconds), daemon=True
            ).start()
        command = dagster_dev_command(port)
        print(f"Dagster UI: http://127.0.0.1:{port}  (Ctrl-C stops everything)")
        dagster = subprocess.Popen(command, cwd=PROJECT_ROOT, env=os.environ.copy())
        previous = signal.signal(signal.SIGTERM, lambda *_: dagster.send_signal(signal.SIGINT))
        try:
            return dagster.wait()
        except KeyboardInterrupt:
            dagster.send_signal(signal.SIGINT)
            return dagster.wait(timeout=60)
        finally:
            signal.signal(signal.SIGTERM, previous)
            stop.set()
            engine.dispose()
