"""The emulator: request dispatch (auth, faults, rate limits, routing, log) and Python helpers.

`Emulator.handle` is transport-free; `server.py` puts it behind HTTP. The helpers (seeding,
simulated Airtable-side edits, faults, the request log, the clock) bypass HTTP, auth and the
rate limits.
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
from reconcile_pipeline.emulator.clock import EmulatorClock, coerce_datetime, utc_now
from reconcile_pipeline.emulator.errors import ApiError, rate_limited
from reconcile_pipeline.emulator.faults import FaultConfig, FaultInjector, RateLimiter, fault_error
from reconcile_pipeline.emulator.request_log import RequestLog
from reconcile_pipeline.emulator.schema import Schema
from reconcile_pipeline.emulator.store import Store
from reconcile_pipeline.emulator.tokens import TokenRegistry, bearer_token, fingerprint

logger = logging.getLogger(__name__)

DEFAULT_TOKEN = "emulator-token"
# Airtable's limit per token owner (user or service account) across all bases, requests/s.
DEFAULT_TOKEN_RATE_LIMIT = 50.0
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
    """An Airtable base server's state and behaviour, independent of the transport.

    Args:
        token: the bearer token accepted; `add_token` accepts more (``extra_tokens`` too).
        rate_limit: requests/s per base (Airtable: 5); 0 turns the limit off.
        penalty_seconds: how long a 429 blocks the base or the token owner (Airtable: 30).
        token_rate_limit: requests/s per token owner across all bases (Airtable: 50); 0
            turns it off; None (the default) follows ``rate_limit``: 50 when that is on, off
            when it is 0 (so an emulator without Airtable's limits has neither).
    """

    def __init__(
        self,
        schema_path: str | Path | None = None,
        token: str = DEFAULT_TOKEN,
        rate_limit: float = 0.0,
        penalty_seconds: float = 30.0,
        data_path: str | Path | None = None,
        offset_ttl_seconds: float = 300.0,
        token_rate_limit: float | None = None,
        extra_tokens: Sequence[str] = (),
    ) -> None:
        self.schema = Schema.load(schema_path)
        self.tokens = TokenRegistry(token)
        for extra in extra_tokens:
            self.tokens.add(extra)
        self.clock = EmulatorClock()
        self.store = Store(self.schema, offset_ttl_seconds, clock=self.clock.now)
        self.api = WebApi(self.store)
        self.faults = FaultInjector()
        if token_rate_limit is None:
            token_rate_limit = DEFAULT_TOKEN_RATE_LIMIT if rate_limit > 0 else 0.0
        self.rate_limiter = RateLimiter(rate_limit, penalty_seconds, token_rate_limit)
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
        arrived_wall, arrived = time.time(), self.clock.now()
        template, base_id, route, route_error = path, None, None, None
        try:
            route = self.api.route(method, path)
            template, base_id = route.template, route.base_id
        except ApiError as error:
            route_error = error
        presented = bearer_token(headers)
        owner = self.tokens.owner(presented)
        limit = None
        try:
            if owner is None:
                raise ApiError(401, "AUTHENTICATION_REQUIRED", "Authentication required")
            if route is None:
                raise route_error or ApiError(404, "NOT_FOUND")
            response = self._serve(route, owner, query, body, arrived)
        except ApiError as error:
            response = Response(error.status, error.body())
            limit = error.limit
        self.log.record(
            {
                "time": arrived_wall,
                "monotonic": arrived,
                "method": method,
                "path": template,
                "target": self.tokens.redact(path, presented),
                "query": self.tokens.redact(query_string[:2000], presented),
                "status": 0 if response.drop else response.status,
                "base": base_id,
                "dropped": response.drop,
                "token": fingerprint(presented) if presented is not None else None,
                "owner": owner,
                "limit": limit,
            }
        )
        return response

    def _serve(
        self,
        route: Route,
        owner: str,
        query: list[tuple[str, str]],
        body: bytes,
        arrived: float,
    ) -> Response:
        latency, fault_status = self.faults.before_request()
        if latency:
            time.sleep(latency)
        if fault_status is not None:
            if fault_status == 429 and route.base_id:
                self.rate_limiter.block(route.base_id, self.clock.now())
            error = fault_error(fault_status)
            if fault_status == 429:
                error.limit = "injected"
            raise error
        limited = self.rate_limiter.admit(route.base_id, owner, arrived)
        if limited is not None:
            raise rate_limited(limited)
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

    def add_base(
        self,
        base_id: str,
        name: str | None = None,
        like: str | None = None,
        tables: Sequence[Mapping[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Serve one more base: a copy of base ``like``'s tables (new table ids, same field
        ids and names, no records) or ``tables`` (metadata-API-shaped). In memory only (a data
        file keeps no added base). Returns its metadata with its tables."""
        return schema_edit.add_base(
            self.store,
            base_id,
            name=name,
            like=like,
            tables=[dict(t) for t in tables] if tables is not None else None,
        )

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
        self,
        rate: float | None = None,
        penalty_seconds: float | None = None,
        token_rate: float | None = None,
    ) -> dict[str, Any]:
        """Change the given settings (None keeps one): ``rate`` per base, ``token_rate`` per
        token owner (0 turns either off), ``penalty_seconds`` for both. Lifts every block.
        Returns `rate_limit_state`."""
        self.rate_limiter.configure(rate, penalty_seconds, token_rate)
        return self.rate_limit_state()

    def rate_limit_state(self) -> dict[str, Any]:
        """``{"rate", "token_rate", "penalty_seconds", "blocked_bases", "blocked_owners"}``;
        the blocks map a base id / owner key to the seconds left on the emulator's clock."""
        return self.rate_limiter.state(self.clock.now())

    # ----- tokens and the clock -----------------------------------------------------------

    @property
    def token(self) -> str:
        """The token given at construction (what the demo and the tests use)."""
        return self.tokens.primary

    def add_token(self, token: str, owner: str | None = None) -> dict[str, Any]:
        """Accept another bearer token. Its requests count against ``owner``'s per-token limit
        (by default the token is its own owner). Returns ``{"token": fingerprint, "owner"}``:
        the labels the request log uses, never the token."""
        return self.tokens.add(token, owner)

    def advance_clock(self, seconds: float) -> dict[str, Any]:
        """Move the emulator's clock forward (rate-limit windows, 429 blocks, offset
        lifetimes): waiting out a block without sleeping. Returns `clock_state`."""
        self.clock.advance(seconds)
        return self.clock_state()

    def freeze_clock(self, frozen: bool = True) -> dict[str, Any]:
        """Stop the emulator's clock (every request arrives at the same instant until it is
        advanced or unfrozen), or let it run again. Returns `clock_state`."""
        if frozen:
            self.clock.freeze()
        else:
            self.clock.unfreeze()
        return self.clock_state()

    def clock_state(self) -> dict[str, Any]:
        """``{"now", "offset", "frozen"}`` (seconds on the monotonic clock)."""
        return self.clock.state()

    def request_log(self, entries: bool = True) -> dict[str, Any]:
        """See `RequestLog.snapshot`; ``entries=False`` returns the counts only."""
        return self.log.snapshot(entries)

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
