"""Several clients in one deployment (issue 13): one code location from one project file, two
Airtable bases syncing the portal's one `public.leads` (its `client_id` column tells their rows
apart), through real Dagster runs, the emulator and PostgreSQL. Each client's sweep, failure,
quarantine and edits stay its own."""

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml
from sqlalchemy import create_engine, text

from reconcile_pipeline.airtable.resource import AirtableResource
from reconcile_pipeline.config.install import install_capture, project_mappings
from reconcile_pipeline.config.load import load
from reconcile_pipeline.defs.location import build_definitions
from reconcile_pipeline.defs.naming import (
    BASE_TAG,
    CLIENT_TAG,
    TOKEN_TAG,
    base_pool,
    delete_sweep_job_name,
    reconcile_job_name,
)
from reconcile_pipeline.defs.partitions import partition_key_for
from reconcile_pipeline.defs.project import specs_of
from reconcile_pipeline.defs.resources import PostgresResource
from reconcile_pipeline.defs.sensors import failed_run_alert
from reconcile_pipeline.emulator.server import run_emulator

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "many_clients.yaml"
DEMO_BASE = "appDemoLeads00001"
BASES = {"acme": "appAcmeLeads00001", "globex": "appGlobexLeads001"}


def lead(i: int, **overrides) -> dict:
    return {
        "Email": f"lead{i}@example.com",
        "First Name": f"Lead{i}",
        "Status": "New",
        "Processing Status": "Active",
        **overrides,
    }


@pytest.fixture
def emulator():
    with run_emulator(rate_limit=0) as emulator:
        yield emulator


@pytest.fixture
def project_file(emulator, tmp_path) -> Path:
    """The example file, each client's table id the one its emulated base was given."""
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    for key, base in BASES.items():
        added = emulator.add_base(base, like=DEMO_BASE)
        leads = next(t for t in added["tables"] if t["name"] == "Leads")
        data["clients"][key]["tables"]["leads"]["airtable_table"] = leads["id"]
    path = tmp_path / "reconcile.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def deployment(project_file, emulator, database_url):
    """The definitions of the two-client file, tokens bound to the emulator's; capture
    installed from the file as `reconcile db upgrade` does."""
    project = load(project_file)
    engine = create_engine(database_url)
    report = install_capture(engine, project_mappings(project))
    assert report.ok, report.lines()
    specs = specs_of(project)
    resources = {
        f"airtable_{spec.key}": AirtableResource(
            api_key=emulator.token,
            base_id=spec.base_id,
            endpoint_url=emulator.url,
            requests_per_second=0,
        )
        for spec in specs
    }
    defs = build_definitions(
        specs, resources={**resources, "postgres": PostgresResource(database_url=database_url)}
    )
    yield defs, engine
    engine.dispose()


def run_job(defs: dg.Definitions, name: str, instance, partitioned: bool = True, **kwargs):
    job = defs.resolve_job_def(name)
    key = partition_key_for(dt.datetime.now(dt.UTC)) if partitioned else None
    return job.execute_in_process(
        instance=instance, partition_key=key, raise_on_error=False, **kwargs
    )


def rows(engine, sql: str, **params) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params).all()]


def test_the_example_file_validates_as_one_code_location_with_a_set_per_client(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {
        **os.environ,
        "RECONCILE_CONFIG": str(EXAMPLE),
        "DAGSTER_HOME": str(home),
    }
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("dagster")),
            "definitions",
            "validate",
            "-m",
            "reconcile_pipeline.definitions",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Validation successful for code location reconcile_pipeline.definitions" in (
        done.stdout + done.stderr
    )


def test_each_client_has_its_assets_group_pool_jobs_schedules_resource_and_tags(deployment):
    defs, _ = deployment
    repository = defs.get_repository_def()
    for key, base in BASES.items():
        pulled = dg.AssetKey([key, "leads", "airtable_leads"])
        asset = defs.resolve_assets_def(pulled)  # with postgres_leads: one step
        assert asset.group_names_by_key[pulled] == key
        assert asset.op.pool == base_pool(base)
        assert f"airtable_{key}" in asset.required_resource_keys
        job = defs.resolve_job_def(reconcile_job_name(key))
        assert job.tags[BASE_TAG] == base
        assert job.tags[CLIENT_TAG] == key
        assert job.tags[TOKEN_TAG] == f"{key.upper()}_AIRTABLE_TOKEN"
        assert {k.path[0] for k in job.asset_layer.executable_asset_keys} == {key}
        assert repository.has_schedule_def(f"reconcile_schedule_{key}")


def test_clients_sync_apart_and_one_client_s_sweep_never_touches_another_s_leads(
    deployment, emulator
):
    defs, engine = deployment
    instance = dg.DagsterInstance.ephemeral()
    acme = emulator.seed_records(BASES["acme"], "Leads", [lead(i) for i in range(3)])
    globex = emulator.seed_records(BASES["globex"], "Leads", [lead(10 + i) for i in range(2)])

    for key in BASES:
        assert run_job(defs, reconcile_job_name(key), instance).success

    # Every lead carries its client's id; the bookkeeping is keyed by client.
    assert sorted(rows(engine, "SELECT client_id, count(*) FROM leads GROUP BY 1")) == [
        ("acme", 3),
        ("globex", 2),
    ]
    assert sorted(rows(engine, "SELECT client, count(*) FROM reconcile.sync_state GROUP BY 1")) == [
        ("acme", 3),
        ("globex", 2),
    ]

    # Acme deletes a record; acme's sweep soft-deletes that lead only. (Before the bookkeeping
    # was keyed by client, base A's sweep soft-deleted base B's leads.)
    emulator.delete_record(BASES["acme"], "Leads", acme[0])
    sweep = run_job(defs, delete_sweep_job_name("acme"), instance, partitioned=False)
    assert sweep.success
    assert rows(engine, "SELECT airtable_record_id FROM leads WHERE NOT is_active") == [(acme[0],)]
    assert rows(
        engine,
        "SELECT count(*) FROM leads WHERE client_id = 'globex' AND is_active",
    ) == [(len(globex),)]
    # Globex's sweep, with its base intact, deletes nothing of acme's either.
    assert run_job(defs, delete_sweep_job_name("globex"), instance, partitioned=False).success
    assert rows(engine, "SELECT count(*) FROM leads WHERE NOT is_active") == [(1,)]


