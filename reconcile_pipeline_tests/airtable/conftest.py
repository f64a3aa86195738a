"""Fixtures for the Airtable layer: the in-process emulator and clients talking to it over HTTP.

Everything here is real: pyairtable sends real HTTP requests to a real (local) server.
"""

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pyairtable import Api, Table

from reconcile_pipeline.airtable.client import AirtableClient
from reconcile_pipeline.emulator import Emulator, run_emulator

BASE = "appDemoLeads00001"
TABLE = "Leads"


def lead(**overrides: Any) -> dict[str, Any]:
    """Fields of a plausible lead; pass field names as keyword args via ``**{"Name": v}``."""
    fields: dict[str, Any] = {
        "Email": "ada@example.com",
        "First Name": "Ada",
        "Last Name": "Lovelace",
        "Status": "New",
        "ICP Score": 80,
    }
    fields.update(overrides)
    return fields


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """An emulator without Airtable's rate limit (tests that need it turn it on)."""
    with run_emulator(rate_limit=0, penalty_seconds=1.0) as running:
        yield running


@pytest.fixture
def table(emulator: Emulator) -> Table:
    """A plain pyairtable table (no retries) on the emulator."""
    return Api(emulator.token, endpoint_url=emulator.url, retry_strategy=None).table(BASE, TABLE)


ClientFactory = Callable[..., AirtableClient]


@pytest.fixture
def make_client(emulator: Emulator) -> Iterator[ClientFactory]:
    """Build `AirtableClient`s on the emulator with fast backoff; keyword args override."""
    clients: list[AirtableClient] = []

    def build(**overrides: Any) -> AirtableClient:
        settings: dict[str, Any] = {
            "token": emulator.token,
            "base_id": BASE,
            "table": TABLE,
            "endpoint_url": emulator.url,
            "requests_per_second": 0,
            "timeout_seconds": 10.0,
            "backoff_factor": 0.1,
            "backoff_max_seconds": 0.5,
        }
        settings.update(overrides)
        client = AirtableClient(**settings)
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()
