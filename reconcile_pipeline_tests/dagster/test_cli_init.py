"""`reconcile init` as an operator runs it: a separate process, the emulator over real HTTP on a
base of the user's own (a schema file written here), and a real PostgreSQL table."""

import json
import re
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from reconcile_pipeline.config.load import DEMO_FILE, load, parse, table_mapping
from reconcile_pipeline.emulator import Emulator, run_emulator
from reconcile_pipeline.engine.mapping import FieldKind, Owner
from reconcile_pipeline.engine.repository import Repository
from reconcile_pipeline.engine.validate import airtable_problems, validate_postgres
from reconcile_pipeline_tests.dagster.cli import reconcile_env, run_reconcile_cli

BASE = "appAcmeSales00001"
TABLE_ID = "tblProspects00001"
NAME, EMAIL, MOBILE, ASSIGNED = (
    "fldName0000000001",
    "fldEmail000000001",
    "fldMobile00000001",
    "fldAssigned000001",
)
STATUS, MODIFIED, SCORE, DEAL = (
    "fldStatus00000001",
    "fldModified000001",
    "fldScore000000001",
    "fldDealSize000001",
)
ARGS = ["init", "--base", BASE, "--postgres-table", "public.prospects", "--key-column"]

SCHEMA = {
    "bases": [
        {
            "id": BASE,
            "name": "Acme Sales",
            "tables": [
                {
                    "id": "tblCompanies00001",
                    "name": "Companies",
                    "primaryFieldId": "fldCompanyName001",
                    "fields": [
                        {"id": "fldCompanyName001", "name": "Name", "type": "singleLineText"}
                    ],
                },
                {
                    "id": TABLE_ID,
                    "name": "Prospects",
                    "primaryFieldId": NAME,
                    "fields": [
                        {"id": NAME, "name": "Name", "type": "singleLineText"},
                        {"id": EMAIL, "name": "E-mail", "type": "email"},
                        {"id": MOBILE, "name": "Mobile", "type": "phoneNumber"},
                        {"id": ASSIGNED, "name": "Assigned To", "type": "singleLineText"},
                        {
                            "id": STATUS,
                            "name": "Status",
                            "type": "singleSelect",
                            "options": {
                                "choices": [
                                    {"id": f"sel{n:0>14}", "name": n}
                                    for n in ("New", "Contacted", "Nurture", "Lost", "Archived")
                                ]
                            },
                        },
                        {
                            "id": DEAL,
                            "name": "Deal Size",
                            "type": "number",
                            "options": {"precision": 2},
                        },
                        {
                            "id": MODIFIED,
                            "name": "Last Modified",
                            "type": "lastModifiedTime",
                            "options": {"isValid": True, "referencedFieldIds": []},
                        },
                        {
                            "id": SCORE,
                            "name": "Score",
                            "type": "formula",
                            "options": {"formula": "LEN({E-mail})", "isValid": True},
                        },
                    ],
                },
            ],
        }
    ]
}

PROSPECTS = """
CREATE TABLE public.prospects (
    id              bigserial PRIMARY KEY,
    record_ref      text UNIQUE,
    email           text,
    mobile          varchar(40),
    assigned_to     text,
    status          text,
    deal_size       integer,
    is_active       boolean NOT NULL DEFAULT true,
    internal_rating integer
)
"""


@pytest.fixture
def acme(tmp_path: Path) -> Emulator:
    path = tmp_path / "acme_schema.json"
    path.write_text(json.dumps(SCHEMA), encoding="utf-8")
    with run_emulator(schema_path=path) as emulator:
        yield emulator


@pytest.fixture
def portal_url(empty_database_url: str) -> str:
    """The user's own database: public.prospects and nothing of ours."""
    engine = create_engine(empty_database_url)
    with engine.begin() as conn:
        conn.execute(text(PROSPECTS))
    engine.dispose()
    return empty_database_url


def _env(tmp_path: Path, database_url: str, emulator: Emulator, **overrides: str | None):
    return reconcile_env(tmp_path / "home", database_url, emulator.url, emulator.token, **overrides)


