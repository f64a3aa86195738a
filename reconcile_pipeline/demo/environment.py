"""The embedded default for Airtable: the emulator on the demo base, unless you set a token.

With the project's token variable set (`token_env` in reconcile.yaml, AIRTABLE_API_KEY for the
demo), the same code talks to the project's base (AIRTABLE_ENDPOINT_URL defaults to the real
API); otherwise, for the demo project only, an emulator is started and the variables are
exported pointing at it. A project file of your own without its token set is an error that says
which variable to set.
"""

import contextlib
import datetime as dt
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

from reconcile_pipeline import settings
from reconcile_pipeline.demo.seed_data import demo_campaigns, demo_leads
from reconcile_pipeline.emulator.server import run_emulator

logger = logging.getLogger(__name__)

DEMO_BASE_ID = "appDemoLeads00001"
DEMO_TABLE = "Leads"
DEMO_CAMPAIGNS_TABLE = "Campaigns"
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
    from reconcile_pipeline.config.load import load

    project = load()
    _, client = project.client()
    first_table = next(iter(client.tables.values())).airtable_table
    if os.environ.get(client.token_env):
        os.environ.setdefault("AIRTABLE_ENDPOINT_URL", "https://api.airtable.com")
        yield AirtableTarget(
            client.base_id, first_table, os.environ["AIRTABLE_ENDPOINT_URL"], None
        )
        return
    if not project.is_demo:
        raise SystemExit(
            f"{client.token_env} is not set: set it to a personal access token for base "
            f"{client.base_id} (the project file {project.path} names that variable). Without "
            "a token only the demo project runs, on the embedded emulator."
        )
    data = settings.reconcile_home() / "emulator.json"
    data.parent.mkdir(parents=True, exist_ok=True)
    # Rate limit on, as Airtable's: the demo shows that pacing keeps us under it.
    with run_emulator(rate_limit=5, data_path=data, port=port) as emulator:
        if not emulator.all_records(DEMO_BASE_ID, DEMO_TABLE):
            now = dt.datetime.now(dt.UTC)
            leads, created, modified = demo_leads(seed_count, now)
            campaign_ids = emulator.seed_records(
                DEMO_BASE_ID,
                DEMO_CAMPAIGNS_TABLE,
                [campaign for _, campaign in demo_campaigns()],
                created_time=min(created, default=now),
            )
            # Each lead links to its campaign record (the demo's second, linked table).
            by_key = dict(zip((key for key, _ in demo_campaigns()), campaign_ids, strict=True))
            for lead in leads:
                lead["Campaign"] = [by_key[lead["Campaign ID"]]]
            emulator.seed_records(
                DEMO_BASE_ID, DEMO_TABLE, leads, created_time=created, modified_time=modified
            )
            logger.info(
                "Seeded the emulator with %d demo leads in %d campaigns",
                seed_count,
                len(campaign_ids),
            )
        os.environ.update(
            {
                client.token_env: emulator.token,
                "AIRTABLE_ENDPOINT_URL": emulator.url,
            }
        )
        try:
            yield AirtableTarget(DEMO_BASE_ID, DEMO_TABLE, emulator.url, emulator)
        finally:
            for name in (client.token_env, "AIRTABLE_ENDPOINT_URL"):
                os.environ.pop(name, None)
