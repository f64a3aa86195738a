"""`reconcile quarantine list|retry|release` and `reconcile history` as an operator uses them,
in separate processes, around real `reconcile backfill` runs: a field held for being too long
stays held after the mapping is fixed (nobody edits the record, so no pull lists it) until
`quarantine retry`, after which the next run releases it; `release` closes a hold and keeps it;
`history` finds the record by e-mail or phone and prints its changes newest first."""

import datetime as dt
import re

import pytest
from sqlalchemy import create_engine, text

from reconcile_pipeline.config.load import DEMO_FILE
from reconcile_pipeline.emulator.server import run_emulator
from reconcile_pipeline_tests.dagster.cli import BASE, TABLE, reconcile_env, run_reconcile_cli

pytestmark = pytest.mark.slow  # three backfills and a dozen `reconcile` processes

COMPANY_255 = "          fld7a1994999d181d:\n            name: Company\n            column: company\n            type: text\n            max_length: 255\n"  # noqa: E501
LONG = "Initech Holdings " * 18  # 306 characters
A_DAY_AGO = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)


@pytest.fixture
def operator(tmp_path, database_url, project_dagster_database):
    """Two leads whose Company is too long, last edited in Airtable a day ago, synced by a
    first backfill (a full pull): both held. The project file is the demo's, copied."""
    config = tmp_path / "reconcile.yaml"
    config.write_text(DEMO_FILE.read_text(encoding="utf-8"), encoding="utf-8")
    assert COMPANY_255 in config.read_text(encoding="utf-8")
    with run_emulator(rate_limit=0) as emulator:
        ids = emulator.seed_records(
            BASE,
            TABLE,
            [
                {"Email": "ada@initech.test", "Phone": "+44 20 7946 0018", "Company": LONG},
                {"Email": "bo@initech.test", "Company": LONG},
            ],
            created_time=A_DAY_AGO,
            modified_time=A_DAY_AGO,
        )
        env = reconcile_env(
            tmp_path / "home",
            database_url,
            emulator.url,
            emulator.token,
            RECONCILE_CONFIG=str(config),
        )

        def cli(*args: str):
            done = run_reconcile_cli(list(args), env)
            output = done.stdout + done.stderr
            assert "Traceback" not in output, output
            assert emulator.token not in output
            return done

        done = cli("backfill", "--hours", "1")
        assert done.returncode == 0, done.stdout + done.stderr
        engine = create_engine(database_url)
        try:
            yield cli, config, ids, engine
        finally:
            engine.dispose()


def companies(engine) -> dict[str, str | None]:
    with engine.connect() as conn:
        return dict(
            conn.execute(text("SELECT airtable_record_id, company FROM public.leads")).all()
        )


def hold_ids(stdout: str) -> dict[str, int]:
    """Record id → hold number, from `quarantine list`."""
    return {m[1]: int(m[0]) for m in re.findall(r"^#(\d+) \S+ (rec\w+) company", stdout, re.M)}


def test_retry_release_and_history(operator):
    cli, config, (ada, bo), engine = operator

    listed = cli("quarantine", "list")

    assert listed.returncode == 0, listed.stderr
    holds = hold_ids(listed.stdout)
    assert set(holds) == {ada, bo}, listed.stdout
    line = next(line for line in listed.stdout.splitlines() if ada in line)
    assert "leads" in line and "(pull, open, since" in line and "255" in line
    assert "raw 'Initech Holdings Initech" in line and "…" in line and LONG not in line
    assert "2 of 2 open holds shown" in listed.stdout
    status = cli("status")
    assert status.returncode == 0, status.stderr
    leads_line = r"demo/leads \(public\.leads\): 2 rows .* quarantined: 2$"
    assert re.search(leads_line, status.stdout, re.M), status.stdout

    # The operator raises the limit in the project file. Nobody edits the records in
    # Airtable, so the next run does not list them: still held.
    config.write_text(
        config.read_text(encoding="utf-8").replace(
            COMPANY_255, COMPANY_255.replace("max_length: 255", "max_length: 400")
        ),
        encoding="utf-8",
    )
    assert cli("backfill", "--hours", "1").returncode == 0
    assert companies(engine) == {ada: None, bo: None}
    assert set(hold_ids(cli("quarantine", "list").stdout)) == {ada, bo}

    retried = cli("quarantine", "retry", "--id", str(holds[ada]))
    released = cli("quarantine", "release", "--id", str(holds[bo]))

    assert retried.returncode == 0, retried.stderr
    assert "the next run pulls every record changed since" in retried.stdout
    assert f"#{holds[ada]} stay held until that run releases them" in retried.stdout
    assert released.returncode == 0, released.stderr
    assert f"#{holds[bo]} released (kept as history)." in released.stdout
    again = cli("quarantine", "release", "--id", str(holds[bo]))
    assert again.returncode == 1
    assert f"#{holds[bo]}: no such open hold" in again.stderr

    assert cli("backfill", "--hours", "1").returncode == 0

    assert companies(engine)[ada] == LONG  # re-read and valid now: released by the run
    assert "0 of 0 open holds shown" in cli("quarantine", "list").stdout
    everything = cli("quarantine", "list", "--all").stdout
    assert len(re.findall(r"\(pull, released ", everything)) == 2, everything

    for search in ("ada@initech.test", "+44 20 7946 0018", ada):
        history = cli("history", search)
        assert history.returncode == 0, history.stderr
        lines = history.stdout.splitlines()
        assert lines[0].startswith(ada), history.stdout
        changes = lines[1:]
        assert "leads.company: None → 'Initech Holdings" in changes[0], history.stdout
        assert "Airtable → PostgreSQL" in changes[0]
        assert "(inserted)" in changes[-1] and "leads.*" in changes[-1]
        assert all(re.search(r"run \S+ +window \d{4}-", c) for c in changes), history.stdout
        times = [c.split(" UTC")[0].strip() for c in changes]
        assert times == sorted(times, reverse=True)
    assert "found by email" in cli("history", "ada@initech.test").stdout
    assert "found by phone" in cli("history", "020 7946 0018").stdout
    missing = cli("history", "nobody@initech.test")
    assert missing.returncode == 1
    assert "No synced record has 'nobody@initech.test'" in missing.stdout
