"""The emulator: request dispatch (auth, faults, rate limit, routing, log) and Python helpers.

`Emulator.handle` is transport-free; `server.py` puts it behind HTTP. The helpers (seeding,
simulated Airtable-side edits, faults, the request log) bypass HTTP, auth and the rate limit.
"""

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from reconcile_pipeline.emulator import schema_edit
from reconcile_pipeline.emulator.admin_api import handle_admin
from reconcile_pipeline.emulator.api import Route, WebApi
from reconcile_pipeline.emulator.clock import coerce_datetime, utc_now
from reconcile_pipeline.emulator.errors import ApiError
from reconcile_pipeline.emulator.faults import FaultConfig, FaultInjector, RateLimiter, fault_error
from reconcile_pipeline.emulator.request_log import RequestLog
from reconcile_pipeline.emulator.schema import Schema
from reconcile_pipeline.emulator.store import Store

logger = logging.getLogger(__name__)

DEFAULT_TOKEN = "emulator-token"
ADMIN_PREFIX = "/_emulator/"
_SAVE_INTERVAL_SECONDS = 2.0

TimeArg = datetime | str | Sequence[datetime | str | None] | None


@dataclass
class Response:
    status: int
    payload: Any
    drop: bool = False  # close the connection without answering (the write was applied)

    def body(self) -> bytes:
        """UTF-8 JSON; NaN and infinities go out as the bare tokens (as Python writes them).

        A lone surrogate (a raw test value) has no UTF-8 form: such a payload goes out with
        every non-ASCII character escaped, so it arrives as ``\\ud800``.
        """
        try:
            return json.dumps(self.payload, separators=(",", ":"), ensure_ascii=False).encode()
        except UnicodeEncodeError:
            return json.dumps(self.payload, separators=(",", ":")).encode()


