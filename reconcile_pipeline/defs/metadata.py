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


def _plottable(value: Any) -> bool:
    """Values Dagster draws in an asset's plots (numbers, whatever their wrapper)."""
    if isinstance(value, dg.TimestampMetadataValue):
        return False
    if isinstance(value, dg.MetadataValue):
        value = value.value
        if isinstance(value, dg.TableSchema):
            return False
    return isinstance(value, int | float) and not isinstance(value, bool)


def windows_in_run(context: dg.AssetExecutionContext) -> int:
    """How many windows this run materializes (1 for a single window, N for a range run)."""
    if not context.has_partition_key_range:
        return 1
    key_range = context.partition_key_range
    if key_range.start == key_range.end:
        return 1
    return len(context.partition_keys)


def materialization_metadata(
    context: dg.AssetExecutionContext, metadata: dict[str, Any]
) -> dict[str, Any]:
    """The window and `metadata`, shaped for the UI's per-partition plots.

    A range run (a backfill as one run) records one materialization per window with the same
    metadata (Dagster has no per-partition metadata in a single run), and its totals drawn on
    every window would read as N times the work. So a range run's numbers go into one
    `range_totals` entry (JSON, not plotted) with `windows_in_run`; a single window's numbers stay
    plottable."""
    windows = windows_in_run(context)
    if windows == 1:
        return {**window_metadata(context), **metadata}
    totals = {
        k: v.value if isinstance(v, dg.MetadataValue) else v
        for k, v in metadata.items()
        if _plottable(v)
    }
    kept = {k: v for k, v in metadata.items() if not _plottable(v)}
    return {
        **window_metadata(context),
        "windows_in_run": f"{windows} windows in one run: the totals below are the range's",
        "range_totals": dg.MetadataValue.json(totals),
        **kept,
    }
