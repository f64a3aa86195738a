"""Run configuration shared by the reconcile assets and jobs."""

import dagster as dg


class ReconcileConfig(dg.Config):
    """Set `dry_run: true` to compute the plan (what would change, where, which conflicts)
    without writing either side."""

    dry_run: bool = False


class PullConfig(ReconcileConfig):
    """The pull's `dry_run`, and how far before a window's start it reaches (a change stamped
    just before the previous window closed, or by a skewed clock, is still seen)."""

    overlap_minutes: int = 5
