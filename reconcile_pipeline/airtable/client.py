"""`AirtableClient`: the project's Airtable verbs on top of pyairtable (no Dagster here).

Transport rules live here and nowhere else: timeouts, retries that survive the 30-second
block without duplicating writes, process-wide pacing per base, and request counting.
"""

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import requests
from pyairtable import Api
from pyairtable import formulas as F

from reconcile_pipeline.airtable.errors import (
    AirtableConfigError,
    AirtableError,
    AirtableMappingError,
    AirtableRequestError,
    translate_error,
)
from reconcile_pipeline.airtable.pacing import pacer_for
from reconcile_pipeline.airtable.transport import AirtableRetry, PacedAdapter

DEFAULT_ENDPOINT = "https://api.airtable.com"
PAGE_SIZE = 100  # Airtable's maximum page
MAX_RECORDS_PER_WRITE = 10  # Airtable's maximum per create/update request
_ITERATOR_EXPIRED = "LIST_RECORDS_ITERATOR_NOT_AVAILABLE"
_MAX_CONNECT_TIMEOUT_SECONDS = 10.0
TOKEN_ENV = "AIRTABLE_API_KEY"


def clean_token(value: str | None, variable: str = TOKEN_ENV) -> str:
    """`value` without surrounding whitespace, checked to be usable in an HTTP header.

    A token pasted with its line break (`export AIRTABLE_API_KEY="$(cat token.txt)"`, a secret
    store that keeps the newline) must work as it is meant; anything inside the token that could
    not travel in a header is refused here, before requests would refuse it quoting the header.

    Raises:
        AirtableConfigError: the token is missing or blank, or holds whitespace, a control
            character or a non-ASCII character inside it; the message names `variable` and the
            position, never the value.
    """
    if value is None or not value.strip():
        raise AirtableConfigError(
            f"No Airtable token: set {variable} to a personal access token (pat…)."
        )
    token = value.strip()
    for position, char in enumerate(token, start=1):
        if not ("!" <= char <= "~"):  # printable ASCII without the space
            kind = "whitespace" if char.isspace() else "a control or non-ASCII character"
            raise AirtableConfigError(
                f"{variable} holds {kind} at position {position} of {len(token)}; an Airtable "
                f"token is one word of printable ASCII. Copy the token again and set {variable} "
                "to it alone (the value is not shown here)."
            )
    return token


