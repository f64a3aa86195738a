"""`AirtableResource` builds its client once per run, hides the key, and works in an asset."""

from dagster import EnvVar, asset, build_init_resource_context, materialize

from reconcile_pipeline.airtable.client import AirtableClient
from reconcile_pipeline.airtable.resource import AirtableResource
from reconcile_pipeline.emulator import Emulator
from reconcile_pipeline_tests.airtable.conftest import BASE, TABLE, lead


def airtable_resource(emulator: Emulator, **overrides: object) -> AirtableResource:
    settings: dict[str, object] = {
        "api_key": emulator.token,
        "base_id": BASE,
        "table": TABLE,
        "endpoint_url": emulator.url,
        "requests_per_second": 50.0,
    }
    settings.update(overrides)
    return AirtableResource(**settings)


def test_setup_builds_one_client_and_teardown_closes_it(emulator: Emulator) -> None:
    resource = airtable_resource(emulator)

    with build_init_resource_context() as context:
        resource.setup_for_execution(context)
        client = resource.client
        assert isinstance(client, AirtableClient)
        assert resource.client is client  # long-lived for the run
        resource.teardown_after_execution(context)

    assert resource.client is not client  # teardown released the run's client
    assert emulator.token not in repr(resource)


def test_asset_reads_through_the_resource_with_the_key_from_the_environment(
    emulator: Emulator, monkeypatch
) -> None:
    emulator.seed_records(BASE, TABLE, [lead(), lead(Email="b@example.com")])
    monkeypatch.setenv("AIRTABLE_API_KEY", emulator.token)

    @asset
    def airtable_lead_ids(airtable: AirtableResource) -> list[str]:
        return airtable.list_record_ids()

    result = materialize(
        [airtable_lead_ids],
        resources={"airtable": airtable_resource(emulator, api_key=EnvVar("AIRTABLE_API_KEY"))},
    )

    assert result.success
    ids = [r["id"] for r in emulator.all_records(BASE, TABLE)]
    assert result.output_for_node("airtable_lead_ids") == ids
