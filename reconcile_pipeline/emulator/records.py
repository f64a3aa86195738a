"""Stored records and tables, and their JSON form for the emulator's data file.

A cell is normally stored in its validated form; a *raw* cell (``StoredRecord.raw``, written by
the admin "raw fields" operation) holds any JSON value verbatim, served as is and never
converted, so tests can get values from the API that Airtable's validation would not allow.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from reconcile_pipeline.emulator.clock import format_datetime, parse_datetime
from reconcile_pipeline.emulator.schema import TableSchema


@dataclass(slots=True)
class StoredRecord:
    id: str
    created: datetime
    created_text: str
    auto_number: int
    cells: dict[str, Any]
    field_modified: dict[str, datetime] = field(default_factory=dict)
    last_modified: datetime | None = None
    # Field ids whose cells hold raw values: any JSON, ``None`` included, served verbatim.
    # Immutable (replaced on change) so that the usual empty one is shared by all records.
    raw: frozenset[str] = frozenset()


@dataclass
class TableData:
    base_id: str
    schema: TableSchema
    records: dict[str, StoredRecord] = field(default_factory=dict)
    next_auto_number: int = 1

    @property
    def key(self) -> tuple[str, str]:
        return (self.base_id, self.schema.id)


def record_to_json(record: StoredRecord) -> dict[str, Any]:
    data = {
        "id": record.id,
        "createdTime": record.created_text,
        "autoNumber": record.auto_number,
        "cells": {
            k: format_datetime(v) if isinstance(v, datetime) else v for k, v in record.cells.items()
        },
        "fieldModified": {k: format_datetime(v) for k, v in record.field_modified.items()},
        "lastModified": format_datetime(record.last_modified) if record.last_modified else None,
    }
    if record.raw:
        data["raw"] = sorted(record.raw)
    return data


def record_from_json(schema: TableSchema, data: Mapping[str, Any]) -> StoredRecord:
    values = {}
    raw_ids = set(data.get("raw") or ())
    raw = set()
    for field_id, value in data["cells"].items():
        column = schema.field(field_id)
        if column is None:
            continue
        if field_id in raw_ids:
            values[field_id] = value
            raw.add(field_id)
        elif column.type == "dateTime":
            try:
                values[field_id] = parse_datetime(value)
            except (AttributeError, TypeError, ValueError, OverflowError):
                continue  # not a datetime (the field changed type): the value is dropped
        else:
            values[field_id] = value
    created = parse_datetime(data["createdTime"])
    return StoredRecord(
        id=data["id"],
        created=created,
        created_text=format_datetime(created),
        auto_number=data.get("autoNumber", 0),
        cells=values,
        field_modified={k: parse_datetime(v) for k, v in data.get("fieldModified", {}).items()},
        last_modified=parse_datetime(data["lastModified"]) if data.get("lastModified") else None,
        raw=frozenset(raw),
    )
