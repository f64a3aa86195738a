"""The Dagster UI end to end, in headless Chromium: `dagster dev` on the embedded default shows
the reconcile assets, every asset check and the schedule, and materializing the latest window
with the UI's own buttons (Materialize all → Latest → Launch 1 run) succeeds and fills
PostgreSQL from the emulator.

Set RECONCILE_UPDATE_SCREENSHOTS=1 to refresh docs/ui-asset-graph.png (the README's picture);
otherwise the screenshot goes to the test's temporary directory so a test run never touches the
source tree.
"""

import contextlib
import os
import re
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from reconcile_pipeline.defs.assets import reconcile_assets
from reconcile_pipeline.defs.checks import reconcile_checks
from reconcile_pipeline.defs.naming import reconcile_schedule_name
from reconcile_pipeline.defs.partitions import partition_key_for
from reconcile_pipeline.instance import PROJECT_ROOT
from reconcile_pipeline_tests.browser.conftest import SEEDED_LEADS, DagsterUI

pytestmark = pytest.mark.browser

UI_TIMEOUT_MS = 30_000
RUN_TIMEOUT_S = 150.0
SCREENSHOT = "ui-asset-graph.png"
UPDATE_SCREENSHOTS_ENV = "RECONCILE_UPDATE_SCREENSHOTS"

# The demo project's client `demo` and its leads table: its assets are keyed `demo/leads/…` (one
# set per synced table of each client).
ISSUE_ASSETS = {
    "demo/leads/airtable_leads",
    "demo/leads/postgres_leads",
    "demo/leads/postgres_dirty_leads",
    "demo/leads/airtable_push_results",
}
AUTOMATIONS = [
    reconcile_schedule_name("demo"),
    "failed_check_alert_sensor",
    "reconcile_run_failure_alert",
]

RUN_QUERY = """
query RunStatus($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status tags { key value } }
    ... on PythonError { message }
  }
}
"""
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


def asset_names() -> list[str]:
    return [key.to_user_string() for asset in reconcile_assets for key in asset.keys]


def checks_by_asset() -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    for checks in reconcile_checks:
        for spec in checks.check_specs:
            found[spec.asset_key.to_user_string()].append(spec.name)
    return dict(found)


def wait_for_run(ui: DagsterUI, run_id: str) -> dict:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    run: dict = {}
    while time.monotonic() < deadline:
        run = ui.graphql(RUN_QUERY, {"runId": run_id})["runOrError"]
        assert run["__typename"] == "Run", run
        if run["status"] in TERMINAL:
            return run
        time.sleep(1)
    raise AssertionError(
        f"run {run_id} still {run.get('status')} after {RUN_TIMEOUT_S:.0f}s:\n{ui.log_tail()}"
    )


def screenshot_path(tmp_path: Path) -> Path:
    if os.environ.get(UPDATE_SCREENSHOTS_ENV):
        docs = PROJECT_ROOT / "docs"
        docs.mkdir(exist_ok=True)
        return docs / SCREENSHOT
    return tmp_path / SCREENSHOT


def test_ui_shows_the_pipeline_and_materializes_the_latest_window(
    dagster_ui: DagsterUI, browser_page, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page = browser_page
    ui = dagster_ui
    try:
        # Catalog: the four reconcile assets.
        assert ISSUE_ASSETS <= set(asset_names())
        page.goto(f"{ui.url}/assets")
        for name in asset_names():
            expect(page.locator(f'a[href="/assets/{name}"]').first).to_be_visible(
                timeout=UI_TIMEOUT_MS
            )

        # Each asset's Checks tab lists every check defined on it.
        expected_checks = checks_by_asset()
        assert {"no_echo_marked_dirty", "push_error_rate"} <= {
            name for names in expected_checks.values() for name in names
        }
        for asset, checks in expected_checks.items():
            page.goto(f"{ui.url}/assets/{asset}")
            # The tab bar is rendered again once the definition has loaded (the Partitions tab
            # appears then); a click before that can be lost.
            expect(page.get_by_role("tab", name="Partitions")).to_be_visible(timeout=UI_TIMEOUT_MS)
            page.get_by_role("tab", name="Checks").click()
            page.wait_for_url(re.compile(r"[?&]view=checks"), timeout=UI_TIMEOUT_MS)
            for check in checks:
                expect(page.get_by_text(check, exact=True).first).to_be_visible(
                    timeout=UI_TIMEOUT_MS
                )

        # Automation: the schedule and the two alert sensors.
        page.goto(f"{ui.url}/automation")
        for name in AUTOMATIONS:
            expect(page.get_by_text(name, exact=True).first).to_be_visible(timeout=UI_TIMEOUT_MS)

        # Materialize the latest window from the lineage graph, with the UI's own dialog.
        before = datetime.now(UTC)  # the page may list the partitions as soon as it loads
        page.goto(f"{ui.url}/asset-groups")
        for name in asset_names():
            node = name.rsplit("/", 1)[-1]  # the graph labels a node by its name
            expect(page.get_by_text(node, exact=True).first).to_be_visible(timeout=UI_TIMEOUT_MS)
        page.get_by_role("button", name="Materialize all").click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_be_visible(timeout=UI_TIMEOUT_MS)
        dialog.get_by_role("button", name="Latest", exact=True).click()
        partition_box = dialog.get_by_role("textbox")
        expect(partition_box).not_to_have_value("", timeout=UI_TIMEOUT_MS)
        partition = partition_box.input_value()
        # The in-progress window is the last partition (end_offset=1); a window may have
        # rolled over while the dialog opened (the leads, seeded moments ago, are still pulled
        # then: the pull reaches 5 minutes before its window).
        assert partition in {partition_key_for(before), partition_key_for(datetime.now(UTC))}
        launch = dialog.get_by_role("button", name="Launch 1 run")
        expect(launch).to_be_enabled(timeout=UI_TIMEOUT_MS)
        launch.click()

        # The toast links to the launched run.
        view = page.locator('a[href^="/runs/"]').filter(has_text=re.compile(r"^View$"))
        expect(view).to_be_visible(timeout=UI_TIMEOUT_MS)
        run_id = (view.get_attribute("href") or "").rsplit("/", 1)[-1]
        assert run_id, "the launch toast has no run link"

        run = wait_for_run(ui, run_id)
        assert run["status"] == "SUCCESS", f"run {run_id}: {run['status']}\n{ui.log_tail()}"
        tags = {tag["key"]: tag["value"] for tag in run["tags"]}
        assert tags.get("dagster/partition") == partition
        assert tags.get("dagster/from_ui") == "true"

        # The run page agrees, and the run did its job: the seeded leads are in PostgreSQL.
        page.goto(f"{ui.url}/runs/{run_id}")
        expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=UI_TIMEOUT_MS)
        engine = create_engine(ui.database_url)
        try:
            with engine.connect() as conn:
                leads = conn.execute(text("SELECT count(*) FROM public.leads")).scalar_one()
        finally:
            engine.dispose()
        assert leads == SEEDED_LEADS

        # The asset graph after the run: node details with the passed checks.
        page.goto(f"{ui.url}/asset-groups")
        expect(page.get_by_text("Passed").first).to_be_visible(timeout=UI_TIMEOUT_MS)
        page.screenshot(path=str(screenshot_path(tmp_path)))
    except BaseException:
        failure = tmp_path / "failure.png"
        with contextlib.suppress(Exception):  # the page may be gone; the original error matters
            page.screenshot(path=str(failure))
            print(f"Screenshot at failure: {failure}")
        print(f"dagster dev log ({ui.log_path}):\n{ui.log_tail(80)}")
        raise
