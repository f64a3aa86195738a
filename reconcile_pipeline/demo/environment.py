"""The embedded default for Airtable: the emulator on the demo base, unless you set a token.

With the project's token variable set (`token_env` in reconcile.yaml, AIRTABLE_API_KEY for the
demo), the same code talks to the project's base (AIRTABLE_ENDPOINT_URL defaults to the real
API); otherwise, for the demo project only, an emulator is started and the variables are
exported pointing at it. A project file of your own without its token set is an error that says
which variable to set.

One emulator per RECONCILE_HOME: `reconcile ui` advertises the emulator it serves in
`$RECONCILE_HOME/emulator-endpoint.json`, and every other command of that home (`backfill`,
`demo`, `doctor`, a second `ui`) uses that emulator while it answers instead of starting a second
one on the same data file (whose writes the first would never see, and overwrite).
"""

import contextlib
import datetime as dt
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from reconcile_pipeline import settings
from reconcile_pipeline.airtable.errors import AirtableConfigError

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
    # The emulator when embedded: in this process (`Emulator`), or the one a `reconcile ui` of
    # the same home serves (`EmulatorAdmin`, the same helpers over HTTP).
    emulator: object | None
    shared: bool = False  # True: another process's emulator (see `running_emulator`)


def endpoint_file() -> Path:
    """Where `reconcile ui` advertises its emulator (URL and token; owner-only permissions)."""
    return settings.reconcile_home() / "emulator-endpoint.json"


def advertise_emulator(url: str, token: str) -> Path:
    """Record the emulator this process serves, for the other commands of the same home."""
    path = endpoint_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump({"url": url, "token": token, "pid": os.getpid()}, handle)
    partial.replace(path)
    return path


def withdraw_emulator(url: str) -> None:
    """Remove the advertisement, if it is still this emulator's."""
    path = endpoint_file()
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text(encoding="utf-8")).get("url") == url:
            path.unlink()


def running_emulator() -> dict | None:
    """The emulator advertised in this home ({url, token, pid}), when it answers; else None."""
    try:
        info = json.loads(endpoint_file().read_text(encoding="utf-8"))
        url, token = str(info["url"]), str(info["token"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    pid = info.get("pid")
    if isinstance(pid, int):  # a `reconcile ui` killed outright left its file behind
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, another user's
    try:
        answer = requests.get(f"{url}/_emulator/health", timeout=2)
    except requests.RequestException:
        return None
    if answer.status_code != 200:
        return None
    return {"url": url, "token": token, "pid": pid}


@contextlib.contextmanager
def airtable_target(
    port: int = 0,
    seed_count: int = DEMO_LEADS,
    advertise: bool = False,
    client_key: str | None = None,
) -> Iterator[AirtableTarget]:
    """Export the AIRTABLE_* variables for this process and its children. With the tokens set
    (every client's, or `client_key`'s): the real API. Without a token, for the demo project:
    the emulator a `reconcile ui` of this home serves, when one answers; else an emulator
    started here (on `port`, persisted under RECONCILE_HOME, seeded once), advertised to the
    other commands when `advertise`."""
    from reconcile_pipeline.config.load import load

    project = load()
    declared = project.config.clients
    wanted = [declared[client_key]] if client_key in declared else list(declared.values())
    if not project.is_demo or all(os.environ.get(c.token_env) for c in wanted):
        for client in wanted:
            if not os.environ.get(client.token_env):
                raise AirtableConfigError(
                    f"{client.token_env} is not set: set it to a personal access token for "
                    f"base {client.base_id} (the project file {project.path} names that "
                    "variable). Without a token only the demo project runs, on the embedded "
                    "emulator."
                )
        os.environ.setdefault("AIRTABLE_ENDPOINT_URL", "https://api.airtable.com")
        first = wanted[0]
        first_table = next(iter(first.tables.values())).airtable_table
        yield AirtableTarget(first.base_id, first_table, os.environ["AIRTABLE_ENDPOINT_URL"], None)
        return
    # The emulator only for the demo without a token (the real API needs none of it).
    from reconcile_pipeline.demo.seed_data import demo_campaigns, demo_leads
    from reconcile_pipeline.emulator.admin_client import EmulatorAdmin
    from reconcile_pipeline.emulator.server import run_emulator

    _, client = project.client()  # the demo: one client
    shared = running_emulator()
    if shared is not None:
        logger.info("Using the emulator of the running `reconcile ui` at %s", shared["url"])
        admin = EmulatorAdmin(shared["url"])
        os.environ.update(
            {client.token_env: shared["token"], "AIRTABLE_ENDPOINT_URL": shared["url"]}
        )
        try:
            yield AirtableTarget(DEMO_BASE_ID, DEMO_TABLE, shared["url"], admin, shared=True)
        finally:
            admin.close()
            for name in (client.token_env, "AIRTABLE_ENDPOINT_URL"):
                os.environ.pop(name, None)
        return
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
        url = emulator.url
        if advertise:
            advertise_emulator(url, emulator.token)
        try:
            yield AirtableTarget(DEMO_BASE_ID, DEMO_TABLE, url, emulator)
        finally:
            if advertise:
                withdraw_emulator(url)
            for name in (client.token_env, "AIRTABLE_ENDPOINT_URL"):
                os.environ.pop(name, None)
