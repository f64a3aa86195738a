"""Smoke test: the code location loads with everything the UI shows (one test, not the suite)."""

import dagster as dg

from reconcile_pipeline.definitions import defs


def test_code_location_loads_assets_checks_jobs_schedules_and_sensors():
    repository = defs.get_repository_def()

    assert {key.to_user_string() for key in repository.asset_graph.get_all_asset_keys()} == {
        "leads/airtable_leads",
        "leads/postgres_leads",
        "leads/postgres_dirty_leads",
        "leads/airtable_push_results",
        # The demo's second table, linked from leads: synced first.
        "campaigns/airtable_campaigns",
        "campaigns/postgres_campaigns",
        "campaigns/postgres_dirty_campaigns",
        "campaigns/airtable_push_results",
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
        "reconcile_job",
        "delete_sweep_job",
        "full_reconcile_job",
    }
    assert repository.has_schedule_def("reconcile_schedule")
    assert repository.has_sensor_def("failed_check_alert_sensor")
    assert repository.has_sensor_def("reconcile_run_failure_alert")
    policy = defs.resolve_assets_def(dg.AssetKey(["leads", "airtable_leads"])).backfill_policy
    assert policy == dg.BackfillPolicy.single_run()
