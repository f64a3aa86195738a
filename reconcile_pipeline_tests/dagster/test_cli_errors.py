"""The command line's misconfiguration matrix (DESIGN §9, issue 14): for each known failure, the
real `reconcile` process says what is wrong and what to set in at most two lines on stderr, never
a traceback and never a secret; exit 2 for a configuration error, 1 for a run that failed (with
its id and how to see it). With --verbose the traceback is shown."""

import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reconcile_pipeline.config.load import DEMO_FILE
from reconcile_pipeline.emulator.server import run_emulator
from reconcile_pipeline_tests.dagster.cli import BASE, TABLE, reconcile_env, run_reconcile_cli

pytestmark = pytest.mark.slow  # ~25 `reconcile` processes, a few seconds each

BAD_TOKEN = "fake-airtable-token-refused-0000"  # not a real token's shape
DB_PASSWORD = "s3cretDbPassw0rd"
FRAME = re.compile(r'File "[^"]+", line \d+')


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class World:
    """What a case may point the command at."""

    tmp_path: Path
    emulator_url: str
    token: str
    database_url: str

    def project_file(self, name: str, old: str, new: str) -> str:
        """The demo's project file with `old` replaced by `new`."""
        text = DEMO_FILE.read_text(encoding="utf-8")
        assert old in text
        path = self.tmp_path / name
        path.write_text(text.replace(old, new), encoding="utf-8")
        return str(path)


@dataclass
class Case:
    args: list[str]
    code: int
    names: list[str]  # what to set: a variable, an option, the file
    env: Callable[[World], dict[str, str | None]] = lambda world: {}
    stdout: list[str] = field(default_factory=list)  # for failed runs: the run's report


def bad_project(world: World) -> dict[str, str | None]:
    path = world.tmp_path / "bad.yaml"
    path.write_text("version: 1\nclients:\n  demo:\n    base_id: 42\n", encoding="utf-8")
    return {"RECONCILE_CONFIG": str(path)}


CASES = {
    "database-url-malformed": Case(
        ["status"], 2, ["DATABASE_URL"], lambda w: {"DATABASE_URL": "not a url at all"}
    ),
    "database-url-not-postgres": Case(
        ["backfill", "--hours", "1"],
        2,
        ["DATABASE_URL"],
        lambda w: {"DATABASE_URL": f"mysql://app:{DB_PASSWORD}@127.0.0.1/portal"},
    ),
    "database-unreachable": Case(
        ["backfill", "--hours", "1"],
        2,
        ["DATABASE_URL"],
        lambda w: {
            "DATABASE_URL": f"postgresql://app:{DB_PASSWORD}@127.0.0.1:{closed_port()}/portal"
        },
    ),
    "database-unreachable-quarantine": Case(
        ["quarantine", "list"],
        2,
        ["DATABASE_URL"],
        lambda w: {
            "DATABASE_URL": f"postgresql://app:{DB_PASSWORD}@127.0.0.1:{closed_port()}/portal"
        },
    ),
    "token-refused": Case(
        ["backfill", "--hours", "1"],
        1,
        ["AIRTABLE_API_KEY"],
        lambda w: {"AIRTABLE_API_KEY": BAD_TOKEN},
        stdout=["FAILED", "401"],
    ),
    "token-with-whitespace": Case(
        ["backfill", "--hours", "1"],
        2,
        ["AIRTABLE_API_KEY"],
        lambda w: {"AIRTABLE_API_KEY": BAD_TOKEN[:7] + " " + BAD_TOKEN[7:]},
    ),
    "unknown-base": Case(
        ["backfill", "--hours", "1"],
        1,
        ["base_id"],
        lambda w: {
            "RECONCILE_CONFIG": w.project_file(
                "unknown_base.yaml", "base_id: appDemoLeads00001", "base_id: appNoSuchBase0001"
            )
        },
        stdout=["FAILED", "appNoSuchBase0001"],
    ),
    "unknown-table": Case(
        ["backfill", "--hours", "1"],
        1,
        ["airtable_table"],
        lambda w: {
            "RECONCILE_CONFIG": w.project_file(
                "unknown_table.yaml",
                "airtable_table: tblLeads000000001",
                "airtable_table: tblNoSuchTable001",
            )
        },
        stdout=["FAILED", "tblNoSuchTable001"],
    ),
    "endpoint-down": Case(
        ["backfill", "--hours", "1"],
        1,
        ["AIRTABLE_ENDPOINT_URL"],
        lambda w: {"AIRTABLE_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}"},
        stdout=["FAILED"],
    ),
    "conflicts-resolve-without-id": Case(["conflicts", "resolve"], 2, ["--id"]),
    "quarantine-retry-without-id": Case(["quarantine", "retry"], 2, ["--id"]),
    "quarantine-release-without-id": Case(["quarantine", "release"], 2, ["--id"]),
    "history-not-searchable": Case(["history", "Ada Lovelace"], 2, ["e-mail"]),
    "project-file-invalid": Case(["backfill", "--hours", "1"], 2, ["bad.yaml:4"], bad_project),
    "project-file-missing": Case(
        ["backfill", "--hours", "1"],
        2,
        ["RECONCILE_CONFIG"],
        lambda w: {"RECONCILE_CONFIG": "/nonexistent.yaml"},
    ),
}


