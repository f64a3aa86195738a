"""The Dagster code location: imports and assembles, nothing else.

One location serves every client of the project file (README "Many clients"): per client its
assets, checks, jobs, schedules and an Airtable resource `airtable_<client>` bound to the client's
base and the variable its token is in. Every resource value comes from an environment variable
read at run time (`EnvVar`); the `reconcile` CLI exports the embedded defaults (PostgreSQL, the
Airtable emulator) for the variables you leave unset. See README "Environment".
"""

from reconcile_pipeline.defs.assets import client_tables
from reconcile_pipeline.defs.checks import reconcile_checks
from reconcile_pipeline.defs.jobs import client_jobs
from reconcile_pipeline.defs.location import build_definitions
from reconcile_pipeline.defs.project import clients

defs = build_definitions(clients(), client_tables, client_jobs, checks=reconcile_checks)
