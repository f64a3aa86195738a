"""`EmulatorAdmin`: a small client for the admin endpoints of a separately running emulator."""

import json
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import requests

from reconcile_pipeline.emulator.clock import coerce_datetime, format_datetime


def _time_json(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, datetime | str):
        return format_datetime(coerce_datetime(value))
    return [_time_json(v) for v in value]


class EmulatorAdmin:
    """Mirrors the in-process helpers of `Emulator` over HTTP (see `admin_api`)."""

    def __init__(self, url: str, timeout_seconds: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self._session = requests.Session()

    def __repr__(self) -> str:
        return f"EmulatorAdmin({self.url!r})"

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._session.request(
            method, f"{self.url}/_emulator/{path}", timeout=self.timeout_seconds, **kwargs
        )
        response.raise_for_status()
        return response.json()

    def _post_verbatim(self, path: str, body: Mapping[str, Any]) -> Any:
        """POST JSON that may hold NaN or infinities (``requests``' ``json=`` refuses them).

        ``json.dumps`` writes them as bare tokens and escapes lone surrogates (``\\ud800``)
        and everything else non-ASCII, so the body is always valid UTF-8.
        """
        data = json.dumps(body, allow_nan=True).encode("ascii")
        headers = {"Content-Type": "application/json"}
        return self._call("POST", path, data=data, headers=headers)

    def wait_until_ready(self, timeout_seconds: float = 10.0) -> None:
        """Poll the health endpoint until the emulator answers.

        Raises:
            TimeoutError: it did not answer in time.
        """
        deadline = time.monotonic() + timeout_seconds
        while True:
            try:
                self._call("GET", "health")
                return
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"No emulator answering at {self.url}") from None
                time.sleep(0.05)

    def seed_records(
        self,
        base_id: str,
        table: str,
        records: Sequence[Mapping[str, Any]],
        created_time: Any = None,
        modified_time: Any = None,
        typecast: bool = False,
    ) -> list[str]:
        body = {
            "base": base_id,
            "table": table,
            "records": list(records),
            "created_time": _time_json(created_time),
            "modified_time": _time_json(modified_time),
            "typecast": typecast,
        }
        return self._call("POST", "records/seed", json=body)["ids"]

    def update_record_fields(
        self,
        base_id: str,
        table: str,
        record_id: str,
        fields: Mapping[str, Any],
        modified_time: datetime | str | None = None,
        typecast: bool = False,
    ) -> dict[str, Any]:
        body = {
            "base": base_id,
            "table": table,
            "id": record_id,
            "fields": dict(fields),
            "modified_time": _time_json(modified_time),
            "typecast": typecast,
        }
        return self._call("POST", "records/edit", json=body)

    def put_raw_fields(
        self,
        base_id: str,
        table: str,
        record_id: str,
        fields: Mapping[str, Any],
        modified_time: datetime | str | None = None,
    ) -> dict[str, Any]:
        """Store values verbatim (see `Emulator.put_raw_fields`); returns the record."""
        body = {
            "base": base_id,
            "table": table,
            "id": record_id,
            "fields": dict(fields),
            "modified_time": _time_json(modified_time),
        }
        return self._post_verbatim("records/raw", body)

    def seed_raw_records(
        self,
        base_id: str,
        table: str,
        records: Sequence[Mapping[str, Any]],
        created_time: Any = None,
        modified_time: Any = None,
    ) -> list[str]:
        """`seed_records` with every given field stored raw; returns the new ids."""
        body = {
            "base": base_id,
            "table": table,
            "records": [dict(r) for r in records],
            "created_time": _time_json(created_time),
            "modified_time": _time_json(modified_time),
        }
        return self._post_verbatim("records/seed-raw", body)["ids"]

    def rename_table(self, base_id: str, table: str, new_name: str) -> dict[str, Any]:
        body = {"base": base_id, "table": table, "name": new_name}
        return self._call("POST", "schema/rename-table", json=body)

    def rename_field(
        self, base_id: str, table: str, field_id_or_name: str, new_name: str
    ) -> dict[str, Any]:
        body = {"base": base_id, "table": table, "field": field_id_or_name, "name": new_name}
        return self._call("POST", "schema/rename-field", json=body)

    def delete_field(self, base_id: str, table: str, field_id_or_name: str) -> dict[str, Any]:
        body = {"base": base_id, "table": table, "field": field_id_or_name}
        return self._call("POST", "schema/delete-field", json=body)

    def retype_field(
        self,
        base_id: str,
        table: str,
        field_id_or_name: str,
        new_type: str,
        options: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        body = {
            "base": base_id,
            "table": table,
            "field": field_id_or_name,
            "type": new_type,
            "options": dict(options) if options is not None else None,
        }
        return self._call("POST", "schema/retype-field", json=body)

    def delete_record(self, base_id: str, table: str, record_id: str) -> None:
        self._call(
            "POST", "records/delete", json={"base": base_id, "table": table, "id": record_id}
        )

    def all_records(self, base_id: str, table: str) -> list[dict[str, Any]]:
        return self._call("GET", "records", params={"base": base_id, "table": table})["records"]

    def clear_records(self, base_id: str | None = None, table: str | None = None) -> int:
        return self._call("POST", "reset", json={"base": base_id, "table": table})["deleted"]

    def set_faults(self, **settings: Any) -> dict[str, Any]:
        """Replace the fault setting; keyword arguments as `FaultConfig` fields."""
        return self._call("POST", "faults", json=settings)

    def clear_faults(self) -> dict[str, Any]:
        return self._call("DELETE", "faults")

    def fault_state(self) -> dict[str, Any]:
        return self._call("GET", "faults")

    def expire_offsets(self) -> int:
        return self._call("POST", "offsets/expire")["expired"]

    def configure_rate_limit(
        self,
        rate: float | None = None,
        penalty_seconds: float | None = None,
        token_rate: float | None = None,
    ) -> dict[str, Any]:
        """See `Emulator.configure_rate_limit`; returns the limits and blocks in force."""
        body = {"rate": rate, "penalty_seconds": penalty_seconds, "token_rate": token_rate}
        return self._call("POST", "rate-limit", json=body)

    def rate_limit_state(self) -> dict[str, Any]:
        return self._call("GET", "rate-limit")

    def add_token(self, token: str, owner: str | None = None) -> dict[str, Any]:
        """Accept another bearer token; ``{"token": fingerprint, "owner"}`` (see
        `Emulator.add_token`)."""
        return self._call("POST", "tokens", json={"token": token, "owner": owner})

    def add_base(
        self,
        base_id: str,
        name: str | None = None,
        like: str | None = None,
        tables: Sequence[Mapping[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Serve one more base (see `Emulator.add_base`); seed it with `seed_records`."""
        body = {
            "id": base_id,
            "name": name,
            "like": like,
            "tables": [dict(t) for t in tables] if tables is not None else None,
        }
        return self._call("POST", "bases", json=body)

    def advance_clock(self, seconds: float) -> dict[str, Any]:
        """Move the emulator's clock forward (see `Emulator.advance_clock`)."""
        return self._call("POST", "clock", json={"advance": seconds})

    def freeze_clock(self, frozen: bool = True) -> dict[str, Any]:
        return self._call("POST", "clock", json={"frozen": frozen})

    def clock_state(self) -> dict[str, Any]:
        return self._call("GET", "clock")

    def request_log(self, entries: bool = True) -> dict[str, Any]:
        """See `RequestLog.snapshot`; ``entries=False`` fetches the counts only."""
        return self._call("GET", "requests", params={} if entries else {"entries": "0"})

    def reset_request_log(self) -> None:
        self._call("DELETE", "requests")

    def close(self) -> None:
        self._session.close()
