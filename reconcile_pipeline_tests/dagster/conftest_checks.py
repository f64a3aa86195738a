"""Helpers for `test_checks_fail.py`: driving each asset check to fail through real Dagster
runs of the reconcile assets, against the emulator over HTTP and a per-test PostgreSQL.

Imported by that test module (not a pytest `conftest.py`: nothing here applies to other tests).
"""

import datetime as dt
import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
from sqlalchemy import text
from sqlalchemy.engine import Engine

from reconcile_pipeline.airtable.client import AirtableClient
from reconcile_pipeline.airtable.resource import AirtableResource
from reconcile_pipeline.defs.assets import reconcile_assets
from reconcile_pipeline.defs.checks import reconcile_checks
from reconcile_pipeline.defs.naming import airtable_resource_key
from reconcile_pipeline.defs.partitions import partition_key_for
from reconcile_pipeline.defs.resources import PostgresResource
from reconcile_pipeline.emulator.core import Emulator

BASE, TABLE = "appDemoLeads00001", "Leads"
CLIENT = "demo"  # the demo project's client: its assets are keyed demo/<table>/…
OVERLAP = dt.timedelta(minutes=5)  # PullConfig.overlap_minutes' default


class FastRetryAirtableResource(AirtableResource):
    """The production resource with a short retry backoff.

    Production backs off 1, 2, 4 … 30 s (it must outlast Airtable's 30-second block); a fault
    injected for a whole run would then cost a minute a request. Same client, same pyairtable
    session, same retry rules: only the waits are shorter.
    """

    max_retries: int = 2
    backoff_factor: float = 0.01

    def _build_client(
        self, log: Any = None, table: str | None = None, fields_by_id: bool = False
    ) -> AirtableClient:
        return AirtableClient(
            token=self.api_key,
            base_id=self.base_id,
            table=table or self.table or "",
            fields_by_id=fields_by_id,
            endpoint_url=self.endpoint_url,
            requests_per_second=self.requests_per_second,
            timeout_seconds=self.timeout_seconds,
            max_retries=self.max_retries,
            backoff_factor=self.backoff_factor,
            backoff_max_seconds=0.05,
            logger=log if isinstance(log, logging.Logger) else None,
        )


def reconcile_resources(emulator: Emulator, database_url: str) -> dict[str, Any]:
    """The run's resources: the emulator (fast retries, no pacing) and the test's database."""
    return {
        airtable_resource_key(CLIENT): FastRetryAirtableResource(
            api_key=emulator.token,
            base_id=BASE,
            table=TABLE,
            endpoint_url=emulator.url,
            requests_per_second=0,
        ),
        "postgres": PostgresResource(database_url=database_url),
    }


# -- runs -----------------------------------------------------------------------------------


def now_key() -> str:
    """The window in progress (computed per run: a test never straddles a window boundary
    with a stale key)."""
    return partition_key_for(dt.datetime.now(dt.UTC))


def key_for(moment: dt.datetime) -> str:
    return partition_key_for(moment)


def materialize(resources: dict[str, Any], partition_key: str | None = None):
    """One real Dagster run of the four reconcile assets and every check, for one window."""
    return dg.materialize(
        [*reconcile_assets, *reconcile_checks],
        resources=resources,
        partition_key=partition_key or now_key(),
        raise_on_error=False,
    )


def materialized(result) -> set[str]:
    # The leads table's asset names, without the client and table prefix (`demo/leads/…`).
    return {
        e.asset_key.path[-1]
        for e in result.get_asset_materialization_events()
        if e.asset_key.path[:2] == [CLIENT, "leads"]
    }


def asset_metadata(result, asset: str) -> dict[str, Any]:
    event = next(
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey([CLIENT, "leads", asset])
    )
    return {k: v.value for k, v in event.materialization.metadata.items()}


def evaluation(result, check_name: str):
    """The run's evaluation of one check of the leads table (a check that did not run is a
    test failure)."""
    found = [
        e
        for e in result.get_asset_check_evaluations()
        if e.check_name == check_name and e.asset_key.path[:2] == [CLIENT, "leads"]
    ]
    names = sorted(e.check_name for e in result.get_asset_check_evaluations())
    assert len(found) == 1, f"{check_name} evaluated {len(found)} times; evaluated: {names}"
    return found[0]


