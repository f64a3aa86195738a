"""The Airtable token never reaches a screen, a log or an error, in any spelling.

A token pasted with its trailing newline used to be quoted whole (repr-escaped, by requests'
header check) in the run's error, hence on stderr, in the event log and the compute logs. The
token is now trimmed and checked before use, and every error of the client is redacted for the
raw, stripped, repr-escaped and URL-encoded forms.
"""

from pathlib import Path

import dagster as dg
import pytest
import requests
from dagster_shared.serdes import serialize_value

from reconcile_pipeline.airtable.client import AirtableClient, clean_token
from reconcile_pipeline.airtable.errors import AirtableConfigError, translate_error
from reconcile_pipeline.airtable.secrets import redact, secret_forms
from reconcile_pipeline.emulator import Emulator
from reconcile_pipeline_tests.airtable.conftest import BASE, TABLE
from reconcile_pipeline_tests.dagster.cli import reconcile_env, run_reconcile_cli

# Not the emulator's token: every request is refused with 401, so the run fails.
TOKEN = "patLeakCheck00000000000000.0123456789abcdef"


def test_cli_run_with_a_token_ending_in_newline_never_prints_it(
    tmp_path: Path, emulator: Emulator, database_url: str, project_dagster_database: str
) -> None:
    env = reconcile_env(tmp_path / "home", database_url, emulator.url, TOKEN + "\n")

    done = run_reconcile_cli(["backfill", "--hours", "1"], env)

    # Every form of the token contains the stripped token (its characters need no escaping).
    assert TOKEN not in done.stdout
    assert TOKEN not in done.stderr
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Airtable rejected the API token" in done.stdout
    with dg.DagsterInstance.get() as instance:
        [run] = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.FAILURE
        events = instance.all_logs(run.run_id)
    assert events
    assert all(TOKEN not in serialize_value(event) for event in events)
    # Compute logs and anything else the instance wrote under DAGSTER_HOME.
    for path in Path(env["DAGSTER_HOME"]).rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_a_token_with_inner_whitespace_is_refused_naming_the_variable_not_the_value(
    tmp_path: Path, emulator: Emulator, database_url: str, project_dagster_database: str
) -> None:
    env = reconcile_env(tmp_path / "home", database_url, emulator.url, "patAbc def.0123456789")

    done = run_reconcile_cli(["backfill", "--hours", "1"], env)

    assert done.returncode == 2
    assert "AIRTABLE_API_KEY holds whitespace at position 7 of 21" in done.stderr
    assert "patAbc" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "value",
    [" patA.1\n", "\tpatA.1\r\n", "patA.1"],
)
def test_surrounding_whitespace_is_trimmed(value: str) -> None:
    assert clean_token(value) == "patA.1"


@pytest.mark.parametrize("value", ["pat A", "pat\nA", "pat\x00A", "pat\x7fA", "patÀ"])
def test_inner_whitespace_control_and_non_ascii_are_refused(value: str) -> None:
    with pytest.raises(AirtableConfigError) as raised:
        clean_token(value)
    assert "AIRTABLE_API_KEY" in str(raised.value)
    assert "pat" not in str(raised.value)


def test_a_client_built_with_a_trailing_newline_works(emulator: Emulator) -> None:
    client = AirtableClient(
        emulator.token + "\n", BASE, TABLE, endpoint_url=emulator.url, requests_per_second=0
    )
    try:
        assert client.table_schema()["name"] == TABLE
    finally:
        client.close()


def test_every_form_of_the_token_is_redacted_from_translated_errors() -> None:
    raw = TOKEN + "\n"
    forms = secret_forms([raw])
    for form in (raw, TOKEN, "patLeakCheck00000000000000.0123456789abcdef\\n", TOKEN + "%0A"):
        assert form in forms
    text = (
        f"header 'Bearer {TOKEN}\\n' url ?t={TOKEN}%0A json \"{TOKEN}\\n\" raw {raw} bare {TOKEN}"
    )

    error = translate_error(requests.exceptions.InvalidHeader(text), secrets=[raw])

    assert TOKEN not in str(error)
    assert "LeakCheck" not in str(error)
    assert redact(text, [raw]).count("***") == 5


def test_a_translated_error_does_not_chain_the_unredacted_original(emulator: Emulator) -> None:
    # A 401 raised by the client: nothing in the chain (cause or context) carries the token.
    client = AirtableClient(TOKEN, BASE, TABLE, endpoint_url=emulator.url, requests_per_second=0)
    try:
        with pytest.raises(AirtableConfigError) as raised:
            client.table_schema()
    finally:
        client.close()
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__