class Emulator:
    """An Airtable base server's state and behaviour, independent of the transport."""

    def __init__(
        self,
        schema_path: str | Path | None = None,
        token: str = DEFAULT_TOKEN,
        rate_limit: float = 0.0,
        penalty_seconds: float = 30.0,
        data_path: str | Path | None = None,
        offset_ttl_seconds: float = 300.0,
    ) -> None:
        self.schema = Schema.load(schema_path)
        self.token = token
        self.store = Store(self.schema, offset_ttl_seconds)
        self.api = WebApi(self.store)
        self.faults = FaultInjector()
        self.rate_limiter = RateLimiter(rate_limit, penalty_seconds)
        self.log = RequestLog()
        self.url: str | None = None  # set while served over HTTP
        self.data_path = Path(data_path) if data_path else None
        self._saved_version = -1
        self._save_lock = threading.Lock()
        self._stop_saving = threading.Event()
        self._saver: threading.Thread | None = None
        if self.data_path and self.data_path.exists():
            self.store.restore(json.loads(self.data_path.read_text(encoding="utf-8")))
            self._saved_version = self.store.version
            logger.info("Loaded emulator data from %s", self.data_path)

    # ----- dispatch -----------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Response:
        path, _, query_string = target.partition("?")
        query = parse_qsl(query_string, keep_blank_values=True)
        if path.startswith(ADMIN_PREFIX):
            status, payload = handle_admin(self, method, path[len(ADMIN_PREFIX) :], query, body)
            return Response(status, payload)
        arrived_wall, arrived = time.time(), time.monotonic()
        template, base_id, route, route_error = path, None, None, None
        try:
            route = self.api.route(method, path)
            template, base_id = route.template, route.base_id
        except ApiError as error:
            route_error = error
        try:
            self._authorize(headers)
            if route is None:
                raise route_error or ApiError(404, "NOT_FOUND")
            response = self._serve(route, query, body, arrived)
        except ApiError as error:
            response = Response(error.status, error.body())
        self.log.record(
            {
                "time": arrived_wall,
                "monotonic": arrived,
                "method": method,
                "path": template,
                "target": path,
                "query": query_string[:2000],
                "status": 0 if response.drop else response.status,
                "base": base_id,
                "dropped": response.drop,
            }
        )
        return response

    def _authorize(self, headers: Mapping[str, str]) -> None:
        if headers.get("Authorization") != f"Bearer {self.token}":
            raise ApiError(401, "AUTHENTICATION_REQUIRED", "Authentication required")

    def _serve(
        self, route: Route, query: list[tuple[str, str]], body: bytes, arrived: float
    ) -> Response:
        latency, fault_status = self.faults.before_request()
        if latency:
            time.sleep(latency)
        if fault_status is not None:
            if fault_status == 429 and route.base_id:
                self.rate_limiter.block(route.base_id, time.monotonic())
            raise fault_error(fault_status)
        if route.base_id:
            limited = self.rate_limiter.admit(route.base_id, arrived)
            if limited is not None:
                raise limited
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            raise ApiError(400, "INVALID_REQUEST_BODY", "The request body is not JSON") from None
        status, result = route.handler(query, payload)
        drop = route.is_write and status < 300 and self.faults.drop_write()
        return Response(status, result, drop=drop)

    # ----- Python helpers (no HTTP, no auth, no rate limit) -------------------------------

    def seed_records(
        self,
        base_id: str,
        table: str,
        records: Sequence[Mapping[str, Any]],
        created_time: TimeArg = None,
        modified_time: TimeArg = None,
        typecast: bool = False,
    ) -> list[str]:
        """Bulk insert (any number of records); returns the new record ids in order.

        ``created_time`` / ``modified_time`` are one time for all records or one per record
        (``None`` entries: created now / never modified).
        """
        created = _per_record(created_time, len(records), "created_time")
        modified = _per_record(modified_time, len(records), "modified_time")
        now = utc_now()
        result = self.store.create_records(
            base_id,
            table,
            records,
            typecast=typecast,
            created_times=[c or now for c in created] if created_time is not None else None,
            modified_times=modified if modified_time is not None else None,
        )
        return [record["id"] for record in result]

    def update_record_fields(
        self,
        base_id: str,
        table: str,
        record_id: str,
        fields: Mapping[str, Any],
        modified_time: datetime | str | None = None,
        typecast: bool = False,
    ) -> dict[str, Any]:
        """An edit made inside Airtable (a person or an automation); bumps modified times."""
        updated = self.store.update_records(
            base_id,
            table,
            [(record_id, fields)],
            typecast=typecast,
            modified_time=coerce_datetime(modified_time) if modified_time else None,
        )
        return updated[0]

    def delete_record(self, base_id: str, table: str, record_id: str) -> None:
        self.store.delete_records(base_id, table, [record_id])

    def put_raw_fields(
        self,
        base_id: str,
        table: str,
        record_id: str,
        fields: Mapping[str, Any],
        modified_time: datetime | str | None = None,
    ) -> dict[str, Any]:
        """Store values verbatim, bypassing validation: hostile data for client tests.

        ``fields`` maps field names or ids to any JSON value (NaN, lone surrogates, NUL,
        objects, ``None``…), computed fields included; the public API then serves exactly
        these values (even empty ones). Bumps the record's and the fields' last-modified
        times (to ``modified_time`` or now), as an edit inside Airtable would. A regular
        write to a field replaces its raw value. Returns the record, API-shaped.
        """
        return self.store.put_raw_fields(
            base_id,
            table,
            record_id,
            fields,
            modified_time=coerce_datetime(modified_time) if modified_time else None,
        )

    def seed_raw_records(
        self,
        base_id: str,
        table: str,
        records: Sequence[Mapping[str, Any]],
        created_time: TimeArg = None,
        modified_time: TimeArg = None,
    ) -> list[str]:
        """`seed_records` with every given field stored raw (see `put_raw_fields`)."""
        created = _per_record(created_time, len(records), "created_time")
        modified = _per_record(modified_time, len(records), "modified_time")
        now = utc_now()
        result = self.store.create_raw_records(
            base_id,
            table,
            records,
            created_times=[c or now for c in created] if created_time is not None else None,
            modified_times=modified if modified_time is not None else None,
        )
        return [record["id"] for record in result]

    # ----- schema edits (what someone editing the base in Airtable's UI does) -------------

    def rename_table(self, base_id: str, table: str, new_name: str) -> dict[str, Any]:
        """Rename a table (id or name); returns its metadata. The id stays."""
        return schema_edit.rename_table(self.store, base_id, table, new_name)

    def rename_field(
        self, base_id: str, table: str, field_id_or_name: str, new_name: str
    ) -> dict[str, Any]:
        """Rename a field; returns its metadata. The id stays; formula fields follow."""
        return schema_edit.rename_field(self.store, base_id, table, field_id_or_name, new_name)

    def delete_field(self, base_id: str, table: str, field_id_or_name: str) -> dict[str, Any]:
        """Delete a (non-primary) field and its values; returns ``{"id", "deleted": True}``."""
        return schema_edit.delete_field(self.store, base_id, table, field_id_or_name)

    def retype_field(
        self,
        base_id: str,
        table: str,
        field_id_or_name: str,
        new_type: str,
        options: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Change a field's type and options (values converted or cleared); its metadata."""
        return schema_edit.retype_field(
            self.store,
            base_id,
            table,
            field_id_or_name,
            new_type,
            dict(options) if options is not None else None,
        )

    def all_records(self, base_id: str, table: str) -> list[dict[str, Any]]:
        """Every record, API-shaped (field names, empty values omitted), creation order."""
        return self.store.all_records(base_id, table)

    def clear_records(self, base_id: str | None = None, table: str | None = None) -> int:
        return self.store.clear(base_id, table)

    def set_faults(self, config: FaultConfig | None = None, **settings: Any) -> None:
        """Replace the fault setting: a `FaultConfig` or its fields as keyword arguments."""
        config = config or FaultConfig.from_dict(settings)
        self.faults.configure(config)
        with self.store.lock:
            self.store.repeat_on_next_page = config.repeat_on_next_page

    def clear_faults(self) -> None:
        self.set_faults(FaultConfig())

    def fault_state(self) -> dict[str, Any]:
        return self.faults.state()

    def expire_offsets(self) -> int:
        """Make every outstanding list offset answer LIST_RECORDS_ITERATOR_NOT_AVAILABLE."""
        return self.store.iterators.expire_all()

    def set_offset_ttl(self, seconds: float) -> None:
        self.store.iterators.ttl_seconds = seconds

    def configure_rate_limit(
        self, rate: float | None = None, penalty_seconds: float | None = None
    ) -> None:
        if rate is not None:
            self.rate_limiter.rate = rate
        if penalty_seconds is not None:
            self.rate_limiter.penalty_seconds = penalty_seconds
        self.rate_limiter.reset()

    def request_log(self) -> dict[str, Any]:
        return self.log.snapshot()

    def reset_request_log(self) -> None:
        self.log.reset()

    # ----- persistence --------------------------------------------------------------------

    def start_autosave(self) -> None:
        """Save to ``data_path`` in the background whenever records changed."""
        if self.data_path is None or self._saver is not None:
            return
        self._saver = threading.Thread(target=self._autosave, name="emulator-autosave")
        self._saver.daemon = True
        self._saver.start()

    def _autosave(self) -> None:
        while not self._stop_saving.wait(_SAVE_INTERVAL_SECONDS):
            self.save()

    def save(self) -> None:
        """Write the data file if anything changed since the last save (atomic rename)."""
        if self.data_path is None:
            return
        with self._save_lock:
            if self.store.version == self._saved_version:
                return
            version = self.store.version
            snapshot = self.store.snapshot()
            self.data_path.parent.mkdir(parents=True, exist_ok=True)
            handle, temp = tempfile.mkstemp(dir=self.data_path.parent, suffix=".tmp")
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(snapshot, out, separators=(",", ":"))
            os.replace(temp, self.data_path)
            self._saved_version = version

    def close(self) -> None:
        self._stop_saving.set()
        if self._saver is not None:
            self._saver.join(timeout=5)
        self.save()


def _per_record(value: TimeArg, count: int, name: str) -> list[datetime | None]:
    if value is None:
        return [None] * count
    if isinstance(value, datetime | str):
        return [coerce_datetime(value)] * count
    if len(value) != count:
        raise ValueError(f"{name} has {len(value)} entries for {count} records")
    return [coerce_datetime(v) if v is not None else None for v in value]
