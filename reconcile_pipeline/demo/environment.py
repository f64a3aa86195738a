"""The embedded default for Airtable: the emulator on the demo base, unless you set a token.

With AIRTABLE_API_KEY set, the same code talks to your base (AIRTABLE_BASE_ID, AIRTABLE_TABLE,
AIRTABLE_ENDPOINT_URL default to the real API); otherwise an emulator is started and the
variables are exported pointing at it.
"""

import contextlib
import datetime as dt
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

from reconcile_pipeline import settings
from reconcile_pipeline.demo.seed_data import demo_leads
from reconcile_pipeline.emulator.server import run_emulator

logger = logging.getLogger(__name__)

DEMO_BASE_ID = "appDemoLeads00001"
DEMO_TABLE = "Leads"
DEMO_LEADS = 3000


@dataclass
class AirtableTarget:
    base_id: str
    table: str
    endpoint_url: str
    emulator: object | None  # the in-process emulator when embedded


@contextlib.contextmanager
def airtable_target(port: int = 0, seed_count: int = DEMO_LEADS) -> Iterator[AirtableTarget]:
    """Export the AIRTABLE_* variables for this process and its children; start the emulator
    (on `port`, persisted under RECONCILE_HOME, seeded once) when no token is set."""
    if os.environ.get("AIRTABLE_API_KEY"):
        if not os.environ.get("AIRTABLE_BASE_ID"):
            raise SystemExit(
                "AIRTABLE_API_KEY is set but AIRTABLE_BASE_ID is not: set it to "
                "your base id (app…)."
            )
        os.environ.setdefault("AIRTABLE_TABLE", DEMO_TABLE)
        os.environ.setdefault("AIRTABLE_ENDPOINT_URL", "https://api.airtable.com")
        yield AirtableTarget(
            os.environ["AIRTABLE_BASE_ID"],
            os.environ["AIRTABLE_TABLE"],
            os.environ["AIRTABLE_ENDPOINT_URL"],
            None,
        )
        return
    data = settings.reconcile_home() / "emulator.json"
    data.parent.mkdir(parents=True, exist_ok=True)
    # Rate limit on, as Airtable's: the demo shows that pacing keeps us under it.
    with run_emulator(rate_limit=5, data_path=data, port=port) as emulator:
        if not emulator.all_records(DEMO_BASE_ID, DEMO_TABLE):
            leads, created, modified = demo_leads(seed_count, dt.datetime.now(dt.UTC))
            emulator.seed_records(
                DEMO_BASE_ID, DEMO_TABLE, leads, created_time=created, modified_time=modified
            )
            logger.info("Seeded the emulator with %d demo leads", seed_count)
        os.environ.update(
            {
                "AIRTABLE_API_KEY": emulator.token,
                "AIRTABLE_BASE_ID": DEMO_BASE_ID,
                "AIRTABLE_TABLE": DEMO_TABLE,
                "AIRTABLE_ENDPOINT_URL": emulator.url,
            }
        )
        try:
            yield AirtableTarget(DEMO_BASE_ID, DEMO_TABLE, emulator.url, emulator)
        finally:
            for name in ("AIRTABLE_API_KEY", "AIRTABLE_ENDPOINT_URL"):
                os.environ.pop(name, None)
