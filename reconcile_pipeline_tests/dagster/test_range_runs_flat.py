"""A range run costs the same however old the deployment (issue 15, goal 3): nothing in it walks
every partition since the first window. Checks are partitioned like their assets, so Dagster
maps a range run's checks to the range instead of to every partition (with unpartitioned
checks on partitioned assets, each check evaluation listed all partitions: 10-15 s a run at
76k partitions). The wall time is measured by benchmarks/range_run_partitions.py; this test
proves the cause is gone, without timing anything."""

import datetime as dt

import dagster as dg
import pytest
from dagster._core.definitions.partitions.subset.all import AllPartitionsSubset

from reconcile_pipeline.airtable.resource import AirtableResource
from reconcile_pipeline.definitions import defs
from reconcile_pipeline.defs.partitions import partition_key_for
from reconcile_pipeline.defs.resources import PostgresResource
from reconcile_pipeline.emulator.server import run_emulator


@pytest.fixture
def emulator():
    with run_emulator(rate_limit=0) as emulator:
        yield emulator


def test_a_range_run_never_lists_every_partition(emulator, database_url, monkeypatch):
    emulator.seed_records("appDemoLeads00001", "Leads", [{"Email": "a@example.com"}])
    resources = {
        "airtable_demo": AirtableResource(
            api_key=emulator.token,
            base_id="appDemoLeads00001",
            endpoint_url=emulator.url,
            requests_per_second=0,
        ),
        "postgres": PostgresResource(database_url=database_url),
    }
    listed: list[int] = []
    every_partition = AllPartitionsSubset.get_partition_keys

    def counting(self, *args, **kwargs):
        keys = every_partition(self, *args, **kwargs)
        listed.append(len(list(keys)))
        return keys

    monkeypatch.setattr(AllPartitionsSubset, "get_partition_keys", counting)
    now = dt.datetime.now(dt.UTC)
    result = defs.resolve_job_def("reconcile_demo").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        resources=resources,
        tags={
            "dagster/asset_partition_range_start": partition_key_for(
                now - dt.timedelta(minutes=20)
            ),
            "dagster/asset_partition_range_end": partition_key_for(now),
        },
        raise_on_error=False,
    )

    assert result.success
    assert len(result.get_asset_check_evaluations()) == len(defs.asset_checks)  # all ran
    assert listed == []  # no step enumerated the partitions since the first window