def check_metadata(evaluation_) -> dict[str, Any]:
    return {k: v.value for k, v in evaluation_.metadata.items()}


def offenders(metadata: dict[str, Any]) -> list[dict[str, str]]:
    """The rows of a check's `offenders` markdown table (empty for `_none_`)."""
    lines = [line for line in metadata["offenders"].splitlines() if line.startswith("| ")]
    if not lines:
        return []
    split = re.compile(r"(?<!\\)\|")

    def cells(line: str) -> list[str]:
        return [c.strip().replace("\\|", "|") for c in split.split(line.strip())[1:-1]]

    header = cells(lines[0])
    return [dict(zip(header, cells(line), strict=True)) for line in lines[1:]]


def passed_checks(result) -> dict[str, bool]:
    """The leads table's checks by name (the demo's campaigns table has the same ones)."""
    return {
        e.check_name: e.passed
        for e in result.get_asset_check_evaluations()
        if e.asset_key.path[:2] == [CLIENT, "leads"]
    }


# -- the Airtable side ----------------------------------------------------------------------


def lead_fields(i: int, **overrides: Any) -> dict[str, Any]:
    return {
        "Email": f"lead{i}@example.com",
        "First Name": f"Lead{i}",
        "Status": "New",
        "Processing Status": "Active",
        "Campaign ID": "cmp-1",
        **overrides,
    }


def seed(emulator: Emulator, count: int, **times: Any) -> list[str]:
    return emulator.seed_records(BASE, TABLE, [lead_fields(i) for i in range(count)], **times)


def airtable_fields(emulator: Emulator, record_id: str) -> dict[str, Any]:
    (record,) = [r for r in emulator.all_records(BASE, TABLE) if r["id"] == record_id]
    return record["fields"]


def api_requests(emulator: Emulator) -> list[dict[str, Any]]:
    return emulator.request_log()["entries"]


class PushWriteFaults:
    """Makes the emulator answer 503 to the push's PATCH requests (with their retries) while
    the run's listing and the push's fresh re-read go through.

    The emulator's fault injection counts requests, not methods: `calibrate` counts the
    requests a run makes when nothing is dirty (the pull: metadata + listing pages); a later
    run with the same pull then sends the re-read next (one request for up to 100 leads) and
    its PATCHes after that. `verify` asserts from the request log that it happened so.
    """

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.pull_requests: int | None = None

    def calibrate(self, resources: dict[str, Any]):
        self.emulator.reset_request_log()
        result = materialize(resources)
        assert result.success
        assert asset_metadata(result, "airtable_push_results")["dirty"] == 0
        self.pull_requests = len(api_requests(self.emulator))
        return result

    @contextmanager
    def failing(self, status: int = 503, requests: int = 40) -> Iterator[None]:
        assert self.pull_requests is not None, "calibrate first"
        first_write = self.pull_requests + 2
        self.emulator.reset_request_log()
        self.emulator.set_faults(
            fail_nth={n: status for n in range(first_write, first_write + requests)}
        )
        try:
            yield
        finally:
            self.emulator.clear_faults()

    def verify(self, status: int = 503) -> None:
        entries = api_requests(self.emulator)
        patches = [e for e in entries if e["method"] == "PATCH"]
        others = [e for e in entries if e["method"] != "PATCH"]
        assert patches, "the run sent no PATCH"
        assert {e["status"] for e in patches} == {status}, patches
        assert {e["status"] for e in others} == {200}, others


# -- the PostgreSQL side --------------------------------------------------------------------


def portal_write(engine: Engine, record_id: str, **values: Any) -> None:
    """A portal edit: a plain UPDATE in an untagged transaction."""
    assignments = ", ".join(f"{c} = :{c}" for c in values)
    with engine.begin() as conn:
        conn.execute(
            text(f"UPDATE leads SET {assignments} WHERE airtable_record_id = :rid"),
            {"rid": record_id, **values},
        )


