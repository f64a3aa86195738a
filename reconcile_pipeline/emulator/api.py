"""Airtable Web API routes (``/v0/...``) mapped onto the record store.

This layer owns the HTTP-shaped rules: parameter parsing for GET and POST listings, body
validation, the 10-records-per-request limit and the response envelopes.
"""

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from reconcile_pipeline.emulator.errors import ApiError, invalid_request, not_found, unprocessable
from reconcile_pipeline.emulator.listing import MAX_PAGE_SIZE, ListQuery
from reconcile_pipeline.emulator.store import Store

MAX_RECORDS_PER_WRITE = 10
_SORT_PARAM = re.compile(r"^sort\[(\d+)\]\[(field|direction)\]$")
_LIST_QUERY_KEYS = {
    "pageSize", "maxRecords", "offset", "filterByFormula", "view", "cellFormat", "timeZone",
    "userLocale", "returnFieldsByFieldId", "fields[]", "fields", "recordMetadata[]",
}  # fmt: skip
_LIST_BODY_KEYS = {
    "pageSize", "maxRecords", "offset", "filterByFormula", "view", "cellFormat", "timeZone",
    "userLocale", "returnFieldsByFieldId", "fields", "sort", "recordMetadata",
}  # fmt: skip
_WRITE_BODY_KEYS = {"records", "fields", "typecast", "returnFieldsByFieldId", "performUpsert"}

Query = list[tuple[str, str]]
Handler = Callable[[Query, Any], tuple[int, Any]]


@dataclass(frozen=True)
class Route:
    template: str  # e.g. "/v0/{base}/{table}", used for request-log counts
    base_id: str | None
    handler: Handler
    is_write: bool