class AirtableClient:
    """One Airtable table, with the verbs the sync engine needs.

    Args:
        token: personal access token (never logged or shown in reprs and errors).
        base_id: ``app…`` id of the base.
        table: table name or ``tbl…`` id.
        endpoint_url: api.airtable.com, or the emulator's URL.
        requests_per_second: pacing per base shared by the whole process; 0 disables it.
        timeout_seconds: read timeout (connect timeout is at most 10 s).
        max_retries: retries of 429/5xx and connection failures.
        backoff_factor, backoff_max_seconds: retry waits are ``factor * 2**(n-1)`` capped at
            the max; the defaults (1 s, 30 s) outlast Airtable's 30-second block.
        max_scan_restarts: how often a listing restarts after its offset expired.
        logger: where retries and restarts are reported.
    """

    def __init__(
        self,
        token: str,
        base_id: str,
        table: str,
        endpoint_url: str = DEFAULT_ENDPOINT,
        requests_per_second: float = 5.0,
        timeout_seconds: float = 30.0,
        max_retries: int = 6,
        logger: logging.Logger | None = None,
        backoff_factor: float = 1.0,
        backoff_max_seconds: float = 30.0,
        max_scan_restarts: int = 3,
        fields_by_id: bool = False,
    ) -> None:
        raw_token = token
        token = clean_token(token)
        if not base_id:
            raise AirtableConfigError("No Airtable base: set `base_id` in the project file.")
        if not table:
            raise AirtableConfigError(
                "No Airtable table: set `airtable_table` in the project file."
            )
        self.base_id = base_id
        # Records come keyed by field id (a project file's mapping): renames change nothing.
        self.fields_by_id = fields_by_id
        self.table_name = table
        self.endpoint_url = endpoint_url
        self.max_scan_restarts = max_scan_restarts
        self.logger = logger or logging.getLogger(__name__)
        self._token = token
        # The value as configured too: redaction also catches the untrimmed spelling.
        self._secrets = (token, raw_token)
        self._sent = 0
        self._sent_lock = threading.Lock()
        self._schema: dict[str, Any] | None = None
        # Record ids a listing returned twice in one pass (dropped; the pull's check reports them).
        self.repeated_ids: list[str] = []

        pacer = (
            pacer_for(endpoint_url, base_id, requests_per_second)
            if (requests_per_second > 0)
            else None
        )
        retry = AirtableRetry.build(
            max_retries, backoff_factor, backoff_max_seconds, pacer, self._count, self.logger
        )
        self.api = Api(
            token,
            endpoint_url=endpoint_url,
            timeout=(min(timeout_seconds, _MAX_CONNECT_TIMEOUT_SECONDS), timeout_seconds),
            retry_strategy=retry,
        )
        # Replace pyairtable's plain retrying adapter with one that paces and counts attempts.
        adapter = PacedAdapter(retry, pacer, self._count)
        self.api.session.mount("https://", adapter)
        self.api.session.mount("http://", adapter)
        self.table = self.api.table(base_id, table)

    def __repr__(self) -> str:
        return (
            f"AirtableClient(base_id={self.base_id!r}, table={self.table_name!r}, "
            f"endpoint_url={self.endpoint_url!r})"
        )

    def _count(self) -> None:
        with self._sent_lock:
            self._sent += 1

    @property
    def requests_sent(self) -> int:
        """HTTP attempts made by this client, retries included."""
        with self._sent_lock:
            return self._sent

    def close(self) -> None:
        self.api.session.close()

    def _error(self, exc: Exception) -> AirtableRequestError:
        return translate_error(exc, secrets=self._secrets)

    # ----- reads --------------------------------------------------------------------------

    def iter_modified(
        self, start: datetime, end: datetime, fields: list[str] | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """Pages of records created or modified in ``[start, end)``.

        A record never edited since creation has no last-modified time in Airtable, so the
        window also matches such records by creation time.

        Raises:
            ValueError: a naive datetime (pyairtable would send it without a zone).
        """
        start, end = _utc(start, "start"), _utc(end, "end")
        modified = F.LAST_MODIFIED_TIME()
        created = F.CREATED_TIME()
        formula = F.OR(
            F.AND(F.GTE(modified, start), F.LT(modified, end)),
            F.AND(F.EQ(modified, F.BLANK()), F.GTE(created, start), F.LT(created, end)),
        )
        yield from self._scan(formula=str(formula), fields=fields)

    def iter_all(self, fields: list[str] | None = None) -> Iterator[list[dict[str, Any]]]:
        """Pages of every record in the table."""
        yield from self._scan(fields=fields)

    def list_record_ids(self, field: str | None = None) -> list[str]:
        """Every record id, fetching a single small field (default: the primary field)."""
        field = field or self.table_schema()["primaryFieldId"]
        return [record["id"] for page in self._scan(fields=[field]) for record in page]

    def get_records(
        self, record_ids: Sequence[str], fields: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """The records with these ids (absent ones are skipped): one POST listRecords per 100."""
        found: list[dict[str, Any]] = []
        unique = list(dict.fromkeys(record_ids))
        for index in range(0, len(unique), PAGE_SIZE):
            chunk = unique[index : index + PAGE_SIZE]
            formula = F.OR(*(F.EQ(F.RECORD_ID(), record_id) for record_id in chunk))
            body: dict[str, Any] = {"filterByFormula": str(formula), "pageSize": PAGE_SIZE}
            if self.fields_by_id:
                body["returnFieldsByFieldId"] = True
            if fields is not None:
                body["fields"] = fields
            try:
                response = self.api.post(self.table.urls.records_post, json=body)
            except requests.RequestException as exc:
                raise self._error(exc) from None
            found.extend(response.get("records", []))
        return found

    def _scan(self, **options: Any) -> Iterator[list[dict[str, Any]]]:
        """List pages, restarting from scratch when Airtable expires the offset iterator."""
        options = {k: v for k, v in options.items() if v is not None}
        if self.fields_by_id:
            options["use_field_ids"] = True
        seen: set[str] = set()
        restarts = 0
        while True:
            listed: set[str] = set()  # this pass: a repeat here means the listing shifted
            try:
                for page in self.table.iterate(page_size=PAGE_SIZE, **options):
                    fresh = []
                    for record in page:
                        record_id = record.get("id") if isinstance(record, dict) else None
                        if not isinstance(record_id, str):
                            fresh.append(record)  # kept for the raw snapshot, never merged
                            continue
                        if record_id in listed:
                            self.repeated_ids.append(record_id)
                        listed.add(record_id)
                        if record_id not in seen:
                            seen.add(record_id)
                            fresh.append(record)
                    if fresh:
                        yield fresh
                return
            except requests.RequestException as exc:
                error = self._error(exc)
                if error.error_type != _ITERATOR_EXPIRED or restarts >= self.max_scan_restarts:
                    raise error from None
                restarts += 1
                self.logger.warning(
                    "Airtable listing offset expired; restarting the scan (%d/%d), "
                    "skipping %d records already returned",
                    restarts,
                    self.max_scan_restarts,
                    len(seen),
                )

    # ----- writes -------------------------------------------------------------------------

    def update_records(
        self, updates: list[dict[str, Any]], typecast: bool = False
    ) -> list[dict[str, Any]]:
        """PATCH (never PUT) up to 10 records ``{"id", "fields"}`` in one request.

        Raises:
            ValueError: more than 10 updates (batching is the caller's decision).
            AirtableRequestError: Airtable refused (``is_unprocessable`` for a 422) or no
                answer came back (``outcome_unknown``).
        """
        _check_batch(updates)
        try:
            return self.table.batch_update(updates, typecast=typecast)
        except requests.RequestException as exc:
            raise self._error(exc) from None

    def create_records(
        self, records: list[Mapping[str, Any]], typecast: bool = False
    ) -> list[dict[str, Any]]:
        """Create up to 10 records from field dicts in one request (429s retried, 5xx not)."""
        _check_batch(records)
        try:
            return self.table.batch_create([dict(r) for r in records], typecast=typecast)
        except requests.RequestException as exc:
            raise self._error(exc) from None

    # ----- schema -------------------------------------------------------------------------

    def use_schema(self, schema: dict[str, Any]) -> None:
        """Take `schema` (cached by the caller) as this table's, sparing a metadata call."""
        self._schema = schema

    def table_schema(self, refresh: bool = False) -> dict[str, Any]:
        """The table from the metadata API: ``{"id", "name", "primaryFieldId", "fields": […]}``.

        Raises:
            AirtableConfigError: the token, base or table is wrong (says which variable to set).
        """
        if self._schema is not None and not refresh:
            return self._schema
        url = self.api.build_url("meta/bases", self.base_id, "tables")
        try:
            tables = self.api.get(url)["tables"]
        except requests.RequestException as exc:
            raise self._config_error(self._error(exc)) from None
        for table in tables:
            if self.table_name in (table["id"], table["name"]):
                self._schema = table
                return table
        available = ", ".join(f"{t['name']} ({t['id']})" for t in tables) or "none"
        raise AirtableConfigError(
            f"Airtable table {self.table_name!r} was not found in base {self.base_id}; "
            "set the table's `airtable_table` in the project file (reconcile.yaml) to one of: "
            f"{available}."
        )

    def _config_error(self, error: AirtableRequestError) -> AirtableError:
        if error.status_code == 401:
            return AirtableConfigError(
                "Airtable rejected the API token (401 AUTHENTICATION_REQUIRED): set "
                "AIRTABLE_API_KEY to a valid personal access token."
            )
        if error.status_code in (403, 404):
            return AirtableConfigError(
                f"Airtable base {self.base_id} was not found or is not accessible "
                f"({error.status_code} {error.error_type}): set the client's `base_id` in the "
                "project file (reconcile.yaml) to the app… id of the base, and give the token "
                "access to it with the schema.bases:read, data.records:read and "
                "data.records:write scopes."
            )
        return error

    def validate_fields(self, expected: Mapping[str, set[str] | str]) -> None:
        """Check that every expected field exists with an acceptable type.

        Args:
            expected: Airtable field name (or id) -> acceptable type or types.

        Raises:
            AirtableMappingError: one message listing every missing field and wrong type.
            AirtableConfigError: the token, base or table is wrong.
        """
        table = self.table_schema()
        by_key = {f["name"]: f for f in table["fields"]} | {f["id"]: f for f in table["fields"]}
        problems = []
        for key, types in expected.items():
            acceptable = {types} if isinstance(types, str) else set(types)
            wanted = " or ".join(sorted(acceptable))
            found = by_key.get(key)
            if found is None:
                problems.append(f"missing field {key!r} (expected {wanted})")
            elif found["type"] not in acceptable:
                problems.append(f"field {key!r} is {found['type']}, expected {wanted}")
        if problems:
            present = ", ".join(f"{f['name']} ({f['type']})" for f in table["fields"])
            raise AirtableMappingError(
                f"Airtable table {table['name']} ({table['id']}) in base {self.base_id} does "
                f"not match the mapping: {'; '.join(problems)}. Fields present: {present}.",
                problems,
            )


def _utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value.isoformat()}")
    return value.astimezone(UTC)


def _check_batch(items: Sequence[Any]) -> None:
    if len(items) > MAX_RECORDS_PER_WRITE:
        raise ValueError(
            f"At most {MAX_RECORDS_PER_WRITE} records per request; got {len(items)}. "
            "Split the batch before calling."
        )