def lead(engine: Engine, record_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(
            conn.execute(
                text("SELECT * FROM leads WHERE airtable_record_id = :rid"), {"rid": record_id}
            )
            .mappings()
            .one()
        )


def sync_state(engine: Engine, record_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(
            conn.execute(
                text("SELECT * FROM reconcile.sync_state WHERE airtable_record_id = :rid"),
                {"rid": record_id},
            )
            .mappings()
            .one()
        )


def high_water_mark(engine: Engine) -> dt.datetime | None:
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT mark FROM reconcile.high_water_marks "
                "WHERE client = :client AND table_key = 'leads'"
            ),
            {"client": CLIENT},
        ).scalar_one_or_none()


CAPTURE_TRIGGER = "reconcile_capture_portal_change"
ORIGIN_CHECK = re.compile(
    r"IF current_setting\('reconcile\.origin', true\) = 'reconciler' THEN\s*"
    r"RETURN NULL;\s*END IF;\s*"
)


@contextmanager
def capture_trigger_ignoring_origin(engine: Engine) -> Iterator[None]:
    """A broken deployment: the capture trigger on public.leads calls a copy of
    `reconcile.capture_portal_change` without its origin check, and has no WHEN condition,
    so the reconciler's own writes count as portal edits. The real trigger is put back on
    exit."""
    with engine.begin() as conn:
        original_trigger = conn.execute(
            text(
                "SELECT pg_get_triggerdef(oid) FROM pg_trigger "
                "WHERE tgrelid = 'public.leads'::regclass AND tgname = :name"
            ),
            {"name": CAPTURE_TRIGGER},
        ).scalar_one()
        definition = conn.execute(
            text("SELECT pg_get_functiondef('reconcile.capture_portal_change'::regproc)")
        ).scalar_one()
        copy, removed = ORIGIN_CHECK.subn("", definition)
        assert removed == 1, "the origin check of reconcile.capture_portal_change moved"
        copy = copy.replace(
            "reconcile.capture_portal_change()", "public.capture_portal_change_ignoring_origin()"
        )
        assert "current_setting('reconcile.origin'" not in copy
        conn.execute(text(copy))
        conn.execute(
            text(
                f"DROP TRIGGER {CAPTURE_TRIGGER} ON public.leads; "
                f"CREATE TRIGGER {CAPTURE_TRIGGER} AFTER INSERT OR UPDATE ON public.leads "
                "FOR EACH ROW EXECUTE FUNCTION public.capture_portal_change_ignoring_origin("
                f"'{CLIENT}', 'leads', 'airtable_record_id')"
            )
        )
    try:
        yield
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP TRIGGER {CAPTURE_TRIGGER} ON public.leads"))
            conn.execute(text(original_trigger))


class RacingPortalEdit(threading.Thread):
    """A portal transaction that updates a lead and holds its row lock until another session
    waits on it (the merge), then a second longer, then commits."""

    def __init__(self, engine: Engine, record_id: str, hold_seconds: float = 1.0, **values):
        super().__init__(name="racing-portal-edit", daemon=True)
        self.engine, self.record_id, self.values = engine, record_id, values
        self.hold_seconds = hold_seconds
        self.locked = threading.Event()
        self.waiter_seen = False
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            assignments = ", ".join(f"{c} = :{c}" for c in self.values)
            with self.engine.connect() as conn:
                with conn.begin():
                    conn.execute(
                        text(f"UPDATE leads SET {assignments} WHERE airtable_record_id = :rid"),
                        {"rid": self.record_id, **self.values},
                    )
                    pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
                    self.locked.set()
                    self.waiter_seen = self._wait_for_waiter(pid)
                    if self.waiter_seen:
                        time.sleep(self.hold_seconds)
        except BaseException as error:  # noqa: BLE001 — reported by the test
            self.error = error
            self.locked.set()

    def _wait_for_waiter(self, pid: int, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        with self.engine.connect() as probe:
            while time.monotonic() < deadline:
                waiting = probe.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE CAST(:pid AS int) = ANY(pg_blocking_pids(pid))"
                    ),
                    {"pid": pid},
                ).scalar_one()
                probe.rollback()
                if waiting:
                    return True
                time.sleep(0.02)
        return False
