"""The Dagster code location: imports and assembles, nothing else.

Every resource value comes from an environment variable read at run time (`EnvVar`); the
`reconcile` CLI exports the embedded defaults (PostgreSQL, the Airtable emulator) for the
variables you leave unset. See README "Environment".
"""

import dagster as dg

from reconcile_pipeline.airtable.resource import AirtableResource
from reconcile_pipeline.defs.alert_resource import alert_webhook_resource
from reconcile_pipeline.defs.assets import reconcile_assets
from reconcile_pipeline.defs.checks import reconcile_checks
from reconcile_pipeline.defs.jobs import (
    delete_sweep_job,
    delete_sweep_schedule,
    full_reconcile_job,
    full_reconcile_schedule,
    reconcile_job,
)
from reconcile_pipeline.defs.project import base_id, client
from reconcile_pipeline.defs.resources import PostgresResource
from reconcile_pipeline.defs.schedules import reconcile_schedule
from reconcile_pipeline.defs.sensors import failed_check_alert_sensor, reconcile_run_failure_alert

defs = dg.Definitions(
    # In-process for every run, including materializations launched from the UI: a reconcile
    # is I/O-bound, and the multiprocess executor spends ~30 s starting processes on 2 cores.
    executor=dg.in_process_executor,
    assets=reconcile_assets,
    asset_checks=reconcile_checks,
    jobs=[reconcile_job, delete_sweep_job, full_reconcile_job],
    schedules=[reconcile_schedule, delete_sweep_schedule, full_reconcile_schedule],
    sensors=[failed_check_alert_sensor, reconcile_run_failure_alert],
    resources={
        "airtable": AirtableResource(
            # The NAME of the token's variable comes from the project file; its value is read
            # at run time and never shown.
            api_key=dg.EnvVar(client()[1].token_env),
            base_id=base_id(),
            endpoint_url=dg.EnvVar("AIRTABLE_ENDPOINT_URL"),
        ),
        "postgres": PostgresResource(database_url=dg.EnvVar("DATABASE_URL")),
        "alert_webhook": alert_webhook_resource(),
    },
)
