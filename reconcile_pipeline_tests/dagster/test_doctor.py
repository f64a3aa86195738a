"""`reconcile doctor` (issue 12, DESIGN §3.10): one ✓/✗ line per thing a run needs, exit 0 when
all hold, 1 on any ✗ (with what to do), 2 when the project file stops it early; never a
traceback, never the token.

The real command in a subprocess, real PostgreSQL, the emulator over HTTP; no mocks.
"""

import pytest
from sqlalchemy import text

from reconcile_pipeline.config.doctor import check_table
from reconcile_pipeline.config.load import DEMO_FILE, load
from reconcile_pipeline.emulator.server import run_emulator
from reconcile_pipeline_tests.dagster.cli import BASE, TABLE, reconcile_env, run_reconcile_cli

COMPANY = "fld7a1994999d181d"  # the demo file's Company (text, Airtable-owned)


@pytest.fixture
def emulator():
    with run_emulator(rate_limit=0) as emulator:
        yield emulator


@pytest.fixture
def env(tmp_path, database_url, emulator):
    """The demo project on the test's database and emulator, change capture installed."""
    values = reconcile_env(tmp_path / "home", database_url, emulator.url, emulator.token)
    values["RECONCILE_CONFIG"] = str(DEMO_FILE)
    done = run_reconcile_cli(["db", "upgrade"], values, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return values


def doctor(env, **overrides):
    values = dict(env)
    for name, value in overrides.items():
        if value is None:
            values.pop(name, None)
        else:
            values[name] = value
    done = run_reconcile_cli(["doctor"], values, timeout=180)
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    return done


def failures(done) -> list[str]:
    return [line for line in done.stdout.splitlines() if line.startswith("✗")]


def test_a_healthy_setup_prints_only_checks_that_hold_and_exits_0(env, emulator):
    done = doctor(env)

    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines and all(line.startswith("✓ ") for line in lines), done.stdout
    out = done.stdout
    assert f"✓ project file: {DEMO_FILE} is valid: 1 client, 2 tables" in out
    assert "is reachable (DATABASE_URL)" in out
    assert "✓ schema: at revision" in out
    assert "key column airtable_record_id is unique (unique index" in out
    assert "soft-delete column is_active is boolean" in out
    assert "capture trigger installed and enabled ('leads', 'airtable_record_id')" in out
    assert "the trigger watches exactly the mapped columns with their owners" in out
    assert "✓ client demo: AIRTABLE_API_KEY is set (the value is not shown)" in out
    assert f"✓ client demo: Airtable ({emulator.url}) accepts the token" in out
    assert f"✓ client demo: base {BASE} (Demo Sales Portal) is reachable" in out
    assert "✓ leads (Airtable): table Leads (tblLeads000000001) is readable" in out
    assert "✓ leads (Airtable): all 26 mapped fields present with compatible types" in out
    assert emulator.token not in out + done.stderr


def test_without_a_token_the_demo_is_checked_against_the_embedded_emulator(env):
    done = doctor(env, AIRTABLE_API_KEY=None, AIRTABLE_ENDPOINT_URL=None)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "✓ client demo: AIRTABLE_API_KEY is not set: the embedded Airtable emulator" in (
        done.stdout
    )
    assert "✓ leads (Airtable): all 26 mapped fields present" in done.stdout


def test_a_missing_capture_trigger_is_a_failure_that_says_run_db_upgrade(env, engine):
    with engine.begin() as conn:
        conn.execute(text("DROP TRIGGER reconcile_capture_portal_change ON public.leads"))

    done = doctor(env)

    assert done.returncode == 1, done.stdout + done.stderr
    assert failures(done) == [
        "✗ leads (public.leads): the capture trigger is missing on public.leads: run "
        "`reconcile db upgrade` (with the same DATABASE_URL and project file); until then "
        "runs of this table refuse to start (its portal edits would never be pushed)"
    ]
    # Repaired by what it says to run.
    assert run_reconcile_cli(["db", "upgrade"], env, timeout=120).returncode == 0
    assert doctor(env).returncode == 0


def test_a_mapped_field_deleted_in_airtable_is_a_failure_naming_it(env, emulator):
    emulator.delete_field(BASE, TABLE, COMPANY)

    done = doctor(env)

    assert done.returncode == 1, done.stdout + done.stderr
    (line,) = failures(done)
    assert line.startswith("✗ leads (Airtable): table Leads (tblLeads000000001): field Company")
    assert f"Company ({COMPANY}) is not in the table (deleted, or a wrong id)" in line
    assert "remove it from the project file or map another field" in line


def test_a_bad_token_is_a_failure_and_never_printed(env):
    token = "patNotTheRightToken.0123456789abcdef"

    done = doctor(env, AIRTABLE_API_KEY=token)

    assert done.returncode == 1, done.stdout + done.stderr
    assert failures(done) == [
        f"✗ client demo: Airtable ({env['AIRTABLE_ENDPOINT_URL']}) rejects the token in "
        "AIRTABLE_API_KEY (401): set AIRTABLE_API_KEY to a valid personal access token"
    ]
    assert "NotTheRightToken" not in done.stdout + done.stderr
    # The database side is still checked and holds.
    assert "✓ leads (public.leads): capture trigger installed" in done.stdout


def test_a_token_with_a_line_break_inside_is_a_failure_naming_the_position(env):
    done = doctor(env, AIRTABLE_API_KEY="patAbc\ndef.ghi")

    assert done.returncode == 1
    (line,) = failures(done)
    assert "AIRTABLE_API_KEY holds whitespace at position 7 of 14" in line
    assert "patAbc" not in done.stdout + done.stderr


def test_an_unreachable_database_is_a_failure_without_its_password(env):
    done = doctor(env, DATABASE_URL="postgresql://someone:Secret-pw@127.0.0.1:1/portal")

    assert done.returncode == 1
    (line,) = failures(done)
    assert line.startswith("✗ database: cannot connect to postgresql+psycopg://someone:***@")
    assert "Set DATABASE_URL to a reachable PostgreSQL database" in line
    assert "Secret-pw" not in done.stdout + done.stderr
    assert "✓ leads (Airtable): all 26 mapped fields present" in done.stdout  # still checked


def test_a_bad_project_file_stops_it_early_with_exit_2(env, tmp_path):
    bad = tmp_path / "reconcile.yaml"
    bad.write_text("version: 1\nclients:\n  demo:\n    base_id: appDemoLeads00001\n")

    done = doctor(env, RECONCILE_CONFIG=str(bad))

    assert done.returncode == 2
    assert done.stdout.startswith(f"✗ project file: {bad}:4: clients.demo.tables: required key")


def test_a_project_of_your_own_without_its_token_names_the_variable(env, tmp_path):
    own = tmp_path / "reconcile.yaml"
    own.write_text(
        DEMO_FILE.read_text(encoding="utf-8").replace(
            "token_env: AIRTABLE_API_KEY", "token_env: ACME_AIRTABLE_TOKEN"
        ),
        encoding="utf-8",
    )

    done = doctor(env, RECONCILE_CONFIG=str(own), ACME_AIRTABLE_TOKEN=None)

    assert done.returncode == 1
    (line,) = failures(done)
    assert line.startswith("✗ client demo: ACME_AIRTABLE_TOKEN is not set: set it to a personal")


def test_table_checks_name_duplicates_wrong_owners_and_a_soft_delete_column_of_another_type(
    env, engine
):
    """The PostgreSQL side's failures, from the pure checks (the CLI prints these lines)."""
    leads = next(m for m in load(DEMO_FILE).mappings() if m.name == "leads")
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE leads DROP CONSTRAINT leads_airtable_record_id_key"))
        conn.execute(text("SET LOCAL reconcile.origin = 'reconciler'"))
        conn.execute(
            text(
                "INSERT INTO leads (airtable_record_id, email) VALUES "
                "('recDUP00000000001', 'a@x.y'), ('recDUP00000000001', 'b@x.y'), "
                "('recONE00000000001', 'c@x.y')"
            )
        )
        conn.execute(
            text(
                "UPDATE reconcile.tracked_columns SET owner = 'portal' "
                "WHERE table_key = 'leads' AND column_name = 'status'"
            )
        )
        conn.execute(text("ALTER TABLE leads ALTER COLUMN is_active DROP DEFAULT"))
        conn.execute(text("ALTER TABLE leads ALTER COLUMN is_active TYPE text"))

    failed = [c.message for c in check_table(engine, leads) if not c.ok]

    assert failed == [
        "key column airtable_record_id has 1 value(s) on more than one row (no unique index): "
        "remove the duplicate rows, then add CREATE UNIQUE INDEX on it",
        "soft-delete column is_active is text, expected boolean: add it (boolean NOT NULL "
        "DEFAULT true) or fix `soft_delete_column` in the project file",
        "the trigger watches the wrong columns: status is watched as portal-owned, the project "
        "file says airtable: run `reconcile db upgrade` (with the same DATABASE_URL and project "
        "file)",
    ]
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM leads WHERE email = 'b@x.y'"))
    (key,) = [c for c in check_table(engine, leads) if "key column" in c.message]
    assert key.ok
    assert key.message == (
        "key column airtable_record_id has no duplicates (no unique index: CREATE UNIQUE INDEX "
        "on it keeps it so)"
    )


def test_a_trigger_that_captures_but_differs_is_a_failure_db_upgrade_repairs(env, engine):
    leads = next(m for m in load(DEMO_FILE).mappings() if m.name == "leads")
    with engine.begin() as conn:  # no WHEN condition: every reconciler write queues an event
        conn.execute(
            text(
                "DROP TRIGGER reconcile_capture_portal_change ON public.leads; "
                "CREATE TRIGGER reconcile_capture_portal_change AFTER INSERT OR UPDATE "
                "ON public.leads FOR EACH ROW EXECUTE FUNCTION "
                "reconcile.capture_portal_change('demo', 'leads', 'airtable_record_id')"
            )
        )

    assert [c.message for c in check_table(engine, leads) if not c.ok] == [
        "the capture trigger on public.leads lacks the WHEN condition on reconcile.origin: run "
        "`reconcile db upgrade` (with the same DATABASE_URL and project file) to replace it"
    ]
    upgraded = run_reconcile_cli(["db", "upgrade"], env, timeout=120)
    assert "capture trigger replaced (it lacks the WHEN condition" in upgraded.stdout
    assert all(c.ok for c in check_table(engine, leads))
