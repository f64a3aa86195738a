"""Fixtures for the browser test: headless Chromium, the emulator and `dagster dev` on the
embedded default (PostgreSQL storage, queued runs, the daemon), stopped with its whole process
group afterwards."""

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from reconcile_pipeline.db.urls import dagster_storage_url
from reconcile_pipeline.demo.ui import dagster_dev_command
from reconcile_pipeline.emulator.server import run_emulator
from reconcile_pipeline.instance import PROJECT_ROOT, instance_yaml

BASE, TABLE = "appDemoLeads00001", "Leads"
SEEDED_LEADS = 20

# The machine may have no network: without these Chromium keeps retrying Google services.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEBIAN_CHROMIUM = Path("/usr/bin/chromium")

STARTUP_TIMEOUT_S = 120.0
STOP_GRACE_S = 30.0

WORKSPACE_QUERY = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
    ... on PythonError { message }
  }
}
"""


def find_chromium() -> str | None:
    """Debian's Chromium; Playwright must never download a browser of its own."""
    found = shutil.which("chromium")
    if found:
        return found
    return str(DEBIAN_CHROMIUM) if DEBIAN_CHROMIUM.exists() else None


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    path = find_chromium()
    if path is None:
        pytest.skip(
            "Chromium not found: install Debian's chromium (apt-get install chromium) to run "
            "the browser test"
        )
    return path


@pytest.fixture
def browser_page(chromium_executable: str) -> Iterator[Any]:
    """A fresh page in headless Chromium, wide enough for the asset graph to show node details."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_executable, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(viewport={"width": 1920, "height": 900})
            page = context.new_page()
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()


@pytest.fixture
def seeded_emulator() -> Iterator[Any]:
    """The in-process emulator (no rate limit) with leads modified now: in the latest window."""
    with run_emulator(rate_limit=0) as emulator:
        emulator.seed_records(
            BASE,
            TABLE,
            [
                {
                    "Email": f"browser{i}@example.com",
                    "First Name": f"Browser{i}",
                    "Status": "New",
                    "Processing Status": "Active",
                }
                for i in range(SEEDED_LEADS)
            ],
        )
        yield emulator


@pytest.fixture
def dagster_storage_database_url(postgres_server) -> Iterator[str]:
    """A fresh, empty database for Dagster's run/event/schedule storage (psycopg2 URL)."""
    name = postgres_server.create_database()
    yield dagster_storage_url(postgres_server.url(name))
    postgres_server.drop_database(name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class DagsterUI:
    url: str
    process: subprocess.Popen
    log_path: Path
    database_url: str

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        session = requests.Session()
        session.trust_env = False  # never through a proxy: the server is on 127.0.0.1
        with session:
            response = session.post(
                f"{self.url}/graphql",
                json={"query": query, "variables": variables or {}},
                timeout=30,
            )
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]


def _wait_until_loaded(ui: DagsterUI, deadline: float) -> None:
    """Until the webserver answers and the code location has loaded (bounded by `deadline`)."""
    session = requests.Session()
    session.trust_env = False
    last = "no answer yet"
    while time.monotonic() < deadline:
        if ui.process.poll() is not None:
            raise AssertionError(
                f"dagster dev exited with {ui.process.returncode}:\n{ui.log_tail()}"
            )
        try:
            if session.get(f"{ui.url}/server_info", timeout=5).status_code == 200:
                workspace = ui.graphql(WORKSPACE_QUERY)["workspaceOrError"]
                entries = workspace.get("locationEntries") or []
                last = repr(workspace)
                for entry in entries:
                    loaded = entry["locationOrLoadError"] or {}
                    if loaded.get("__typename") == "PythonError":
                        raise AssertionError(
                            f"code location {entry['name']} failed to load: {loaded['message']}"
                        )
                    if entry["loadStatus"] == "LOADED" and loaded:
                        return
        except requests.RequestException as error:
            last = repr(error)
        time.sleep(0.5)
    raise AssertionError(
        f"dagster dev not ready within {STARTUP_TIMEOUT_S:.0f}s ({last}):\n{ui.log_tail()}"
    )


def _stop_process_group(process: subprocess.Popen) -> None:
    """Ctrl-C the whole group (as a terminal would), then SIGTERM, then SIGKILL; then sweep any
    member still alive (e.g. a run worker's helper) so nothing is left behind."""
    pgid = process.pid  # start_new_session=True: the leader's pid is the group id
    for sig, grace in ((signal.SIGINT, STOP_GRACE_S), (signal.SIGTERM, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


@pytest.fixture
def dagster_ui(
    chromium_executable: str,  # skip before starting anything when there is no browser
    tmp_path: Path,
    database_url: str,
    dagster_storage_database_url: str,
    seeded_emulator: Any,
) -> Iterator[DagsterUI]:
    """`dagster dev` (webserver + daemon) on the project's workspace.yaml and dagster.yaml."""
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copyfile(instance_yaml(), dagster_home / "dagster.yaml")

    env = dict(os.environ)
    for name in ("RECONCILE_ALERT_WEBHOOK_URL", "RECONCILE_DAGSTER_UI_URL"):
        env.pop(name, None)
    env.update(
        DATABASE_URL=database_url,
        DAGSTER_POSTGRES_URL=dagster_storage_database_url,
        DAGSTER_HOME=str(dagster_home),
        AIRTABLE_API_KEY=seeded_emulator.token,
        AIRTABLE_BASE_ID=BASE,
        AIRTABLE_TABLE=TABLE,
        AIRTABLE_ENDPOINT_URL=seeded_emulator.url,
        PYTHONUNBUFFERED="1",
    )
    port = free_port()
    log_path = tmp_path / "dagster-dev.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            dagster_dev_command(port),
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ui = DagsterUI(
        url=f"http://127.0.0.1:{port}",
        process=process,
        log_path=log_path,
        database_url=database_url,
    )
    try:
        _wait_until_loaded(ui, time.monotonic() + STARTUP_TIMEOUT_S)
        yield ui
    finally:
        _stop_process_group(process)
