"""A local Airtable-Web-API-compatible server: the demo's Airtable and the tests' fake.

In process::

    with run_emulator(rate_limit=0) as emulator:
        ids = emulator.seed_records("appDemoLeads00001", "Leads", [{"Email": "a@b.c"}])
        api = pyairtable.Api(emulator.token, endpoint_url=emulator.url)

As a process: ``airtable-emulator --port 8765`` and `EmulatorAdmin` for its admin endpoints.

Airtable's limits: ``rate_limit`` requests/s per base and ``token_rate_limit`` per token owner
across bases (50 by default whenever ``rate_limit`` is on), each answering 429 and blocking for
``penalty_seconds``; `Emulator.advance_clock` waits a block out in no time. The request log
counts requests and 429s per owner (token fingerprints, never tokens) and per base.
"""

from reconcile_pipeline.emulator.admin_client import EmulatorAdmin
from reconcile_pipeline.emulator.core import DEFAULT_TOKEN, DEFAULT_TOKEN_RATE_LIMIT, Emulator
from reconcile_pipeline.emulator.faults import FaultConfig
from reconcile_pipeline.emulator.server import run_emulator
from reconcile_pipeline.emulator.tokens import fingerprint as token_fingerprint

__all__ = [
    "DEFAULT_TOKEN",
    "DEFAULT_TOKEN_RATE_LIMIT",
    "Emulator",
    "EmulatorAdmin",
    "FaultConfig",
    "run_emulator",
    "token_fingerprint",
]