class WebApi:
    def __init__(self, store: Store) -> None:
        self.store = store

    def route(self, method: str, path: str) -> Route:
        """Resolve a request; raises ApiError 404 for paths Airtable does not serve."""
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[:3] == ["v0", "meta", "bases"]:
            return self._meta_route(method, parts[3:])
        if len(parts) < 3 or parts[0] != "v0":
            raise not_found()
        base_id, table = parts[1], parts[2]
        rest = parts[3:]
        if not rest:
            handlers: dict[str, Handler] = {
                "GET": lambda q, b: (200, self._list(base_id, table, _query_list_params(q))),
                "POST": lambda q, b: self._create(base_id, table, b),
                "PATCH": lambda q, b: self._update(base_id, table, b, replace=False),
                "PUT": lambda q, b: self._update(base_id, table, b, replace=True),
                "DELETE": lambda q, b: self._delete(base_id, table, q),
            }
            template = "/v0/{base}/{table}"
        elif rest == ["listRecords"]:
            handlers = {"POST": lambda q, b: (200, self._list_post(base_id, table, q, b))}
            template = "/v0/{base}/{table}/listRecords"
        elif len(rest) == 1:
            record_id = rest[0]
            handlers = {
                "GET": lambda q, b: self._get(base_id, table, record_id, q),
                "PATCH": lambda q, b: self._update_one(base_id, table, record_id, b, False),
                "PUT": lambda q, b: self._update_one(base_id, table, record_id, b, True),
                "DELETE": lambda q, b: self._delete_one(base_id, table, record_id),
            }
            template = "/v0/{base}/{table}/{record}"
        else:
            raise not_found()
        handler = handlers.get(method)
        if handler is None:
            raise not_found()
        is_write = method != "GET" and template != "/v0/{base}/{table}/listRecords"
        return Route(template, base_id, handler, is_write)

    # ----- metadata -----------------------------------------------------------------------

    def _meta_route(self, method: str, rest: list[str]) -> Route:
        if method == "GET" and not rest:
            return Route("/v0/meta/bases", None, lambda q, b: (200, self._bases()), False)
        if method == "GET" and len(rest) == 2 and rest[1] == "tables":
            base_id = rest[0]
            return Route(
                "/v0/meta/bases/{base}/tables",
                base_id,
                lambda q, b: (200, self._tables(base_id)),
                False,
            )
        raise not_found()

    def _bases(self) -> dict[str, Any]:
        with self.store.lock:  # bases may be added meanwhile (`schema_edit.add_base`)
            return {"bases": [base.to_meta() for base in self.store.schema.bases.values()]}

    def _tables(self, base_id: str) -> dict[str, Any]:
        with self.store.lock:
            base = self.store.schema.base(base_id)
            if base is None:
                self.store.table(base_id, "")  # raises Airtable's unknown-base error
                raise not_found()
            return {"tables": [table.to_meta() for table in base.tables]}

    # ----- reads --------------------------------------------------------------------------

    def _list(self, base_id: str, table: str, query: ListQuery) -> dict[str, Any]:
        result = self.store.list_records(base_id, table, query)
        if query.cell_format == "string":
            for record in result["records"]:
                record["fields"] = {k: _as_string(v) for k, v in record["fields"].items()}
        return result

    def _list_post(self, base_id: str, table: str, query: Query, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise invalid_request()
        unknown = set(body) - _LIST_BODY_KEYS
        if unknown:
            raise invalid_request(f"Invalid request: unknown parameters {sorted(unknown)}")
        # timeZone and userLocale cannot go in the body (pyairtable leaves them in the URL).
        params = dict(query)
        merged = {**{k: params[k] for k in ("timeZone", "userLocale") if k in params}, **body}
        sort = merged.get("sort") or []
        if not isinstance(sort, list) or not all(isinstance(s, dict) for s in sort):
            raise invalid_request("Invalid request: sort must be an array of objects")
        fields = merged.get("fields")
        if fields is not None and not isinstance(fields, list):
            raise invalid_request("Invalid request: fields must be an array")
        return self._list(
            base_id,
            table,
            _list_query(
                merged,
                [(s.get("field", ""), s.get("direction", "asc")) for s in sort],
                fields,
            ),
        )

    def _get(self, base_id: str, table: str, record_id: str, query: Query) -> tuple[int, Any]:
        params = dict(query)
        by_field_id = _flag(params.get("returnFieldsByFieldId"))
        return 200, self.store.get_record(base_id, table, record_id, by_field_id)

    # ----- writes -------------------------------------------------------------------------

    def _create(self, base_id: str, table: str, body: Any) -> tuple[int, Any]:
        body = _write_body(body)
        typecast, by_id = bool(body.get("typecast")), bool(body.get("returnFieldsByFieldId"))
        if "records" not in body:
            if "fields" not in body:
                raise unprocessable(
                    "INVALID_REQUEST_MISSING_FIELDS",
                    'Could not find field "fields" in the request body',
                )
            created = self.store.create_records(base_id, table, [body["fields"]], typecast, by_id)
            return 200, created[0]
        records = _records_list(body["records"], "created", allowed_keys={"fields"})
        fields_list = [r.get("fields", {}) for r in records]
        return 200, {"records": self.store.create_records(
            base_id, table, fields_list, typecast, by_id
        )}  # fmt: skip

    def _update(self, base_id: str, table: str, body: Any, replace: bool) -> tuple[int, Any]:
        body = _write_body(body)
        typecast, by_id = bool(body.get("typecast")), bool(body.get("returnFieldsByFieldId"))
        records = _records_list(body.get("records"), "updated", allowed_keys={"id", "fields"})
        upsert = body.get("performUpsert")
        if upsert is not None:
            merge_on = upsert.get("fieldsToMergeOn") if isinstance(upsert, dict) else None
            if not isinstance(merge_on, list) or not merge_on:
                raise invalid_request("Invalid request: performUpsert.fieldsToMergeOn required")
            return 200, self.store.upsert_records(
                base_id, table, records, merge_on, replace, typecast, by_id
            )
        updates = []
        for record in records:
            if not isinstance(record.get("id"), str):
                raise unprocessable("INVALID_RECORDS", "Each record to update needs an id")
            updates.append((record["id"], record.get("fields", {})))
        return 200, {"records": self.store.update_records(
            base_id, table, updates, replace, typecast, by_id
        )}  # fmt: skip

    def _update_one(
        self, base_id: str, table: str, record_id: str, body: Any, replace: bool
    ) -> tuple[int, Any]:
        body = _write_body(body)
        if "records" in body or not isinstance(body.get("fields"), dict):
            raise invalid_request()
        with self.store.lock:
            self.store.table(base_id, table)
            self.store.get_record(base_id, table, record_id)  # 404 for an unknown record
            updated = self.store.update_records(
                base_id,
                table,
                [(record_id, body["fields"])],
                replace,
                bool(body.get("typecast")),
                bool(body.get("returnFieldsByFieldId")),
            )
        return 200, updated[0]

    def _delete(self, base_id: str, table: str, query: Query) -> tuple[int, Any]:
        ids = [v for k, v in query if k in ("records[]", "records")]
        if not ids:
            raise invalid_request("Invalid request: records[] is required")
        if len(ids) > MAX_RECORDS_PER_WRITE:
            raise _too_many("deleted", len(ids))
        return 200, {"records": self.store.delete_records(base_id, table, ids)}

    def _delete_one(self, base_id: str, table: str, record_id: str) -> tuple[int, Any]:
        with self.store.lock:
            self.store.get_record(base_id, table, record_id)
            return 200, self.store.delete_records(base_id, table, [record_id])[0]


def _too_many(verb: str, count: int) -> ApiError:
    return unprocessable(
        "INVALID_RECORDS",
        f"A maximum of {MAX_RECORDS_PER_WRITE} records can be {verb} per request "
        f"but you have provided {count}.",
    )


def _write_body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid_request("Invalid request: the body must be a JSON object")
    unknown = set(body) - _WRITE_BODY_KEYS
    if unknown:
        raise invalid_request(f"Invalid request: unknown parameters {sorted(unknown)}")
    return body


def _records_list(value: Any, verb: str, allowed_keys: set[str]) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise unprocessable("INVALID_RECORDS", "records must be an array of objects")
    if len(value) > MAX_RECORDS_PER_WRITE:
        raise _too_many(verb, len(value))
    for record in value:
        unknown = set(record) - allowed_keys
        if unknown:
            raise invalid_request(f"Invalid request: unknown record keys {sorted(unknown)}")
    return value


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).lower() in ("1", "true") if value is not None else False


