"""Turn engine results into metadata a person can read in the UI and Dagster can plot."""

from collections.abc import Sequence
from typing import Any

import dagster as dg


def markdown_table(rows: Sequence[dict], limit: int = 10) -> dg.MarkdownMetadataValue:
    """A short markdown table of the first `limit` rows (values truncated, never secrets)."""
    if not rows:
        return dg.MetadataValue.md("_none_")
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows[:limit]:
        cells = [str(row.get(c, "")).replace("|", "\\|").replace("\n", " ")[:80] for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    if len(rows) > limit:
        lines.append(f"\n_… and {len(rows) - limit} more_")
    return dg.MetadataValue.md("\n".join(lines))


def window_metadata(context: dg.AssetExecutionContext) -> dict[str, Any]:
    window = context.partition_time_window
    return {
        "window_start": dg.MetadataValue.timestamp(window.start),
        "window_end": dg.MetadataValue.timestamp(window.end),
        "window": f"{window.start:%Y-%m-%d %H:%M} → {window.end:%Y-%m-%d %H:%M} UTC",
    }
