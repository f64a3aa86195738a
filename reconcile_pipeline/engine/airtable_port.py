"""What the engine needs from Airtable: the verbs of `reconcile_pipeline.airtable.client`.

The engine depends on this protocol only, so it reads as plain Python and runs against the real
client (over HTTP to Airtable or the emulator) without knowing which.
"""

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Protocol


class AirtablePort(Protocol):
    @property
    def requests_sent(self) -> int: ...

    # Ids a listing returned twice in one pass (the client drops the repeats).
    repeated_ids: list[str]

    def iter_modified(
        self, start: dt.datetime, end: dt.datetime, fields: list[str] | None = None
    ) -> Iterator[list[dict]]: ...

    def iter_all(self, fields: list[str] | None = None) -> Iterator[list[dict]]: ...

    def get_records(
        self, record_ids: Sequence[str], fields: list[str] | None = None
    ) -> list[dict]: ...

    def list_record_ids(self) -> list[str]: ...

    def update_records(self, updates: list[dict], typecast: bool = False) -> list[dict]: ...


def status_code_of(error: BaseException) -> int | None:
    """The HTTP status behind an Airtable error, when there was a response."""
    status = getattr(error, "status_code", None)
    if isinstance(status, int):
        return status
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def describe(error: BaseException) -> str:
    """A short, secret-free description for results and logs."""
    status = status_code_of(error)
    message = getattr(error, "message", None) or str(error)
    message = message.splitlines()[0][:300] if message else type(error).__name__
    return f"HTTP {status}: {message}" if status else f"{type(error).__name__}: {message}"