def _one_clean_error(result, *needles: str) -> None:
    """Exit 2 with one or two lines naming what to set, no traceback, no token."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_init_writes_a_starter_file_from_the_users_base_and_table(
    tmp_path: Path, acme: Emulator, portal_url: str
) -> None:
    output = tmp_path / "reconcile.yaml"
    env = _env(tmp_path, portal_url, acme)
    result = run_reconcile_cli(
        [*ARGS, "record_ref", "--table", "Prospects", "--output", str(output)], env
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr

    written = output.read_text(encoding="utf-8")
    assert acme.token not in written + result.stdout + result.stderr
    project = load(output)
    client_key, client = project.client()
    assert (client_key, client.name, client.base_id) == ("acme_sales", "Acme Sales", BASE)
    assert client.token_env == "AIRTABLE_API_KEY"
    ((table_key, table),) = client.tables.items()
    assert table_key == "prospects"
    assert (table.airtable_table, table.name) == (TABLE_ID, "Prospects")
    assert table.postgres.schema_name == "public" and table.postgres.table == "prospects"
    assert table.postgres.key_column == "record_ref"
    assert table.postgres.soft_delete_column == "is_active"
    assert table.modified_time_field == MODIFIED
    assert {i: (f.name, f.column, f.type) for i, f in table.fields.items()} == {
        EMAIL: ("E-mail", "email", FieldKind.TEXT),
        MOBILE: ("Mobile", "mobile", FieldKind.TEXT),
        ASSIGNED: ("Assigned To", "assigned_to", FieldKind.TEXT),
        STATUS: ("Status", "status", FieldKind.SELECT),
    }
    assert table.fields[MOBILE].max_length == 40
    assert all(f.owner is Owner.AIRTABLE for f in table.fields.values())  # never guessed
    assert table.ignored_fields == [SCORE]  # the formula
    assert "Nurture" in written and "Archived" in written  # options shown, read at run time
    assert f"# {DEAL}:" in written  # the mismatch, commented out

    # The engine's own checks accept it against both sides.
    mapping = table_mapping(table_key, table)
    engine = create_engine(portal_url)
    try:
        validate_postgres(Repository(engine, mapping))
        with engine.connect() as conn:
            ours = conn.execute(
                text("SELECT count(*) FROM pg_namespace WHERE nspname = 'reconcile'")
            ).scalar_one()
    finally:
        engine.dispose()
    assert ours == 0  # init only reads the user's database
    (meta,) = [t for t in SCHEMA["bases"][0]["tables"] if t["id"] == TABLE_ID]
    assert airtable_problems(mapping, meta) == []

    report = result.stdout
    assert re.search(r"mapped: 4\n(    .*\n){4}", report)
    assert "E-mail → email (text)" in report and "Assigned To → assigned_to (text)" in report
    assert "unmapped Airtable fields: 1\n    Name (singleLineText)" in report
    assert "unmapped columns (local-only): 2\n    id (bigint)\n    internal_rating (integer)" in (
        report
    )
    assert "type mismatches (left commented out): 1\n    Deal Size (number)" in report
    assert "Score: computed by Airtable (formula)" in report
    assert f"Wrote {output}." in report

    # Never over an existing file without --force: exit 2, the file untouched.
    before = (output.read_bytes(), output.stat().st_mtime_ns)
    again = run_reconcile_cli([*ARGS, "record_ref", "--output", str(output)], env)
    _one_clean_error(again, str(output), "--force")
    assert (output.read_bytes(), output.stat().st_mtime_ns) == before

    # --force rewrites it (here with another token variable, which is all it records).
    forced = run_reconcile_cli(
        [*ARGS, "record_ref", "--output", str(output), "--force", "--token-env", "ACME_TOKEN"],
        dict(env, ACME_TOKEN=acme.token),
    )
    assert forced.returncode == 0, forced.stderr
    assert parse(output.read_text(encoding="utf-8")).clients["acme_sales"].token_env == (
        "ACME_TOKEN"
    )


def test_init_says_what_to_set_when_something_is_missing(
    tmp_path: Path, acme: Emulator, portal_url: str
) -> None:
    env = _env(tmp_path, portal_url, acme)
    output = tmp_path / "reconcile.yaml"
    cases = [
        # the token variable is not set
        (
            [*ARGS, "record_ref", "--token-env", "ACME_TOKEN"],
            env,
            ("ACME_TOKEN", "personal access token"),
        ),
        # the base does not exist
        (
            ["init", "--base", "appNoSuchBase0001", "--postgres-table", "public.prospects"],
            env,
            ("appNoSuchBase0001", "--base"),
        ),
        # the table does not exist, or the base has several and none was named
        (
            [*ARGS, "record_ref", "--table", "Leads"],
            env,
            ("--table", "Prospects (tblProspects00001)", "Companies"),
        ),
        (
            [*ARGS, "record_ref", "--postgres-table", "public.contacts"],
            env,
            ("--table", "Prospects", "Companies"),
        ),
        # the PostgreSQL table does not exist
        (
            [*ARGS, "record_ref", "--table", "Prospects", "--postgres-table", "public.prospect"],
            env,
            ("public.prospect was not found", "public.prospects", "--postgres-table"),
        ),
        # no airtable_record_id column and no --key-column
        (
            [*ARGS[:-1], "--table", "Prospects"],
            env,
            ("--key-column", "record_ref"),
        ),
        # PostgreSQL unreachable, or DATABASE_URL not a URL (the password is never shown)
        (
            [*ARGS, "record_ref", "--table", "Prospects"],
            dict(env, DATABASE_URL="postgresql://portal:s3cretpw@127.0.0.1:1/portal"),
            ("could not be read", "DATABASE_URL"),
        ),
        (
            [*ARGS, "record_ref", "--table", "Prospects"],
            dict(env, DATABASE_URL="s3cretpw:not a url"),
            ("is not usable", "DATABASE_URL"),
        ),
        # a token Airtable rejects
        ([*ARGS, "record_ref", "--table", "Prospects"], dict(env, AIRTABLE_API_KEY="patWrong"), (
            "AIRTABLE_API_KEY",
            "401",
        )),
    ]  # fmt: skip
    for args, case_env, needles in cases:
        result = run_reconcile_cli([*args, "--output", str(output)], case_env)
        _one_clean_error(result, *needles)
        assert acme.token not in result.stdout + result.stderr
        assert "s3cretpw" not in result.stdout + result.stderr
        assert not output.exists()


def test_init_on_the_embedded_demo_matches_the_shipped_project_file(
    tmp_path: Path, database_url: str
) -> None:
    """No token and the demo base: the embedded emulator answers; against the demo's leads
    table the starter maps what the shipped file maps, every field owned by Airtable."""
    output = tmp_path / "reconcile.yaml"
    env = reconcile_env(
        tmp_path / "home", database_url, "http://unused", "unused", AIRTABLE_API_KEY=None
    )
    env.pop("AIRTABLE_ENDPOINT_URL")
    result = run_reconcile_cli(
        [
            "init",
            "--base",
            "appDemoLeads00001",
            "--postgres-table",
            "public.leads",
            "--client",
            "demo",
            "--output",
            str(output),
        ],
        env,
    )
    assert result.returncode == 0, result.stderr

    _, ours = load(output).client("demo")
    _, shipped = load(DEMO_FILE).client("demo")
    mine, theirs = ours.tables["leads"], shipped.tables["leads"]
    # A link names the table it links to, which init of one table cannot know: the shipped
    # file's `campaign_ref` link is added by hand (init reports the column as unmapped).
    assert {i: (f.column, f.type) for i, f in mine.fields.items()} == {
        i: (f.column, f.type) for i, f in theirs.fields.items() if f.type is not FieldKind.LINK
    }
    assert sorted(mine.ignored_fields) == sorted(theirs.ignored_fields)
    assert mine.modified_time_field == theirs.modified_time_field
    assert mine.postgres == theirs.postgres
    assert (mine.airtable_table, ours.base_id, ours.name) == (
        theirs.airtable_table,
        shipped.base_id,
        shipped.name,
    )
    assert all(f.owner is Owner.AIRTABLE for f in mine.fields.values())
    assert any(f.owner is Owner.PORTAL for f in theirs.fields.values())  # the shipped choice
