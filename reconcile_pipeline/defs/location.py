"""The code location's definitions, built from clients: what `definitions.py` serves for the
project file, and what tests and scripts build for a project file of their own."""

from collections.abc import Mapping, Sequence

import dagster as dg

from reconcile_pipeline.airtable.resource import AirtableResource
from reconcile_pipeline.defs.alert_resource import alert_webhook_resource
from reconcile_pipeline.defs.assets import TableAssets, build_client_assets
from reconcile_pipeline.defs.checks import build_table_checks
from reconcile_pipeline.defs.jobs import ClientJobs, build_client_jobs
from reconcile_pipeline.defs.naming import airtable_resource_key
from reconcile_pipeline.defs.project import ClientSpec
from reconcile_pipeline.defs.resources import PostgresResource
from reconcile_pipeline.defs.sensors import failed_check_alert_sensor, reconcile_run_failure_alert


def airtable_resource(spec: ClientSpec) -> AirtableResource:
    """The client's Airtable resource: its base, and the NAME of its token's variable from the
    project file (the value is read at run time and never shown). The endpoint is read at run
    time too: AIRTABLE_ENDPOINT_URL, else api.airtable.com."""
    return AirtableResource(api_key=dg.EnvVar(spec.token_env), base_id=spec.base_id)


def build_definitions(
    specs: Sequence[ClientSpec],
    tables: Mapping[str, list[TableAssets]] | None = None,
    jobs: Mapping[str, ClientJobs] | None = None,
    resources: Mapping[str, object] | None = None,
    checks: Sequence[dg.AssetChecksDefinition] | None = None,
) -> dg.Definitions:
    """Every client's assets, checks, jobs and schedules, the sensors, and the resources
    (`resources` replaces any of the default ones: tests bind the emulator's token)."""
    tables = tables if tables is not None else {s.key: build_client_assets(s) for s in specs}
    jobs = jobs if jobs is not None else {s.key: build_client_jobs(s, tables[s.key]) for s in specs}
    every_table = [table for spec in specs for table in tables[spec.key]]
    return dg.Definitions(
        # In-process for every run, including materializations launched from the UI: a
        # reconcile is I/O-bound, and the multiprocess executor spends ~30 s starting processes
        # on 2 cores.
        executor=dg.in_process_executor,
        assets=[asset for table in every_table for asset in table.all],
        asset_checks=list(checks)
        if checks is not None
        else [check for table in every_table for check in build_table_checks(table)],
        jobs=[job for spec in specs for job in jobs[spec.key].jobs],
        schedules=[s for spec in specs for s in jobs[spec.key].schedules],
        sensors=[failed_check_alert_sensor, reconcile_run_failure_alert],
        resources={
            **{airtable_resource_key(s.key): airtable_resource(s) for s in specs},
            "postgres": PostgresResource(database_url=dg.EnvVar("DATABASE_URL")),
            "alert_webhook": alert_webhook_resource(),
            **(resources or {}),
        },
    )
