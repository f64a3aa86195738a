"""Change capture installed from the project file (issue 12, DESIGN §3.2): `reconcile db upgrade`
puts the capture trigger and the tracked columns on every configured table, idempotently, and
takes them off a table the file no longer declares; a run refuses to start on a configured table
without its trigger.

Real PostgreSQL, the real `reconcile` command in a subprocess, real Dagster runs; no mocks.
"""

import datetime as dt
from pathlib import Path

import dagster as dg
import pytest
import yaml
from sqlalchemy import text

from reconcile_pipeline.airtable.resource import AirtableResource
from reconcile_pipeline.config.install import (
    capture_differences,
    capture_problems,
    install_capture,
    project_mappings,
    tracked_problems,
)
from reconcile_pipeline.config.load import DEMO_FILE, ConfigError, Project, load
from reconcile_pipeline.defs.assets import build_table_assets
from reconcile_pipeline.defs.naming import airtable_resource_key
from reconcile_pipeline.defs.partitions import partition_key_for
from reconcile_pipeline.defs.project import ClientSpec
from reconcile_pipeline.defs.resources import PostgresResource
from reconcile_pipeline.emulator.server import run_emulator
from reconcile_pipeline_tests.dagster.cli import BASE, TABLE, reconcile_env, run_reconcile_cli

PROSPECTS = {
    "airtable_table": "tblProspects00001",
    "name": "Prospects",
    "postgres": {
        "schema": "public",
        "table": "prospects",
        "key_column": "record_ref",
        "soft_delete_column": "is_active",
    },
    "fields": {
        "fldProspectName01": {"name": "Name", "column": "name", "type": "text"},
        "fldProspectStage1": {"name": "Stage", "column": "stage", "type": "text"},
        "fldProspectOwner1": {
            "name": "Owner Note",
            "column": "owner_note",
            "type": "text",
            "owner": "portal",
        },
    },
}
TRIGGER = "reconcile_capture_portal_change"


