"""Small builders for Airtable records and leads, with overridable fields."""

import datetime as dt
import itertools

_ids = itertools.count(1)


def record_id(n: int | None = None) -> str:
    return f"rec{(n if n is not None else next(_ids)):014d}"


def airtable_record(rid: str | None = None, modified: dt.datetime | None = None, **fields) -> dict:
    """An Airtable API record for the demo Leads table; keyword names are Airtable field names
    with spaces as underscores (`Claimed_By="ana"`); None removes a field (Airtable omits it)."""
    values = {
        "Email": "lead@example.com",
        "First Name": "Ada",
        "Last Name": "Lovelace",
        "Status": "New",
        "Processing Status": "Active",
        "Campaign ID": "cmp-1",
        "SMS Sent Count": 0,
    }
    for key, value in fields.items():
        values[key.replace("_", " ")] = value
    values = {k: v for k, v in values.items() if v is not None}
    if modified is not None:
        values["Last Modified"] = modified.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return {"id": rid or record_id(), "createdTime": "2026-01-01T00:00:00.000Z", "fields": values}
