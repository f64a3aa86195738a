"""Smoke test: the code location loads with everything the UI shows (one test, not the suite)."""

import dagster as dg

from reconcile_pipeline.definitions import defs


def test_code_location_loads_assets_checks_jobs_schedules_and_sensors():
    repository = defs.get_repository_def()

    assert {key.to_user_string() for key in repository.asset_graph.get_all_asset_keys()} == {
        "demo/leads/airtable_leads",
        "demo/leads/postgres_leads",
        "demo/leads/postgres_dirty_leads",
        "demo/leads/airtable_push_results",
        # The demo's second table, linked from leads: synced first.
        "demo/campaigns/airtable_campaigns",
        "demo/campaigns/postgres_campaigns",
        "demo/campaigns/postgres_dirty_campaigns",
        "demo/campaigns/airtable_push_results",
    }
    check_names = {key.name for key in repository.asset_graph.asset_check_keys}
    assert {
        "no_echo_marked_dirty",
        "one_lead_per_airtable_record",
        "no_repeated_push",
        "push_error_rate",
        "no_drift_in_window",
        "reconcile_is_fresh",
    } <= check_names
    assert {job.name for job in repository.get_all_jobs()} >= {
        "reconcile_demo",
        "delete_sweep_demo",
        "full_reconcile_demo",
    }
    assert repository.has_schedule_def("reconcile_schedule_demo")
    assert repository.has_sensor_def("failed_check_alert_sensor")
    assert repository.has_sensor_def("reconcile_run_failure_alert")
    pulled = defs.resolve_assets_def(dg.AssetKey(["demo", "leads", "airtable_leads"]))
    assert pulled.backfill_policy == dg.BackfillPolicy.single_run()
