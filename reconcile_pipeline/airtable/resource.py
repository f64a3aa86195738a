"""`AirtableResource`: the Dagster face of `AirtableClient`.

The client (and its pyairtable session) is built once per run in `setup_for_execution` and
held privately; the token comes from ``EnvVar("AIRTABLE_API_KEY")`` bound by the definitions,
so it is read at run time and never shown in the UI or logs.
"""

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr

from reconcile_pipeline.airtable.client import DEFAULT_ENDPOINT, AirtableClient

ENDPOINT_ENV = "AIRTABLE_ENDPOINT_URL"


class AirtableResource(ConfigurableResource):
    """One Airtable table, paced under its base's rate limit and retried safely."""

    api_key: str = Field(
        description="Personal access token; bind EnvVar('AIRTABLE_API_KEY').", repr=False
    )
    base_id: str = Field(description="The app… id of the base (AIRTABLE_BASE_ID).")
    table: str | None = Field(
        default=None,
        description="A table name or tbl… id for `client` (scripts); runs use `table_client`.",
    )
    endpoint_url: str | None = Field(
        default=None,
        description="api.airtable.com, or the local emulator's URL; None: AIRTABLE_ENDPOINT_URL "
        "when set where the run runs (read then, never when the code location loads), else "
        "api.airtable.com.",
    )
    requests_per_second: float = Field(
        default=5.0, description="Pacing per base across the process (Airtable allows 5)."
    )
    timeout_seconds: float = Field(default=30.0, description="Read timeout per request.")

    _client: AirtableClient | None = PrivateAttr(default=None)
    _table_clients: dict[str, AirtableClient] = PrivateAttr(default_factory=dict)
    _log: Any = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._log = context.log
        if self.table:
            self._client = self._build_client(context.log)

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        for client in self._table_clients.values():
            client.close()
        self._table_clients.clear()

    @property
    def resolved_endpoint_url(self) -> str:
        """The endpoint this run talks to (see `endpoint_url`)."""
        if self.endpoint_url:
            return self.endpoint_url
        return (os.environ.get(ENDPOINT_ENV) or "").strip() or DEFAULT_ENDPOINT

    def table_client(self, mapping: Any) -> AirtableClient:
        """The run's client for a mapped table (addressed by id, its schema cached per run);
        all tables of the base share the base's pacing."""
        key = mapping.airtable_table
        if key not in self._table_clients:
            self._table_clients[key] = self._build_client(
                self._log, table=key, fields_by_id=mapping.fields_by_id
            )
        return self._table_clients[key]

    def _build_client(
        self, log: Any = None, table: str | None = None, fields_by_id: bool = False
    ) -> AirtableClient:
        return AirtableClient(
            token=self.api_key,
            base_id=self.base_id,
            table=table or self.table or "",
            fields_by_id=fields_by_id,
            endpoint_url=self.resolved_endpoint_url,
            requests_per_second=self.requests_per_second,
            timeout_seconds=self.timeout_seconds,
            logger=log if isinstance(log, logging.Logger) else None,
        )

    @property
    def client(self) -> AirtableClient:
        """The run's client. Outside a Dagster run (scripts, tests) it is built on first use."""
        if self._client is None:
            self._client = self._build_client()
        return self._client

    # Thin delegating verbs, so asset bodies read naturally.

    def iter_modified(
        self, start: datetime, end: datetime, fields: list[str] | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        return self.client.iter_modified(start, end, fields)

    def iter_all(self, fields: list[str] | None = None) -> Iterator[list[dict[str, Any]]]:
        return self.client.iter_all(fields)

    def get_records(
        self, record_ids: Sequence[str], fields: list[str] | None = None
    ) -> list[dict[str, Any]]:
        return self.client.get_records(record_ids, fields)

    def list_record_ids(self, field: str | None = None) -> list[str]:
        return self.client.list_record_ids(field)

    def update_records(
        self, updates: list[dict[str, Any]], typecast: bool = False
    ) -> list[dict[str, Any]]:
        return self.client.update_records(updates, typecast)

    def validate_fields(self, expected: Mapping[str, set[str] | str]) -> None:
        self.client.validate_fields(expected)

    @property
    def requests_sent(self) -> int:
        return self.client.requests_sent

    @property
    def repeated_ids(self) -> list[str]:
        return self.client.repeated_ids
