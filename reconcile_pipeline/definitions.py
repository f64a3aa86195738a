"""The Dagster code location: imports and assembles, nothing else.

One location serves every client of the project file (README "Many clients"): per client its
assets, checks, jobs, schedules and an Airtable resource `airtable_<client>` bound to the client's
base and the variable its token is in. Every resource value comes from an environment variable
read at run time (`EnvVar`); the `reconcile` CLI exports the embedded defaults (PostgreSQL, the
Airtable emulator) for the variables you leave unset. See README "Environment".
"""

import dagster as dg

from reconcile_pipeline.airtable.resource import AirtableResource
from reconcile_pipeline.defs.alert_resource import alert_webhook_resource
from reconcile_pipeline.defs.assets import reconcile_assets
from reconcile_pipeline.defs.checks import reconcile_checks
from reconcile_pipeline.defs.jobs import reconcile_jobs, reconcile_schedules
from reconcile_pipeline.defs.naming import airtable_resource_key
from reconcile_pipeline.defs.project import clients
from reconcile_pipeline.defs.resources import PostgresResource, env_var_if_set
from reconcile_pipeline.defs.sensors import failed_check_alert_sensor, reconcile_run_failure_alert


def _airtable_resource(base_id: str, token_env: str) -> AirtableResource:
    endpoint = env_var_if_set("AIRTABLE_ENDPOINT_URL")  # unset: api.airtable.com
    return AirtableResource(
        # The NAME of the token's variable comes from the project file; its value is read at
        # run time and never shown.
        api_key=dg.EnvVar(token_env),
        base_id=base_id,
        **({"endpoint_url": endpoint} if endpoint is not None else {}),
    )


defs = dg.Definitions(
    # In-process for every run, including materializations launched from the UI: a reconcile
    # is I/O-bound, and the multiprocess executor spends ~30 s starting processes on 2 cores.
    executor=dg.in_process_executor,
    assets=reconcile_assets,
    asset_checks=reconcile_checks,
    jobs=reconcile_jobs,
    schedules=reconcile_schedules,
    sensors=[failed_check_alert_sensor, reconcile_run_failure_alert],
    resources={
        **{
            airtable_resource_key(spec.key): _airtable_resource(spec.base_id, spec.token_env)
            for spec in clients()
        },
        "postgres": PostgresResource(database_url=dg.EnvVar("DATABASE_URL")),
        "alert_webhook": alert_webhook_resource(),
    },
)
