"""The review console in headless Chromium, end to end with real runs: the demo client's
reconcile job (in-process through Dagster, the emulator as Airtable) leaves a true conflict and a
quarantined field; an operator signs in, resolves the conflict with the portal's value from the
page, and the next run pushes it to Airtable; releases the held field; finds the record by
e-mail and reads its history.

Set RECONCILE_UPDATE_SCREENSHOTS=1 to refresh docs/console-*.png (the README's pictures);
otherwise the screenshots go to the test's temporary directory.
"""

import datetime as dt
import os
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import text

from reconcile_pipeline.airtable.resource import AirtableResource
from reconcile_pipeline.config.install import install_capture, project_mappings
from reconcile_pipeline.console import create_app, running_console
from reconcile_pipeline.defs.location import build_definitions
from reconcile_pipeline.defs.naming import airtable_resource_key, reconcile_job_name
from reconcile_pipeline.defs.partitions import partition_key_for
from reconcile_pipeline.defs.project import specs_of
from reconcile_pipeline.defs.resources import PostgresResource
from reconcile_pipeline.emulator.server import run_emulator
from reconcile_pipeline.instance import PROJECT_ROOT
from reconcile_pipeline_tests.console.conftest import CLIENT, TOKEN, scalar

pytestmark = pytest.mark.browser

BASE, TABLE = "appDemoLeads00001", "Leads"
UPDATE_SCREENSHOTS_ENV = "RECONCILE_UPDATE_SCREENSHOTS"
ADA = "ada.lovelace@example.com"
LONG_COMPANY = "Initech " * 40  # 320 characters: the demo maps at most 255


def screenshot(page, tmp_path: Path, name: str) -> None:
    if os.environ.get(UPDATE_SCREENSHOTS_ENV):
        folder = PROJECT_ROOT / "docs"
        folder.mkdir(exist_ok=True)
    else:
        folder = tmp_path
    page.screenshot(path=str(folder / f"console-{name}.png"), full_page=True)


@pytest.fixture
def emulator():
    with run_emulator(rate_limit=0) as emulator:
        yield emulator


@pytest.fixture
def deployment(emulator, engine, database_url, project):
    """The demo project's definitions, its token bound to the emulator's; capture installed
    from the file as `reconcile db upgrade` does."""
    report = install_capture(engine, project_mappings(project))
    assert report.ok, report.lines()
    specs = specs_of(project)
    resources = {
        airtable_resource_key(spec.key): AirtableResource(
            api_key=emulator.token,
            base_id=spec.base_id,
            endpoint_url=emulator.url,
            requests_per_second=0,
        )
        for spec in specs
    }
    return build_definitions(
        specs, resources={**resources, "postgres": PostgresResource(database_url=database_url)}
    )


def reconcile(defs: dg.Definitions, instance: dg.DagsterInstance) -> str:
    job = defs.resolve_job_def(reconcile_job_name(CLIENT))
    result = job.execute_in_process(
        instance=instance,
        partition_key=partition_key_for(dt.datetime.now(dt.UTC)),
        raise_on_error=False,
    )
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    return result.run_id


def airtable_claimed_by(emulator, record_id: str):
    record = next(r for r in emulator.all_records(BASE, TABLE) if r["id"] == record_id)
    return record["fields"].get("Claimed By")


