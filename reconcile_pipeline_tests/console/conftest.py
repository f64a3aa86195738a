"""Fixtures for the review console: the demo project on the per-test migrated database, seeded
with what runs leave behind (leads, their sync state, a conflict, history, a hold, runs, a
high-water mark), and the console served by uvicorn on a free loopback port, driven over HTTP
with requests (Starlette's TestClient needs httpx, which Dagster does not install)."""

import contextlib
import datetime as dt
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
from sqlalchemy import text
from sqlalchemy.engine import Engine

from reconcile_pipeline.config.load import DEMO_FILE, Project, load
from reconcile_pipeline.console import create_app, running_console
from reconcile_pipeline.engine.repository import Repository
from reconcile_pipeline_tests.browser import conftest as browser_fixtures

TOKEN = "console-test-token-4f8a9b1c2d3e"
CLIENT, TABLE = "demo", "leads"
RECORD = "recConsole0000001"
OTHER = "recConsole0000002"
SCRIPT = "<script>alert(1)</script>"
NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
LONG_COMPANY = "Initech " * 40


@pytest.fixture
def project() -> Project:
    return load(DEMO_FILE)


@dataclass
class Seeded:
    conflict_id: int  # claimed_by: Airtable's "bob" kept over the portal's "carol"
    notes_conflict_id: int  # notes: Airtable's SCRIPT kept over the portal's
    hold_id: int  # company of OTHER, too long (a pull hold)


def portal_insert(conn, **values) -> None:
    columns = ", ".join(values)
    conn.execute(
        text(f"INSERT INTO public.leads ({columns}) VALUES ({', '.join(':' + c for c in values)})"),
        values,
    )


def seed(engine: Engine, project: Project) -> Seeded:
    """What two runs of the demo client left: two leads (one holding a note with a script tag),
    two conflicts on the first, its history, a hold on the second, the runs and the mark."""
    for mapping in project.all_mappings():
        Repository(engine, mapping).register_tracked_columns()
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL reconcile.origin = 'reconciler'"))  # the engine's writes
        portal_insert(
            conn,
            airtable_record_id=RECORD,
            email="ada@example.com",
            phone="+44 20 7946 0018",
            first_name="Ada",
            claimed_by="bob",
            notes=SCRIPT,
            client_id=CLIENT,
        )
        portal_insert(conn, airtable_record_id=OTHER, email="bo@example.com", first_name="Bo")
        for rid in (RECORD, OTHER):
            conn.execute(
                text(
                    "INSERT INTO reconcile.sync_state (client, table_key, airtable_record_id, "
                    "base_values, airtable_modified_at, airtable_created_at) VALUES (:c, :t, :r, "
                    "CAST(:base AS jsonb), :at, :at)"
                ),
                {
                    "c": CLIENT,
                    "t": TABLE,
                    "r": rid,
                    "base": json.dumps({"claimed_by": "bob"}),
                    "at": NOW - dt.timedelta(days=1),
                },
            )
        ids = []
        for field, base, airtable, portal in (
            ("claimed_by", "ana", "bob", "carol"),
            ("notes", None, SCRIPT, "portal note"),
        ):
            ids.append(
                conn.execute(
                    text(
                        "INSERT INTO reconcile.conflicts (client, table_key, airtable_record_id, "
                        "field, base_value, airtable_value, portal_value, decided_value, policy, "
                        "decision, recommendation, detected_at, run_id, window_start, window_end) "
                        "VALUES (:c, :t, :r, :f, CAST(:base AS jsonb), CAST(:a AS jsonb), "
                        "CAST(:p AS jsonb), CAST(:a AS jsonb), 'airtable_wins', 'airtable_wins', "
                        "'Airtable''s value was kept; resolve with the portal''s value if it was "
                        "right', :at, 'run-two', :ws, :we) RETURNING id"
                    ),
                    {
                        "c": CLIENT,
                        "t": TABLE,
                        "r": RECORD,
                        "f": field,
                        "base": json.dumps(base),
                        "a": json.dumps(airtable),
                        "p": json.dumps(portal),
                        "at": NOW,
                        "ws": NOW - dt.timedelta(minutes=20),
                        "we": NOW,
                    },
                ).scalar_one()
            )
        history = [
            ("*", None, {"email": "ada@example.com"}, "airtable_to_postgres", "inserted", 3),
            ("claimed_by", "ana", "bob", "airtable_to_postgres", "conflict", 2),
            ("notes", None, SCRIPT, "airtable_to_postgres", None, 1),
        ]
        for field, old, new, direction, reason, hours_ago in history:
            conn.execute(
                text(
                    "INSERT INTO reconcile.change_history (client, table_key, airtable_record_id, "
                    "field, old_value, new_value, direction, reason, run_id, window_start, "
                    "window_end, changed_at) VALUES (:c, :t, :r, :f, CAST(:o AS jsonb), "
                    "CAST(:n AS jsonb), :d, :reason, 'run-one', :ws, :we, :at)"
                ),
                {
                    "c": CLIENT,
                    "t": TABLE,
                    "r": RECORD,
                    "f": field,
                    "o": json.dumps(old),
                    "n": json.dumps(new),
                    "d": direction,
                    "reason": reason,
                    "ws": NOW - dt.timedelta(hours=hours_ago, minutes=20),
                    "we": NOW - dt.timedelta(hours=hours_ago),
                    "at": NOW - dt.timedelta(hours=hours_ago),
                },
            )
        hold_id = conn.execute(
            text(
                "INSERT INTO reconcile.quarantine (client, table_key, airtable_record_id, "
                "direction, reason, field, raw_value, first_seen_at, last_seen_at, run_id) "
                "VALUES (:c, :t, :r, 'pull', 'Company: 320 characters, longer than 255', "
                "'company', CAST(:raw AS jsonb), :at, :at, 'run-one') RETURNING id"
            ),
            {"c": CLIENT, "t": TABLE, "r": OTHER, "raw": json.dumps(LONG_COMPANY), "at": NOW},
        ).scalar_one()
        for stage, run_id in (("pull", "run-pull-1"), ("push", "run-push-1")):
            conn.execute(
                text(
                    "INSERT INTO reconcile.runs (client, table_key, stage, run_id, window_start, "
                    "window_end, stats, started_at, finished_at) VALUES (:c, :t, :s, :run, :ws, "
                    ":we, '{}', :we, :we)"
                ),
                {
                    "c": CLIENT,
                    "t": TABLE,
                    "s": stage,
                    "run": run_id,
                    "ws": NOW - dt.timedelta(minutes=20),
                    "we": NOW,
                },
            )
        conn.execute(
            text(
                "INSERT INTO reconcile.high_water_marks (client, table_key, mark) "
                "VALUES (:c, :t, :m)"
            ),
            {"c": CLIENT, "t": TABLE, "m": NOW},
        )
    return Seeded(ids[0], ids[1], hold_id)


