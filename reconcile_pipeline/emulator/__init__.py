"""A local Airtable-Web-API-compatible server: the demo's Airtable and the tests' fake.

In process::

    with run_emulator(rate_limit=0) as emulator:
        ids = emulator.seed_records("appDemoLeads00001", "Leads", [{"Email": "a@b.c"}])
        api = pyairtable.Api(emulator.token, endpoint_url=emulator.url)

As a process: ``airtable-emulator --port 8765`` and `EmulatorAdmin` for its admin endpoints.
"""

from reconcile_pipeline.emulator.admin_client import EmulatorAdmin
from reconcile_pipeline.emulator.core import DEFAULT_TOKEN, Emulator
from reconcile_pipeline.emulator.faults import FaultConfig
from reconcile_pipeline.emulator.server import run_emulator

__all__ = ["DEFAULT_TOKEN", "Emulator", "EmulatorAdmin", "FaultConfig", "run_emulator"]
