"""The ``airtable-emulator`` console script serves the demo schema as a separate process."""

import signal
import socket
import subprocess
import sys
from pathlib import Path

from pyairtable import Api

from reconcile_pipeline.emulator import EmulatorAdmin
from reconcile_pipeline_tests.airtable.conftest import BASE, TABLE, lead


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_console_script_serves_lists_and_saves_on_sigterm(tmp_path: Path) -> None:
    port, data = free_port(), tmp_path / "data.json"
    script = Path(sys.executable).parent / "airtable-emulator"
    process = subprocess.Popen(
        [str(script), "--port", str(port), "--token", "cli-token", "--data", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        admin = EmulatorAdmin(url)
        admin.wait_until_ready(timeout_seconds=20)
        table = Api("cli-token", endpoint_url=url).table(BASE, TABLE)

        assert table.all() == []
        [record_id] = admin.seed_records(BASE, TABLE, [lead()])
        assert [r["id"] for r in table.all()] == [record_id]
        admin.close()
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)

    assert process.returncode == 0, output
    assert f"127.0.0.1:{port}" in output
    assert record_id in data.read_text()