def project_file(path: Path, prospects: bool = True) -> Path:
    """The demo's project file, with a second table `prospects` when asked."""
    data = yaml.safe_load(DEMO_FILE.read_text(encoding="utf-8"))
    if prospects:
        data["clients"]["demo"]["tables"]["prospects"] = PROSPECTS
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def prospects_table(engine):
    """public.prospects: a portal table of its own, its key column `record_ref`."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE public.prospects (id bigserial PRIMARY KEY, record_ref text UNIQUE, "
                "name text, stage text, owner_note text, is_active boolean NOT NULL DEFAULT true, "
                "local_score integer)"
            )
        )
        # Linked by the reconciler (tagged): no portal change yet.
        conn.execute(text("SET LOCAL reconcile.origin = 'reconciler'"))
        conn.execute(
            text(
                "INSERT INTO public.prospects (record_ref, name, stage) "
                "VALUES ('recPROSPECT000001', 'Ada', 'New')"
            )
        )
    return "public.prospects"


@pytest.fixture
def cli_env(tmp_path, database_url):
    def build(config: Path) -> dict[str, str]:
        env = reconcile_env(tmp_path / "home", database_url, "http://127.0.0.1:9", "unused")
        env["RECONCILE_CONFIG"] = str(config)
        return env

    return build


def upgrade(env) -> str:
    done = run_reconcile_cli(["db", "upgrade"], env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def triggers(engine) -> list[tuple]:
    """Every capture trigger: table, name, its oid (a recreated trigger gets a new one), its
    definition and whether it is enabled."""
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT tgrelid::regclass::text, tgname, oid, pg_get_triggerdef(oid), tgenabled "
                "FROM pg_trigger WHERE tgfoid = 'reconcile.capture_portal_change'::regproc "
                "ORDER BY 1"
            )
        ).all()


def tracked(engine, table_key: str) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT column_name, owner FROM reconcile.tracked_columns WHERE table_key = :t"),
            {"t": table_key},
        ).all()
    return dict(rows)


def state(engine, table_key: str, record_id: str):
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT portal_change_counter, owned_write_counter FROM reconcile.sync_state "
                "WHERE table_key = :t AND airtable_record_id = :r"
            ),
            {"t": table_key, "r": record_id},
        ).one_or_none()


def portal_update(engine, assignment: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(f"UPDATE public.prospects SET {assignment} WHERE record_ref = 'recPROSPECT000001'")
        )


def test_db_upgrade_installs_the_trigger_on_a_second_configured_table(
    tmp_path, engine, prospects_table, cli_env
):
    env = cli_env(project_file(tmp_path / "reconcile.yaml"))

    out = upgrade(env)

    # One line per table.
    assert "leads (public.leads): capture trigger unchanged; tracked columns written" in out
    assert "prospects (public.prospects): capture trigger installed; tracked columns written" in out
    assert [(t[0], t[1]) for t in triggers(engine)] == [
        ("campaigns", TRIGGER),  # the demo's second table
        ("leads", TRIGGER),
        ("prospects", TRIGGER),
    ]
    assert "capture_portal_change('demo', 'prospects', 'record_ref')" in triggers(engine)[2][3]
    assert tracked(engine, "prospects") == {
        "name": "airtable",
        "stage": "airtable",
        "owner_note": "portal",
    }
    assert set(tracked(engine, "leads").values()) == {"airtable", "portal"}
    assert state(engine, "prospects", "recPROSPECT000001") is None

    # A portal UPDATE of a portal-owned column is captured under the table key `prospects`.
    portal_update(engine, "owner_note = 'call back Tuesday'")
    assert state(engine, "prospects", "recPROSPECT000001") == (1, 0)
    # An Airtable-owned one is counted apart (reverted by the next run); a local-only one not.
    portal_update(engine, "stage = 'Won'")
    portal_update(engine, "local_score = 7")
    assert state(engine, "prospects", "recPROSPECT000001") == (1, 1)
    # The reconciler's own writes are not captured.
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL reconcile.origin = 'reconciler'"))
        conn.execute(text("UPDATE public.prospects SET owner_note = 'synced'"))
    assert state(engine, "prospects", "recPROSPECT000001") == (1, 1)


def test_a_second_upgrade_changes_nothing(tmp_path, engine, prospects_table, cli_env):
    env = cli_env(project_file(tmp_path / "reconcile.yaml"))
    upgrade(env)
    before = (triggers(engine), tracked(engine, "leads"), tracked(engine, "prospects"))

    out = upgrade(env)

    assert (triggers(engine), tracked(engine, "leads"), tracked(engine, "prospects")) == before
    assert "leads (public.leads): capture trigger unchanged; tracked columns unchanged" in out
    assert (
        "prospects (public.prospects): capture trigger unchanged; tracked columns unchanged" in out
    )


def test_removing_the_table_from_the_file_removes_its_trigger(
    tmp_path, engine, prospects_table, cli_env
):
    upgrade(cli_env(project_file(tmp_path / "with.yaml")))
    assert len(triggers(engine)) == 3

    out = upgrade(cli_env(project_file(tmp_path / "without.yaml", prospects=False)))

    assert "prospects (public.prospects): capture trigger removed (the table is no longer" in out
    assert "3 tracked columns deleted" in out
    assert [t[0] for t in triggers(engine)] == ["campaigns", "leads"]
    assert tracked(engine, "prospects") == {}
    portal_update(engine, "owner_note = 'not synced any more'")
    assert state(engine, "prospects", "recPROSPECT000001") is None
    # And again: nothing left to remove.
    again = upgrade(cli_env(tmp_path / "without.yaml"))
    assert "prospects" not in again


def test_a_configured_table_that_does_not_exist_is_reported_and_the_others_installed(
    tmp_path, engine, cli_env
):
    env = cli_env(project_file(tmp_path / "reconcile.yaml"))  # no public.prospects

    done = run_reconcile_cli(["db", "upgrade"], env, timeout=120)

    assert done.returncode == 2, done.stdout + done.stderr
    assert "prospects (public.prospects): NOT INSTALLED: public.prospects is not a table" in (
        done.stdout
    )
    assert "leads (public.leads): capture trigger unchanged" in done.stdout
    assert "Traceback" not in done.stderr
    assert tracked(engine, "prospects") == {}


def test_a_bad_project_file_stops_db_upgrade_before_the_database(tmp_path, database_url, cli_env):
    bad = tmp_path / "reconcile.yaml"
    bad.write_text("version: 1\nclients:\n  demo:\n    base_id: nope\n    tables: {}\n")

    done = run_reconcile_cli(["db", "upgrade"], cli_env(bad), timeout=120)

    assert done.returncode == 2
    assert f"{bad}:4: clients.demo.base_id" in done.stderr
    assert "Traceback" not in done.stderr


def test_capture_problems_and_install_repair_each_kind_of_drift(engine, prospects_table, tmp_path):
    mappings = project_mappings(load(project_file(tmp_path / "reconcile.yaml")))
    prospects = next(m for m in mappings if m.name == "prospects")
    assert capture_problems(engine, prospects) == [
        "the capture trigger is missing on public.prospects"
    ]
    install_capture(engine, mappings)
    assert capture_problems(engine, prospects) == []
    assert capture_differences(engine, prospects) == []
    assert tracked_problems(engine, prospects) == []

    # Wrong arguments (another table key): a problem; the upgrade replaces the trigger and
    # deletes the old key's tracked columns.
    with engine.begin() as conn:
        conn.execute(
            text(
                f"DROP TRIGGER {TRIGGER} ON public.prospects; "
                f"CREATE TRIGGER {TRIGGER} AFTER INSERT OR UPDATE ON public.prospects FOR EACH ROW "
                "EXECUTE FUNCTION reconcile.capture_portal_change('demo', 'old_key', "
                "'record_ref'); INSERT INTO reconcile.tracked_columns "
                "VALUES ('old_key', 'name', 'portal', 'demo')"
            )
        )
    assert capture_problems(engine, prospects) == [
        "the capture trigger on public.prospects has the wrong arguments ('demo', 'old_key', "
        "'record_ref'), expected ('demo', 'prospects', 'record_ref')"
    ]
    report = install_capture(engine, mappings)
    assert any(
        line.startswith("prospects (public.prospects): capture trigger replaced (it has arguments")
        for line in report.lines()
    ), report.lines()
    assert capture_problems(engine, prospects) == []
    assert capture_differences(engine, prospects) == []
    assert tracked(engine, "old_key") == {}

    # Disabled: a problem; the upgrade enables it again.
    with engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE public.prospects DISABLE TRIGGER {TRIGGER}"))
    assert capture_problems(engine, prospects) == [
        "the capture trigger on public.prospects is disabled"
    ]
    report = install_capture(engine, mappings)
    assert "prospects (public.prospects): capture trigger re-enabled" in "\n".join(report.lines())
    assert capture_problems(engine, prospects) == []

    # Still capturing, without its WHEN condition: not a run's problem, but a difference the
    # upgrade repairs; so is a second trigger calling the function (it would count twice).
    with engine.begin() as conn:
        conn.execute(
            text(
                f"DROP TRIGGER {TRIGGER} ON public.prospects; "
                f"CREATE TRIGGER {TRIGGER} AFTER INSERT OR UPDATE ON public.prospects FOR EACH ROW "
                "EXECUTE FUNCTION reconcile.capture_portal_change('demo', 'prospects', "
                "'record_ref'); "
                "CREATE TRIGGER extra_capture AFTER UPDATE ON public.prospects FOR EACH ROW "
                "EXECUTE FUNCTION reconcile.capture_portal_change('demo', 'prospects', "
                "'record_ref')"
            )
        )
    assert capture_problems(engine, prospects) == []
    assert capture_differences(engine, prospects) == [
        "the capture trigger on public.prospects lacks the WHEN condition on reconcile.origin",
        "another trigger on public.prospects, extra_capture, also calls "
        "reconcile.capture_portal_change (an edit would count twice)",
    ]
    install_capture(engine, mappings)
    assert capture_differences(engine, prospects) == []
    assert [t[1] for t in triggers(engine) if t[0] == "prospects"] == [TRIGGER]

    # Tracked columns with a wrong owner and a column no longer mapped.
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE reconcile.tracked_columns SET owner = 'portal' "
                "WHERE table_key = 'prospects' AND column_name = 'stage'; "
                "INSERT INTO reconcile.tracked_columns VALUES ('prospects', 'local_score', "
                "'portal', 'demo')"
            )
        )
    assert tracked_problems(engine, prospects) == [
        "watched columns no longer mapped: local_score",
        "stage is watched as portal-owned, the project file says airtable",
    ]
    install_capture(engine, mappings)
    assert tracked_problems(engine, prospects) == []


def test_two_tables_on_one_postgres_table_are_refused(engine, tmp_path):
    data = yaml.safe_load(DEMO_FILE.read_text(encoding="utf-8"))
    tables = data["clients"]["demo"]["tables"]
    tables["leads_again"] = tables["leads"]
    config = tmp_path / "reconcile.yaml"
    config.write_text(yaml.safe_dump(data), encoding="utf-8")

    with pytest.raises(ConfigError, match="client 'demo' syncs public.leads twice"):
        project_mappings(load(config))


# ----- a run refuses to start without the trigger -------------------------------------------


@pytest.fixture
def emulator():
    with run_emulator(rate_limit=0) as emulator:
        yield emulator


def resources(emulator, database_url):
    return {
        airtable_resource_key("demo"): AirtableResource(
            api_key=emulator.token,
            base_id=BASE,
            endpoint_url=emulator.url,
            requests_per_second=0,
        ),
        "postgres": PostgresResource(database_url=database_url),
    }


def run_table(project: Project, mapping, emulator, database_url) -> dg.ExecuteInProcessResult:
    """A run of `mapping`'s four assets, as the code location builds them for its client."""
    key, declared = project.client(mapping.client)
    assert declared.base_id == BASE
    assets = build_table_assets(mapping, ClientSpec(key, declared, (mapping,))).all
    return dg.materialize(
        assets,
        resources=resources(emulator, database_url),
        partition_key=partition_key_for(dt.datetime.now(dt.UTC)),
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def failure_text(result) -> str:
    return "\n".join(
        str(event.event_specific_data.error.message)
        + str(getattr(event.event_specific_data, "user_failure_data", None) or "")
        for event in result.get_step_failure_events()
    )


def test_a_run_on_a_table_without_the_trigger_fails_naming_reconcile_db_upgrade(
    tmp_path, emulator, engine, database_url, prospects_table
):
    project = load(project_file(tmp_path / "reconcile.yaml"))
    prospects = next(m for m in project_mappings(project) if m.name == "prospects")

    result = run_table(project, prospects, emulator, database_url)

    assert not result.success
    message = failure_text(result)
    assert "prospects: the capture trigger is missing on public.prospects" in message
    assert "run `reconcile db upgrade`" in message
    assert emulator.request_log()["entries"] == []  # refused before any Airtable request


def test_the_demo_table_runs_again_once_db_upgrade_put_its_trigger_back(
    tmp_path, emulator, engine, database_url
):
    emulator.seed_records(BASE, TABLE, [{"Email": "a@example.com", "Status": "New"}])
    demo = load(DEMO_FILE)
    leads = next(m for m in demo.mappings() if m.name == "leads")
    with engine.begin() as conn:
        conn.execute(text(f"DROP TRIGGER {TRIGGER} ON public.leads"))

    refused = run_table(demo, leads, emulator, database_url)

    assert not refused.success
    assert "leads: the capture trigger is missing on public.leads" in failure_text(refused)
    env = reconcile_env(tmp_path / "home", database_url, emulator.url, emulator.token)
    env["RECONCILE_CONFIG"] = str(DEMO_FILE)
    assert "leads (public.leads): capture trigger installed" in upgrade(env)
    assert run_table(demo, leads, emulator, database_url).success
