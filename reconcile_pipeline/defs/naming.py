"""Names of every per-client definition, in one place (the CLI, the sensors and the tests find
a client's jobs and assets through these).

A client's key (lower_snake_case, from the project file) prefixes its asset keys and names its
group, resource, jobs and schedules; its base id names its concurrency pool.
"""

from collections.abc import Mapping

# dagster.yaml's queued run coordinator allows one run per distinct value of the base tag (two
# runs never reconcile the same Airtable base at once), and ten per value of the token tag
# (Airtable's 50 requests/s per token owner at 5 requests/s per base).
BASE_TAG = "reconcile/base"
TOKEN_TAG = "reconcile/token"
CLIENT_TAG = "reconcile/client"


def airtable_resource_key(client: str) -> str:
    return f"airtable_{client}"


def reconcile_job_name(client: str) -> str:
    return f"reconcile_{client}"


def delete_sweep_job_name(client: str) -> str:
    return f"delete_sweep_{client}"


def full_reconcile_job_name(client: str) -> str:
    return f"full_reconcile_{client}"


def reconcile_schedule_name(client: str) -> str:
    return f"reconcile_schedule_{client}"


def base_pool(base_id: str) -> str:
    """The Dagster concurrency pool every reconcile asset and op of a base belongs to.

    dagster.yaml sets pools to run granularity with a default limit of 1: a run holding any
    step of this pool occupies it for its whole duration. This covers the runs job tags cannot:
    the UI's asset-graph "Materialize" and "Launch backfill" use Dagster's implicit asset job.
    """
    return f"reconcile_base_{base_id}"


def run_tags(client: str, base_id: str, token_env: str) -> Mapping[str, str]:
    """Tags every run of a client carries: the concurrency limits key on the base and the
    token's variable (its NAME: a token per variable), the alerts name the client."""
    return {BASE_TAG: base_id, TOKEN_TAG: token_env, CLIENT_TAG: client}
