"""Airtable records as a pandas DataFrame typed by the field mapping (for previews and users).

pandas is imported when a frame is built: a run with nothing pulled (an idle tick, the common
case) never pays its import (about a second in a new run process)."""

import importlib
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from reconcile_pipeline.engine.convert import PulledRecord
from reconcile_pipeline.engine.mapping import FieldKind, TableMapping

if TYPE_CHECKING:
    import pandas as pd

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


TIMES = ("airtable_created_at", "airtable_modified_at")
_warming: list[threading.Thread] = []


def warm_up() -> None:
    """Start importing pandas in a background thread (once per process), for a frame built
    later: a pull that has records waits on Airtable's pacing long enough to hide the import."""
    if _warming or "pandas" in sys.modules:
        return
    thread = threading.Thread(
        target=importlib.import_module, args=("pandas",), name="import-pandas", daemon=True
    )
    _warming.append(thread)
    thread.start()


def column_dtypes(mapping: TableMapping) -> dict[str, str]:
    """The frame's columns and their pandas dtypes, known without building it."""
    return {
        "record_id": "string",
        **{name: "datetime64[ns, UTC]" for name in TIMES},
        **{spec.column: PANDAS_DTYPES[spec.kind] for spec in mapping.fields},
    }


def pulled_frame(mapping: TableMapping, records: Sequence[PulledRecord]) -> "pd.DataFrame":
    """One row per record already converted: id, times, every mapped column (invalid values
    left empty), typed as `column_dtypes` says."""
    import pandas as pd

    rows = [
        {
            "record_id": record.record_id,
            "airtable_created_at": record.created,
            "airtable_modified_at": record.modified,
            **record.values,
        }
        for record in records
    ]
    frame = pd.DataFrame(rows, columns=list(column_dtypes(mapping)))
    frame["record_id"] = frame["record_id"].astype("string")
    for name in TIMES:
        frame[name] = pd.to_datetime(frame[name], utc=True)
    for spec in mapping.fields:
        dtype = PANDAS_DTYPES[spec.kind]
        if spec.kind is FieldKind.DATETIME:
            frame[spec.column] = pd.to_datetime(frame[spec.column], utc=True)
        elif dtype != "object":
            frame[spec.column] = frame[spec.column].astype(dtype)
    return frame
