"""Run the `reconcile` console script as a separate process against the test's databases and
emulator, the way an operator runs it."""

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

RECONCILE = str(Path(sys.executable).parent / "reconcile")
BASE, TABLE = "appDemoLeads00001", "Leads"


def reconcile_env(
    home: Path,
    database_url: str,
    endpoint_url: str,
    token: str,
    **overrides: str | None,
) -> dict[str, str]:
    """The environment of a `reconcile` process: this process's (DAGSTER_HOME and
    DAGSTER_POSTGRES_URL from the fixtures) plus the app database and the emulator. A None
    override removes the variable."""
    env = dict(os.environ)
    env.update(
        {
            "RECONCILE_HOME": str(home),
            "DATABASE_URL": database_url,
            "AIRTABLE_API_KEY": token,
            "AIRTABLE_BASE_ID": BASE,
            "AIRTABLE_TABLE": TABLE,
            "AIRTABLE_ENDPOINT_URL": endpoint_url,
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.pop("RECONCILE_ALERT_WEBHOOK_URL", None)
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def run_reconcile_cli(
    args: Sequence[str], env: Mapping[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`reconcile <args>` to completion; stdout and stderr captured as text."""
    return subprocess.run(
        [RECONCILE, *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_reconcile_cli(
    args: Sequence[str], env: Mapping[str, str], output: Path
) -> subprocess.Popen[bytes]:
    """`reconcile <args>` in the background, stdout and stderr written to `output`."""
    handle = output.open("wb")
    try:
        return subprocess.Popen(
            [RECONCILE, *args], env=dict(env), stdout=handle, stderr=subprocess.STDOUT
        )
    finally:
        handle.close()