def _int_param(params: Mapping[str, Any], key: str, low: int, high: int | None) -> int | None:
    raw = params.get(key)
    if raw is None:
        return None
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise invalid_request(f"Invalid request: {key} must be an integer") from None
    if value < low or (high is not None and value > high):
        raise invalid_request(f"Invalid request: {key} must be between {low} and {high}")
    return value


def _query_list_params(query: Query) -> ListQuery:
    unknown = {k for k, _ in query if k not in _LIST_QUERY_KEYS and not _SORT_PARAM.match(k)}
    if unknown:
        raise invalid_request(f"Invalid request: unknown parameters {sorted(unknown)}")
    params = dict(query)
    sort_parts: dict[int, dict[str, str]] = {}
    for key, value in query:
        match = _SORT_PARAM.match(key)
        if match:
            sort_parts.setdefault(int(match.group(1)), {})[match.group(2)] = value
    sort = [
        (part.get("field", ""), part.get("direction", "asc"))
        for _, part in sorted(sort_parts.items())
    ]
    fields = [v for k, v in query if k in ("fields[]", "fields")] or None
    return _list_query(params, sort, fields)


def _list_query(
    params: Mapping[str, Any], sort: list[tuple[str, str]], fields: list[str] | None
) -> ListQuery:
    for _, direction in sort:
        if direction not in ("asc", "desc"):
            raise invalid_request(f"Invalid request: sort direction {direction!r}")
    cell_format = params.get("cellFormat") or "json"
    if cell_format not in ("json", "string"):
        raise invalid_request(f"Invalid request: cellFormat {cell_format!r}")
    if cell_format == "string" and not (params.get("timeZone") and params.get("userLocale")):
        raise invalid_request("Invalid request: cellFormat string requires timeZone and userLocale")
    formula = params.get("filterByFormula")
    offset = params.get("offset")
    return ListQuery(
        formula=str(formula) if formula else None,
        sort=sort,
        fields=[str(f) for f in fields] if fields is not None else None,
        page_size=_int_param(params, "pageSize", 1, MAX_PAGE_SIZE) or MAX_PAGE_SIZE,
        max_records=_int_param(params, "maxRecords", 1, None),
        offset=str(offset) if offset else None,
        by_field_id=_flag(params.get("returnFieldsByFieldId")),
        cell_format=cell_format,
    )


def _as_string(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(
            item.get("filename", item.get("url", "")) if isinstance(item, dict) else str(item)
            for item in value
        )
    if isinstance(value, bool):
        return "checked" if value else ""
    return str(value)