def test_resolve_release_and_history_from_the_console(
    emulator, deployment, engine, project, browser_page, tmp_path
):
    from playwright.sync_api import expect

    instance = dg.DagsterInstance.ephemeral()
    ada, held = emulator.seed_records(
        BASE,
        TABLE,
        [
            {"Email": ADA, "First Name": "Ada", "Status": "New", "Processing Status": "Active"},
            {"Email": "bo@initech.test", "First Name": "Bo", "Company": LONG_COMPANY},
        ],
    )
    reconcile(deployment, instance)  # a full pull: both leads in, Bo's company held

    # Both sides change Ada's claim: a true conflict, which Airtable wins.
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE public.leads SET claimed_by = 'carol' WHERE airtable_record_id = :r"),
            {"r": ada},
        )
    emulator.update_record_fields(BASE, TABLE, ada, {"Claimed By": "bob"})
    reconcile(deployment, instance)
    conflict_id = scalar(
        engine,
        "SELECT id FROM reconcile.conflicts WHERE airtable_record_id = :r AND field = "
        "'claimed_by' AND status = 'open'",
        r=ada,
    )
    hold_id = scalar(
        engine,
        "SELECT id FROM reconcile.quarantine WHERE airtable_record_id = :r AND field = 'company' "
        "AND released_at IS NULL",
        r=held,
    )
    assert airtable_claimed_by(emulator, ada) == "bob"

    app = create_app(engine, project, TOKEN, "http://127.0.0.1:3000")
    page = browser_page
    page.set_viewport_size({"width": 1440, "height": 900})
    with running_console(app, port=0) as console:
        # Sign in once with the token.
        page.goto(f"{console.url}/conflicts")
        expect(page.get_by_text("read-only")).to_have_count(0)
        page.get_by_role("link", name="Sign in to make changes").click()
        page.locator("input[name=token]").fill(TOKEN)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("status")).to_contain_text("Signed in")
        page.goto(f"{console.url}/")
        expect(page.locator('tr[data-table="leads"]')).to_contain_text("Demo Sales Portal")
        screenshot(page, tmp_path, "overview")

        # The conflict: base, both values and the decision; resolve with the portal's value.
        page.goto(f"{console.url}/conflicts")
        row = page.locator(f"#conflict-{conflict_id}")
        expect(row.locator("td.airtable")).to_have_text("bob")
        expect(row.locator("td.portal")).to_have_text("carol")
        screenshot(page, tmp_path, "conflicts")
        row.get_by_role("link", name=f"#{conflict_id}").click()
        expect(page.get_by_role("heading", name=f"Conflict #{conflict_id}")).to_be_visible()
        screenshot(page, tmp_path, "conflict")
        page.get_by_role("button", name="Use the portal's").click()
        expect(page.get_by_role("status")).to_contain_text(f"Conflict #{conflict_id} resolved")
        expect(page.get_by_role("heading", name=f"Conflict #{conflict_id}")).to_contain_text(
            "resolved"
        )
        assert (
            scalar(
                engine, "SELECT claimed_by FROM public.leads WHERE airtable_record_id = :r", r=ada
            )
            == "carol"
        )

        # The next run of the client pushes it to Airtable.
        push_run = reconcile(deployment, instance)
        assert airtable_claimed_by(emulator, ada) == "carol"

        # Release Bo's held company.
        page.goto(f"{console.url}/quarantine")
        hold = page.locator(f"#hold-{hold_id}")
        expect(hold).to_contain_text("longer than 255")
        expect(hold).to_contain_text("Company (company)")
        screenshot(page, tmp_path, "quarantine")
        hold.get_by_role("button", name="Release").click()
        expect(page.get_by_role("status")).to_contain_text("1 hold(s) released")
        expect(page.locator(f"#hold-{hold_id}")).to_have_count(0)
        assert scalar(
            engine,
            "SELECT released_at IS NOT NULL FROM reconcile.quarantine WHERE id = :i",
            i=hold_id,
        )

        # Find Ada by e-mail and read her history, newest first.
        page.get_by_role("searchbox", name="Find a record").fill(ADA.upper())
        page.get_by_role("button", name="Find").click()
        expect(page.get_by_role("heading", name=f"History of {ada}")).to_be_visible()
        changes = page.locator("table.history tbody tr")
        expect(changes.first).to_contain_text("portal → Airtable")  # the push, newest
        expect(changes.first).to_contain_text("carol")
        expect(changes.first.get_by_role("link", name=push_run[:8])).to_have_attribute(
            "href", f"http://127.0.0.1:3000/runs/{push_run}"
        )
        expect(page.locator("table.history")).to_contain_text("conflict_resolution:portal")
        screenshot(page, tmp_path, "history")
