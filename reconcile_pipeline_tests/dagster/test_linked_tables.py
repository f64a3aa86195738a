"""Linked tables in dependency order (issue 12), through real Dagster runs on a base of the
user's own (names, ids and tables that are not the demo's) and PostgreSQL tables of their own:
Campaigns sync before Prospects, a prospect's link is stored as the campaign row's key (a foreign
key in this portal's schema), and a link to a campaign not synced yet is held, then resolved."""

import datetime as dt
import json

import dagster as dg
import pytest
from sqlalchemy import create_engine, text

from reconcile_pipeline.airtable.resource import AirtableResource
from reconcile_pipeline.config.install import install_capture
from reconcile_pipeline.config.load import parse
from reconcile_pipeline.defs.assets import build_client_assets
from reconcile_pipeline.defs.checks import build_table_checks
from reconcile_pipeline.defs.naming import airtable_resource_key
from reconcile_pipeline.defs.partitions import partition_key_for
from reconcile_pipeline.defs.project import ClientSpec
from reconcile_pipeline.defs.resources import PostgresResource
from reconcile_pipeline.emulator.server import run_emulator

CLIENT, BASE = "own", "appOwnBase0000001"
CAMPAIGNS = "tblCampaigns00001"
PROSPECTS = "tblProspects00001"
F = {  # field ids
    "c_name": "fldCampName000001",
    "c_channel": "fldCampChan000001",
    "p_mail": "fldProsMail000001",
    "p_campaign": "fldProsCamp000001",
    "p_owner": "fldProsOwnr000001",
    "p_modified": "fldProsModi000001",
}

SCHEMA = {
    "bases": [
        {
            "id": BASE,
            "name": "Own base",
            "tables": [
                {
                    "id": CAMPAIGNS,
                    "name": "Campaigns",
                    "primaryFieldId": F["c_name"],
                    "fields": [
                        {"id": F["c_name"], "name": "Campaign Name", "type": "singleLineText"},
                        {
                            "id": F["c_channel"],
                            "name": "Channel",
                            "type": "singleSelect",
                            "options": {"choices": [{"name": "SMS"}, {"name": "Email"}]},
                        },
                    ],
                },
                {
                    "id": PROSPECTS,
                    "name": "Prospects",
                    "primaryFieldId": F["p_mail"],
                    "fields": [
                        {"id": F["p_mail"], "name": "E-mail", "type": "email"},
                        {
                            "id": F["p_campaign"],
                            "name": "Campaign",
                            "type": "multipleRecordLinks",
                            "options": {"linkedTableId": CAMPAIGNS},
                        },
                        {"id": F["p_owner"], "name": "Assigned To", "type": "singleLineText"},
                        {
                            "id": F["p_modified"],
                            "name": "Modified",
                            "type": "lastModifiedTime",
                            "options": {"isValid": True, "referencedFieldIds": []},
                        },
                    ],
                },
            ],
        }
    ]
}

PROJECT = f"""
version: 1
clients:
  own:
    base_id: {BASE}
    tables:
      prospects:                      # listed first: the links decide the order, not the file
        airtable_table: {PROSPECTS}
        postgres: {{table: own_prospects, key_column: record_ref, soft_delete_column: active}}
        modified_time_field: {F["p_modified"]}
        fields:
          {F["p_mail"]}: {{name: E-mail, column: email, type: text, required: true}}
          {F["p_campaign"]}: {{name: Campaign, column: campaign_ref, type: link,
                               links_to: campaigns}}
          {F["p_owner"]}: {{name: Assigned To, column: assigned_to, type: text, owner: portal}}
      campaigns:
        airtable_table: {CAMPAIGNS}
        postgres: {{table: ad_campaigns, key_column: record_ref}}
        fields:
          {F["c_name"]}: {{name: Campaign Name, column: name, type: text}}
          {F["c_channel"]}: {{name: Channel, column: channel, type: select}}
"""

PORTAL_TABLES = """
CREATE TABLE public.ad_campaigns (
    id bigserial PRIMARY KEY, record_ref text UNIQUE, name text, channel text,
    budget numeric  -- local-only
);
CREATE TABLE public.own_prospects (
    id bigserial PRIMARY KEY,
    record_ref text UNIQUE,
    email text,
    campaign_ref text REFERENCES public.ad_campaigns (record_ref),
    assigned_to text,
    active boolean NOT NULL DEFAULT true
);
"""


@pytest.fixture
def own_base(tmp_path):
    path = tmp_path / "own_base.json"
    path.write_text(json.dumps(SCHEMA))
    with run_emulator(schema_path=path, rate_limit=0) as emulator:
        yield emulator


@pytest.fixture
def setup(own_base, database_url):
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(PORTAL_TABLES)
    project = parse(PROJECT, "reconcile.yaml")
    from reconcile_pipeline.config.load import Project

    mappings = Project(path=None, config=project).mappings()  # type: ignore[arg-type]
    install_capture(engine, mappings)
    tables = build_client_assets(ClientSpec(CLIENT, project.clients[CLIENT], tuple(mappings)))
    definitions = [a for t in tables for a in t.all] + [
        c for t in tables for c in build_table_checks(t)
    ]
    resources = {
        airtable_resource_key(CLIENT): AirtableResource(
            api_key=own_base.token, base_id=BASE, endpoint_url=own_base.url, requests_per_second=0
        ),
        "postgres": PostgresResource(database_url=database_url, base_id=BASE),
    }
    yield engine, tables, definitions, resources
    engine.dispose()


