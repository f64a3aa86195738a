"""What a `reconcile` command does once per process: the project file parsed once however many
places read it (and again when it changes), and only the imports the command uses."""

import os
import subprocess
import sys

import pytest

from reconcile_pipeline.config import load as load_module
from reconcile_pipeline.config.load import DEMO_FILE, ConfigError, load


@pytest.fixture
def parses(monkeypatch):
    """The project files parsed (their sources), with a cache emptied for the test."""
    seen: list[str] = []
    real = load_module.parse

    def counted(text, source=load_module.DEFAULT_FILE):
        seen.append(source)
        return real(text, source)

    monkeypatch.setattr(load_module, "parse", counted)
    monkeypatch.setattr(load_module, "_PARSED", {})
    return seen


def test_the_project_file_is_parsed_once_per_process(parses):
    first, second = load(DEMO_FILE), load(DEMO_FILE)

    assert parses == [str(DEMO_FILE)]
    assert first == second


def test_an_edited_project_file_is_parsed_again(parses, tmp_path):
    path = tmp_path / "reconcile.yaml"
    text = DEMO_FILE.read_text()
    path.write_text(text)
    before = load(path)
    path.write_text(text.replace("appDemoLeads00001", "appOtherBase00001"))

    after = load(path)

    assert parses == [str(path), str(path)]
    assert {c.base_id for c in before.config.clients.values()} == {"appDemoLeads00001"}
    assert {c.base_id for c in after.config.clients.values()} == {"appOtherBase00001"}


def test_a_bad_project_file_is_refused_every_time_with_its_line(parses, tmp_path):
    path = tmp_path / "reconcile.yaml"
    path.write_text(DEMO_FILE.read_text() + "colour: teal\n")
    line = len(path.read_text().splitlines())

    for _ in range(2):
        with pytest.raises(ConfigError, match=rf"reconcile.yaml:{line}: colour: unknown key"):
            load(path)
    assert len(parses) == 2


def _modules_after(code: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        check=True,
    )
    return {name.split(".")[0] for name in done.stdout.split()}


def test_the_command_line_loads_without_dagster_pyairtable_or_alembic():
    loaded = _modules_after(
        "from reconcile_pipeline.cli import build_parser\nbuild_parser().parse_args(['status'])"
    )

    assert "reconcile_pipeline" in loaded
    assert not loaded & {"dagster", "pyairtable", "alembic"}


def test_airtable_errors_load_without_the_client_which_is_still_exported():
    assert "pyairtable" not in _modules_after("import reconcile_pipeline.airtable.errors")

    from reconcile_pipeline import airtable
    from reconcile_pipeline.airtable.client import AirtableClient
    from reconcile_pipeline.airtable.errors import translate_error

    assert airtable.AirtableClient is AirtableClient
    assert airtable.translate_error is translate_error
    with pytest.raises(AttributeError):
        airtable.NoSuchThing  # noqa: B018


def test_the_command_line_s_token_variable_is_the_client_s():
    from reconcile_pipeline import cli
    from reconcile_pipeline.airtable import client

    assert cli.TOKEN_ENV == client.TOKEN_ENV


@pytest.fixture
def db_env(monkeypatch, tmp_path):
    """`reconcile db env`'s environment (it touches no database), restored after the test."""
    for name in ("DAGSTER_POSTGRES_URL", "DAGSTER_EVENT_BATCH_SIZE", "DAGSTER_HOME"):
        monkeypatch.setenv(name, "")  # restored (unset) after the test: the command sets them
        monkeypatch.delenv(name)
    monkeypatch.setenv("DATABASE_URL", "postgresql://user:secret@db.example:5432/portal")
    monkeypatch.setenv("RECONCILE_HOME", str(tmp_path / "home"))


def test_the_console_script_freezes_the_heap_before_the_process_ends(db_env, monkeypatch, capsys):
    import gc

    from reconcile_pipeline import cli

    frozen = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))
    monkeypatch.setattr(sys, "argv", ["reconcile", "db", "env"])

    assert cli.main() == 0  # the console script: sys.argv, then the process ends

    assert frozen == [True]
    assert "export DATABASE_URL=" in capsys.readouterr().out


def test_main_called_with_arguments_leaves_the_heap_alone(db_env, monkeypatch):
    import gc

    from reconcile_pipeline import cli

    frozen = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))

    assert cli.main(["db", "env"]) == 0  # a process that goes on (a test, a script)

    assert frozen == []