@pytest.fixture
def seeded(engine: Engine, project: Project) -> Seeded:
    return seed(engine, project)


class Browser:
    """requests against one served console, keeping cookies like a browser."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()
        self.http.trust_env = False  # never through a proxy: the server is on 127.0.0.1

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.http.get(self.url + path, allow_redirects=False, timeout=30, **kwargs)

    def post(self, path: str, data: dict | list, **kwargs) -> requests.Response:
        return self.http.post(
            self.url + path, data=data, allow_redirects=False, timeout=30, **kwargs
        )

    def csrf(self, path: str = "/") -> str:
        page = self.get(path)
        assert page.status_code == 200, page.text
        found = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
        assert found, "no CSRF token on the page"
        return found.group(1)

    def sign_in(self, token: str = TOKEN) -> requests.Response:
        return self.post("/signin", {"csrf": self.csrf("/signin"), "token": token, "next": "/"})


@pytest.fixture
def serve_console(engine: Engine, project: Project) -> Iterator:
    """serve_console(token=None, ui=None) → a Browser on a console served on a free port."""
    with contextlib.ExitStack() as stack:

        def start(token: str | None = None, ui: str | None = None) -> Browser:
            app = create_app(engine, project, token, ui)
            served = stack.enter_context(running_console(app, port=0))
            return Browser(served.url)

        yield start


@pytest.fixture
def console(serve_console) -> Browser:
    """A console with writes enabled (the token set), not signed in yet."""
    return serve_console(TOKEN, "http://dagster.test:3000/")


@pytest.fixture
def operator(console: Browser) -> Browser:
    """A console with writes enabled and the operator signed in."""
    assert console.sign_in().status_code == 303
    return console


def scalar(engine: Engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


# Headless Chromium, as the Dagster UI's browser test drives it (Debian's chromium; skipped
# when absent). Bound here so the console's tests share the same fixtures.
chromium_executable = browser_fixtures.chromium_executable
browser_page = browser_fixtures.browser_page