def run(definitions, resources, overlap_minutes: int = 5, when: dt.datetime | None = None):
    return dg.materialize(
        definitions,
        resources=resources,
        partition_key=partition_key_for(when or dt.datetime.now(dt.UTC)),
        run_config={
            "ops": {
                f"{CLIENT}__{table}__pull_and_merge": {
                    "config": {"overlap_minutes": overlap_minutes}
                }
                for table in ("campaigns", "prospects")
            }
        },
        raise_on_error=False,
    )


def rows(engine, sql: str) -> list:
    with engine.connect() as conn:
        return conn.execute(text(sql)).all()


def test_campaigns_sync_first_and_a_link_is_stored_as_the_campaign_row_key(own_base, setup):
    engine, tables, definitions, resources = setup
    # The file lists prospects first; the dependency order puts campaigns first.
    assert [t.mapping.name for t in tables] == ["campaigns", "prospects"]
    prospects = next(t for t in tables if t.mapping.name == "prospects")
    campaigns = next(t for t in tables if t.mapping.name == "campaigns")
    # An asset dependency.
    assert campaigns.merged_key in prospects.pulled.asset_deps[prospects.merged_key]

    # Created and linked in the same window.
    [spring] = own_base.seed_records(
        BASE, "Campaigns", [{"Campaign Name": "Spring", "Channel": "SMS"}]
    )
    [ada] = own_base.seed_records(
        BASE, "Prospects", [{"E-mail": "ada@example.com", "Campaign": [spring]}]
    )

    result = run(definitions, resources)

    assert result.success
    assert rows(engine, "SELECT record_ref, name, channel FROM ad_campaigns") == [
        (spring, "Spring", "SMS")
    ]
    assert rows(engine, "SELECT record_ref, email, campaign_ref FROM own_prospects") == [
        (ada, "ada@example.com", spring)
    ]


def test_a_link_to_a_campaign_not_synced_yet_is_held_then_resolved(own_base, setup):
    engine, _, definitions, resources = setup
    now = dt.datetime.now(dt.UTC)
    assert run(definitions, resources).success  # first runs: full pulls, nothing yet
    # A campaign edited an hour ago, and a prospect linked to it edited 30 minutes ago.
    [autumn] = own_base.seed_records(
        BASE, "Campaigns", [{"Campaign Name": "Autumn"}], created_time=now - dt.timedelta(hours=1)
    )
    [bo] = own_base.seed_records(
        BASE,
        "Prospects",
        [{"E-mail": "bo@example.com", "Campaign": [autumn]}],
        created_time=now - dt.timedelta(minutes=30),
    )

    # A backfill of the prospect's window reaches the prospect but not the older campaign: the
    # link points at a row we do not have yet.
    held = run(definitions, resources, when=now - dt.timedelta(minutes=30))

    assert held.success
    assert rows(engine, "SELECT email, campaign_ref FROM own_prospects") == [
        ("bo@example.com", None)
    ]
    drift = [
        e
        for e in held.get_asset_check_evaluations()
        if e.check_name == "no_drift_in_window" and e.asset_key.path[:2] == [CLIENT, "prospects"]
    ]
    assert [e.passed for e in drift] == [True]  # a held link is quarantine, not drift
    [(field, reason)] = rows(
        engine,
        "SELECT field, reason FROM reconcile.quarantine WHERE released_at IS NULL",
    )
    assert field == "campaign_ref" and autumn in reason and "not synced yet" in reason

    # The campaign arrives in a later run (edited in Airtable): the held link resolves then,
    # though the prospect itself is not pulled again (no overlap: only the campaign is new).
    own_base.update_record_fields(BASE, "Campaigns", autumn, {"Channel": "Email"})
    resolved = run(definitions, resources, overlap_minutes=0)

    assert resolved.success
    assert rows(engine, "SELECT email, campaign_ref FROM own_prospects") == [
        ("bo@example.com", autumn)
    ]
    assert rows(engine, "SELECT count(*) FROM reconcile.quarantine WHERE released_at IS NULL") == [
        (0,)
    ]
    [(reason,)] = rows(
        engine,
        f"SELECT reason FROM reconcile.change_history WHERE airtable_record_id = '{bo}' "
        "AND field = 'campaign_ref'",
    )
    assert reason == "link_resolved"


def test_a_deleted_campaign_unlinks_its_prospects_and_is_soft_deleted(own_base, setup):
    engine, tables, definitions, resources = setup
    [gone] = own_base.seed_records(BASE, "Campaigns", [{"Campaign Name": "Gone"}])
    [cy] = own_base.seed_records(
        BASE, "Prospects", [{"E-mail": "cy@example.com", "Campaign": [gone]}]
    )
    assert run(definitions, resources).success
    assert rows(engine, "SELECT campaign_ref FROM own_prospects") == [(gone,)]

    own_base.delete_record(BASE, "Campaigns", gone)  # Airtable drops it from Cy's link
    own_base.update_record_fields(BASE, "Prospects", cy, {"Assigned To": None})
    assert run(definitions, resources).success

    assert rows(engine, "SELECT campaign_ref FROM own_prospects") == [(None,)]
    assert rows(engine, "SELECT count(*) FROM ad_campaigns") == [(1,)]  # never a hard delete
