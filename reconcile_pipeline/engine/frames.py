"""Airtable records as a pandas DataFrame typed by the field mapping (for previews and users)."""

import pandas as pd

from reconcile_pipeline.engine.convert import parse_airtable_time, record_values
from reconcile_pipeline.engine.mapping import FieldKind, TableMapping

PANDAS_DTYPES: dict[FieldKind, str] = {
    FieldKind.TEXT: "string",
    FieldKind.SELECT: "string",
    FieldKind.INTEGER: "Int64",
    FieldKind.FLOAT: "Float64",
    FieldKind.BOOLEAN: "boolean",
    FieldKind.DATE: "string",
    FieldKind.DATETIME: "datetime64[ns, UTC]",
    FieldKind.JSON: "object",
    FieldKind.ATTACHMENTS: "object",
    FieldKind.LINK: "string",
}


def records_frame(mapping: TableMapping, records: list[dict]) -> pd.DataFrame:
    """One row per record: id, times, every mapped column (invalid values left empty)."""
    rows = []
    for record in records:
        values, _problems = record_values(mapping, record.get("fields", {}))
        modified = None
        if mapping.modified_time_field:
            modified = parse_airtable_time(record["fields"].get(mapping.modified_time_field))
        rows.append(
            {
                "record_id": record["id"],
                "airtable_created_at": parse_airtable_time(record.get("createdTime")),
                "airtable_modified_at": modified,
                **values,
            }
        )
    columns = ["record_id", "airtable_created_at", "airtable_modified_at"] + [
        f.column for f in mapping.fields
    ]
    frame = pd.DataFrame(rows, columns=columns)
    frame["record_id"] = frame["record_id"].astype("string")
    for name in ("airtable_created_at", "airtable_modified_at"):
        frame[name] = pd.to_datetime(frame[name], utc=True)
    for spec in mapping.fields:
        dtype = PANDAS_DTYPES[spec.kind]
        if spec.kind is FieldKind.DATETIME:
            frame[spec.column] = pd.to_datetime(frame[spec.column], utc=True)
        elif dtype != "object":
            frame[spec.column] = frame[spec.column].astype(dtype)
    return frame