def test_a_portal_edit_is_captured_for_its_client_and_pushed_to_its_base_only(deployment, emulator):
    defs, engine = deployment
    instance = dg.DagsterInstance.ephemeral()
    emulator.seed_records(BASES["acme"], "Leads", [lead(1)])
    [globex_lead] = emulator.seed_records(BASES["globex"], "Leads", [lead(2)])
    for key in BASES:
        assert run_job(defs, reconcile_job_name(key), instance).success

    with engine.begin() as conn:
        conn.execute(
            text("UPDATE leads SET claimed_by = 'rep@globex' WHERE airtable_record_id = :r"),
            {"r": globex_lead},
        )
    assert rows(
        engine,
        "SELECT client FROM reconcile.sync_state WHERE portal_change_counter > pushed_counter",
    ) == [("globex",)]

    emulator.reset_request_log()
    assert run_job(defs, reconcile_job_name("acme"), instance).success
    patches = [e for e in emulator.request_log()["entries"] if e["method"] == "PATCH"]
    assert patches == []  # acme's run has nothing of globex's to push
    assert run_job(defs, reconcile_job_name("globex"), instance).success
    [record] = [r for r in emulator.all_records(BASES["globex"], "Leads") if r["id"] == globex_lead]
    assert record["fields"]["Claimed By"] == "rep@globex"
    assert all(
        r["fields"].get("Claimed By") is None for r in emulator.all_records(BASES["acme"], "Leads")
    )


def test_a_client_with_a_bad_token_fails_alone_and_its_alert_names_it(
    deployment, emulator, database_url, monkeypatch
):
    defs, engine = deployment
    instance = dg.DagsterInstance.ephemeral()
    emulator.seed_records(BASES["acme"], "Leads", [lead(1)])
    emulator.seed_records(BASES["globex"], "Leads", [lead(2)])
    bad = AirtableResource(
        api_key="fake-token-refused-by-airtable",
        base_id=BASES["globex"],
        endpoint_url=emulator.url,
        requests_per_second=0,
    )

    failed = run_job(
        defs, reconcile_job_name("globex"), instance, resources={"airtable_globex": bad}
    )
    passed = run_job(defs, reconcile_job_name("acme"), instance)

    assert not failed.success
    assert passed.success
    assert rows(engine, "SELECT DISTINCT client_id FROM leads") == [("acme",)]
    alert = failed_run_alert(instance, failed.dagster_run)
    text_ = "\n".join([alert.title, *alert.lines])
    assert "globex" in text_
    assert "acme" not in text_
    assert "fake-token-refused-by-airtable" not in text_


def test_one_client_s_quarantine_fails_its_own_check_only(deployment, emulator):
    defs, engine = deployment
    instance = dg.DagsterInstance.ephemeral()
    # A value the mapping cannot hold (a text in a number field), as a hostile API might serve.
    emulator.seed_raw_records(BASES["acme"], "Leads", [lead(1, **{"ICP Score": "not a number"})])
    emulator.seed_records(BASES["globex"], "Leads", [lead(2)])

    results = {key: run_job(defs, reconcile_job_name(key), instance) for key in BASES}

    verdicts = {
        key: {
            e.check_name: e.passed
            for e in result.get_asset_check_evaluations()
            if e.asset_key.path[:2] == [key, "leads"]
        }
        for key, result in results.items()
    }
    assert verdicts["acme"]["no_new_quarantine"] is False
    assert verdicts["globex"]["no_new_quarantine"] is True
    assert rows(engine, "SELECT client FROM reconcile.quarantine WHERE released_at IS NULL") == [
        ("acme",)
    ]


def test_one_client_s_full_reconcile_never_touches_another_s_leads(deployment, emulator):
    from reconcile_pipeline.defs.naming import full_reconcile_job_name

    defs, engine = deployment
    instance = dg.DagsterInstance.ephemeral()
    [acme_lead] = emulator.seed_records(BASES["acme"], "Leads", [lead(1)])
    [globex_lead] = emulator.seed_records(BASES["globex"], "Leads", [lead(2)])
    for key in BASES:
        assert run_job(defs, reconcile_job_name(key), instance).success
    # Both portal rows drift from Airtable on an Airtable-owned column, in a transaction tagged
    # as the reconciler's (no capture): only a full reconcile repairs such drift.
    with engine.begin() as conn:
        conn.execute(text("SELECT set_config('reconcile.origin', 'reconciler', true)"))
        conn.execute(text("UPDATE leads SET status = 'Drifted'"))

    full = run_job(defs, full_reconcile_job_name("acme"), instance, partitioned=False)

    assert full.success
    statuses = dict(rows(engine, "SELECT airtable_record_id, status FROM leads"))
    assert statuses[acme_lead] == "New"  # acme's drift repaired from acme's base
    assert statuses[globex_lead] == "Drifted"  # globex's row untouched
    assert rows(engine, "SELECT count(*) FROM leads WHERE NOT is_active") == [(0,)]
