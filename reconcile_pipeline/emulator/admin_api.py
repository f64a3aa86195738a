"""Admin endpoints under ``/_emulator/`` for a separately running emulator.

No authentication (the emulator binds to localhost by default) and no rate limit; these
requests are not written to the request log. Routes:

- ``GET /_emulator/health``
- ``GET|DELETE /_emulator/requests`` — the request log (``?entries=0``: counts only) / reset it
- ``GET|POST|DELETE /_emulator/faults`` — read / replace / clear the fault setting
- ``POST /_emulator/offsets/expire`` — expire every outstanding list offset
- ``GET|POST /_emulator/rate-limit`` — the limits and blocks in force / change them:
  ``{"rate"?, "token_rate"?, "penalty_seconds"?}`` (per base, per token owner, both; 0 turns a
  limit off), which lifts every block
- ``GET|POST /_emulator/clock`` — the emulator's clock / ``{"advance"?: seconds,
  "frozen"?: bool}`` (freeze or unfreeze first, then advance)
- ``POST /_emulator/tokens`` — ``{"token", "owner"?}`` accepts another bearer token; answers
  ``{"token": fingerprint, "owner"}`` (never the token)
- ``POST /_emulator/bases`` — ``{"id", "name"?, "like"?, "tables"?}`` adds a base (see
  `Emulator.add_base`)
- ``GET /_emulator/records?base=&table=`` — all records, API-shaped
- ``POST /_emulator/records/seed`` — ``{"base", "table", "records": [fields…],
  "created_time", "modified_time", "typecast"}`` (times: one ISO string or a list)
- ``POST /_emulator/records/edit`` — ``{"base", "table", "id", "fields", "modified_time"}``
- ``POST /_emulator/records/delete`` — ``{"base", "table", "id"}``
- ``POST /_emulator/records/raw`` — ``{"base", "table", "id", "fields", "modified_time"}``
  stores the values verbatim (see `Emulator.put_raw_fields`); answers the record
- ``POST /_emulator/records/seed-raw`` — ``{"base", "table", "records": [fields…],
  "created_time", "modified_time"}``, every field raw; answers ``{"ids"}``
- ``POST /_emulator/reset`` — ``{"base"?, "table"?}`` deletes records
- ``POST /_emulator/schema/rename-table`` — ``{"base", "table", "name"}``
- ``POST /_emulator/schema/rename-field`` — ``{"base", "table", "field", "name"}``
- ``POST /_emulator/schema/delete-field`` — ``{"base", "table", "field"}``
- ``POST /_emulator/schema/retype-field`` — ``{"base", "table", "field", "type", "options"?}``

Request bodies are parsed by `json.loads`, which accepts the bare ``NaN`` / ``Infinity``
tokens and lone-surrogate escapes (``"\\ud800"``), so raw values arrive intact.
"""

import json
from typing import TYPE_CHECKING, Any

from reconcile_pipeline.emulator.errors import ApiError

if TYPE_CHECKING:
    from reconcile_pipeline.emulator.core import Emulator


def handle_admin(
    emulator: "Emulator", method: str, path: str, query: list[tuple[str, str]], body: bytes
) -> tuple[int, Any]:
    try:
        payload = json.loads(body) if body else {}
        return 200, _dispatch(emulator, method, path.strip("/"), dict(query), payload)
    except ApiError as error:
        return error.status, error.body()
    except (ValueError, KeyError, TypeError) as error:
        return 400, {"error": {"type": "INVALID_ADMIN_REQUEST", "message": str(error)}}


def _dispatch(
    emulator: "Emulator", method: str, path: str, params: dict[str, str], body: Any
) -> Any:
    route = (method, path)
    if route == ("GET", "health"):
        with emulator.store.lock:
            return {"ok": True, "bases": sorted(emulator.schema.bases)}
    if route == ("GET", "requests"):
        return emulator.request_log(entries=params.get("entries", "1") not in ("0", "false"))
    if route == ("DELETE", "requests"):
        emulator.reset_request_log()
        return {"ok": True}
    if route == ("GET", "faults"):
        return emulator.fault_state()
    if route == ("POST", "faults"):
        emulator.set_faults(**body)
        return emulator.fault_state()
    if route == ("DELETE", "faults"):
        emulator.clear_faults()
        return emulator.fault_state()
    if route == ("POST", "offsets/expire"):
        return {"expired": emulator.expire_offsets()}
    if route == ("GET", "rate-limit"):
        return emulator.rate_limit_state()
    if route == ("POST", "rate-limit"):
        state = emulator.configure_rate_limit(
            _number(body.get("rate")),
            _number(body.get("penalty_seconds")),
            _number(body.get("token_rate")),
        )
        return {"ok": True, **state}
    if route == ("GET", "clock"):
        return emulator.clock_state()
    if route == ("POST", "clock"):
        if body.get("frozen") is not None:
            emulator.freeze_clock(bool(body["frozen"]))
        if body.get("advance") is not None:
            emulator.advance_clock(_number(body["advance"]))
        return emulator.clock_state()
    if route == ("POST", "tokens"):
        return emulator.add_token(body["token"], body.get("owner"))
    if route == ("POST", "bases"):
        return emulator.add_base(
            body["id"], name=body.get("name"), like=body.get("like"), tables=body.get("tables")
        )
    if route == ("GET", "records"):
        return {"records": emulator.all_records(params["base"], params["table"])}
    if route == ("POST", "records/seed"):
        ids = emulator.seed_records(
            body["base"],
            body["table"],
            body["records"],
            created_time=body.get("created_time"),
            modified_time=body.get("modified_time"),
            typecast=bool(body.get("typecast")),
        )
        return {"ids": ids}
    if route == ("POST", "records/edit"):
        return emulator.update_record_fields(
            body["base"],
            body["table"],
            body["id"],
            body["fields"],
            modified_time=body.get("modified_time"),
            typecast=bool(body.get("typecast")),
        )
    if route == ("POST", "records/delete"):
        emulator.delete_record(body["base"], body["table"], body["id"])
        return {"deleted": True}
    if route == ("POST", "records/raw"):
        return emulator.put_raw_fields(
            body["base"],
            body["table"],
            body["id"],
            body["fields"],
            modified_time=body.get("modified_time"),
        )
    if route == ("POST", "records/seed-raw"):
        ids = emulator.seed_raw_records(
            body["base"],
            body["table"],
            body["records"],
            created_time=body.get("created_time"),
            modified_time=body.get("modified_time"),
        )
        return {"ids": ids}
    if route == ("POST", "schema/rename-table"):
        return emulator.rename_table(body["base"], body["table"], body["name"])
    if route == ("POST", "schema/rename-field"):
        return emulator.rename_field(body["base"], body["table"], body["field"], body["name"])
    if route == ("POST", "schema/delete-field"):
        return emulator.delete_field(body["base"], body["table"], body["field"])
    if route == ("POST", "schema/retype-field"):
        return emulator.retype_field(
            body["base"], body["table"], body["field"], body["type"], body.get("options")
        )
    if route == ("POST", "reset"):
        return {"deleted": emulator.clear_records(body.get("base"), body.get("table"))}
    raise ApiError(404, "NOT_FOUND")


def _number(value: Any) -> float | None:
    """A JSON number (or None); refuses booleans and strings rather than misreading them."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"Expected a number, not {value!r}")
    return float(value)