@pytest.fixture
def world(tmp_path, database_url, project_dagster_database):
    with run_emulator(rate_limit=0) as emulator:
        emulator.seed_records(BASE, TABLE, [{"Email": "a@example.com", "Status": "New"}])
        yield World(tmp_path, emulator.url, emulator.token, database_url)


def run_case(world: World, case: Case, verbose: bool):
    env = reconcile_env(
        world.tmp_path / "home", world.database_url, world.emulator_url, world.token
    )
    for name, value in case.env(world).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    args = ["--verbose", *case.args] if verbose else case.args
    return run_reconcile_cli(args, env, timeout=180)


def assert_no_secret(world: World, output: str) -> None:
    for secret in (BAD_TOKEN, BAD_TOKEN[7:], world.token, DB_PASSWORD):
        assert secret not in output


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_known_failure_is_two_lines_naming_what_to_set(world, name):
    case = CASES[name]

    done = run_case(world, case, verbose=False)

    output = done.stdout + done.stderr
    assert done.returncode == case.code, output
    lines = done.stderr.strip().splitlines()
    assert len(lines) <= 2, done.stderr
    assert "Traceback" not in output and not FRAME.search(output), output
    assert "Stack Trace" not in output, output
    for needle in case.names:
        assert needle in output, output
    for needle in case.stdout:
        assert needle in done.stdout, done.stdout
    if case.code == 1:  # a failed run: its id and where to see it
        run_ids = re.findall(r"run (\S+) FAILED", done.stdout)
        assert run_ids, done.stdout
        for run_id in run_ids:
            assert f"/runs/{run_id}" in done.stdout
            assert "`reconcile ui`" in done.stdout
    else:
        assert lines and lines[0].startswith("reconcile: "), done.stderr
        for needle in case.names:
            assert needle in done.stderr, done.stderr
    assert_no_secret(world, output)


# --verbose is one switch shared by every command: one case per kind of failure (database,
# Airtable, arguments, project file, failed run) proves it, at half the matrix's cost.
VERBOSE_CASES = [
    "database-unreachable",
    "token-refused",
    "endpoint-down",
    "conflicts-resolve-without-id",
    "project-file-invalid",
]


@pytest.mark.parametrize("name", VERBOSE_CASES)
def test_verbose_shows_the_traceback(world, name):
    case = CASES[name]

    done = run_case(world, case, verbose=True)

    output = done.stdout + done.stderr
    assert done.returncode == case.code, output
    assert "Traceback" in output or FRAME.search(output), output
    for needle in case.names:
        assert needle in output, output
    assert_no_secret(world, output)
