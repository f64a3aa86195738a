"""`reconcile ui` started in the background by a shell (`reconcile ui &`, which starts it with
SIGINT ignored) stops with everything it started on SIGTERM and on SIGINT; while it runs,
`reconcile backfill` of the same RECONCILE_HOME uses its emulator, not a second one on the same
data file."""

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import requests
from sqlalchemy import create_engine, text

from reconcile_pipeline.emulator.admin_client import EmulatorAdmin
from reconcile_pipeline_tests.dagster.cli import RECONCILE, reconcile_env, run_reconcile_cli

pytestmark = pytest.mark.slow  # `dagster dev` starts a webserver, a daemon and code servers

BASE, TABLE = "appDemoLeads00001", "Leads"
STARTUP_SECONDS = 180
STOP_SECONDS = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class BackgroundUi:
    """`reconcile ui` as `sh -c 'reconcile ui … &'` starts it: SIGINT ignored, not our child."""

    def __init__(self, home: Path, env: dict[str, str], log: Path) -> None:
        self.port, self.emulator_port = free_port(), free_port()
        self.console_port = free_port()
        self.home, self.log = home, log
        started = subprocess.run(
            [
                "sh",
                "-c",
                '"$@" >"$LOG" 2>&1 </dev/null & echo $!',
                "sh",
                RECONCILE,
                "ui",
                "--port",
                str(self.port),
                "--emulator-port",
                str(self.emulator_port),
                "--console-port",
                str(self.console_port),
                "--trickle-seconds",
                "0",
            ],
            env={**env, "LOG": str(log)},
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        self.pid = int(started.stdout.strip())
        self.process = psutil.Process(self.pid)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            assert self.alive(self.process), self.output()
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/server_info", timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(1)
        raise AssertionError(f"reconcile ui did not serve in time:\n{self.output()}")

    @staticmethod
    def alive(process: psutil.Process) -> bool:
        try:
            return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def stop_with(self, sig: int) -> None:
        """Send `sig`; assert the command and every process it started end in time."""
        family = [self.process, *self.process.children(recursive=True)]
        assert len(family) >= 3, [p.cmdline() for p in family]  # dagster dev, webserver, daemon
        self.process.send_signal(sig)
        deadline = time.monotonic() + STOP_SECONDS
        while time.monotonic() < deadline and any(self.alive(p) for p in family):
            time.sleep(0.5)
        left = [p for p in family if self.alive(p)]
        for process in left:  # leave nothing behind for the next test
            process.kill()
        assert not left, ([p.cmdline() for p in left], self.output())

    def kill_all(self) -> None:
        for process in [self.process, *self.process.children(recursive=True)]:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass


@pytest.fixture
def ui_env(tmp_path, database_url, project_dagster_database) -> dict[str, str]:
    """No token: the demo's emulator, started by `reconcile ui` under RECONCILE_HOME."""
    return reconcile_env(
        tmp_path / "home",
        database_url,
        "unused",
        "unused",
        AIRTABLE_API_KEY=None,
        AIRTABLE_ENDPOINT_URL=None,
        AIRTABLE_BASE_ID=None,
        AIRTABLE_TABLE=None,
        RECONCILE_CONFIG=None,
    )


def start_ui(tmp_path: Path, env: dict[str, str]) -> BackgroundUi:
    ui = BackgroundUi(tmp_path / "home", env, tmp_path / "ui.log")
    try:
        ui.wait_until_serving()
    except BaseException:
        ui.kill_all()
        raise
    return ui


def test_sigterm_stops_everything_and_backfill_meanwhile_uses_the_uis_emulator(
    tmp_path, ui_env, database_url
):
    ui = start_ui(tmp_path, ui_env)
    try:
        advertised = tmp_path / "home" / "emulator-endpoint.json"
        assert advertised.is_file()
        assert advertised.stat().st_mode & 0o077 == 0  # it holds the emulator's token
        emulator = EmulatorAdmin(f"http://127.0.0.1:{ui.emulator_port}")
        [record_id] = emulator.seed_records(BASE, TABLE, [{"Email": "shared@example.com"}])

        done = run_reconcile_cli(["backfill", "--hours", "1"], ui_env)

        assert done.returncode == 0, done.stdout + done.stderr
        engine = create_engine(database_url)
        try:
            with engine.begin() as conn:
                assert (
                    conn.execute(
                        text("SELECT email FROM public.leads WHERE airtable_record_id = :r"),
                        {"r": record_id},
                    ).scalar_one()
                    == "shared@example.com"
                )
                conn.execute(  # a portal edit the next backfill pushes
                    text(
                        "UPDATE public.leads SET claimed_by = 'shared-rep' "
                        "WHERE airtable_record_id = :r"
                    ),
                    {"r": record_id},
                )
        finally:
            engine.dispose()

        done = run_reconcile_cli(["backfill", "--hours", "1"], ui_env)

        assert done.returncode == 0, done.stdout + done.stderr
        pushed = {r["id"]: r["fields"] for r in emulator.all_records(BASE, TABLE)}
        assert pushed[record_id].get("Claimed By") == "shared-rep"  # in the UI's emulator
        emulator.close()

        ui.stop_with(signal.SIGTERM)

        assert "Stopped." in ui.output()
        assert not advertised.exists()
    finally:
        ui.kill_all()


def test_sigint_stops_everything_even_when_started_in_the_background(tmp_path, ui_env):
    ui = start_ui(tmp_path, ui_env)
    try:
        # The review console came up next to Dagster, linking its runs to this UI.
        console = requests.get(f"http://127.0.0.1:{ui.console_port}/", timeout=10)
        assert console.ok and "Review console" in ui.output()

        ui.stop_with(signal.SIGINT)

        with pytest.raises(requests.ConnectionError):  # stopped with the rest
            requests.get(f"http://127.0.0.1:{ui.console_port}/", timeout=5)

        assert "Stopped." in ui.output()
        assert "Traceback" not in ui.output()
    finally:
        ui.kill_all()


def test_a_port_in_use_names_the_option_to_change(tmp_path, ui_env):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        done = run_reconcile_cli(["ui", "--port", str(port)], ui_env, timeout=60)

    assert done.returncode == 2, done.stdout + done.stderr
    assert f"port {port} is in use" in done.stderr
    assert "--port" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_advertisement_left_by_a_killed_ui_is_ignored(tmp_path, monkeypatch):
    from reconcile_pipeline.demo.environment import (
        advertise_emulator,
        endpoint_file,
        running_emulator,
        withdraw_emulator,
    )
    from reconcile_pipeline.emulator.server import run_emulator

    monkeypatch.setenv("RECONCILE_HOME", str(tmp_path / "home"))
    with run_emulator() as emulator:
        advertise_emulator(emulator.url, emulator.token)
        expected = {"url": emulator.url, "token": emulator.token, "pid": os.getpid()}
        assert running_emulator() == expected

        dead = subprocess.Popen(["true"])
        dead.wait()
        info = json.loads(endpoint_file().read_text())
        endpoint_file().write_text(json.dumps({**info, "pid": dead.pid}))
        assert running_emulator() is None  # its process is gone

        withdraw_emulator(emulator.url)
        assert not endpoint_file().exists()
    advertise_emulator(emulator_url := "http://127.0.0.1:1", "token")
    assert running_emulator() is None  # nothing answers there
    withdraw_emulator(emulator_url)


def test_reconcile_console_serves_read_only_without_a_token_and_stops_on_sigterm(tmp_path, ui_env):
    port = free_port()
    log = tmp_path / "console.log"
    with log.open("w") as out:
        console = subprocess.Popen(
            [RECONCILE, "console", "--port", str(port)],
            env={k: v for k, v in ui_env.items() if k != "RECONCILE_CONSOLE_TOKEN"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        page = None
        while time.monotonic() < deadline and console.poll() is None:
            try:
                page = requests.get(f"http://127.0.0.1:{port}/conflicts", timeout=2)
                break
            except requests.RequestException:
                time.sleep(0.5)
        assert page is not None and page.ok, log.read_text()
        # No token: no write forms, and a write is refused.
        assert "/conflicts/accept" not in page.text
        assert (
            requests.post(f"http://127.0.0.1:{port}/conflicts/accept", timeout=5).status_code == 403
        )

        console.send_signal(signal.SIGTERM)
        assert console.wait(timeout=STOP_SECONDS) == 0
        assert "Traceback" not in log.read_text()
    finally:
        if console.poll() is None:
            console.kill()
