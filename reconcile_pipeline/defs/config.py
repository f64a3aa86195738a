"""Run configuration shared by the reconcile assets and jobs."""

import dagster as dg


class ReconcileConfig(dg.Config):
    """Set `dry_run: true` to compute the plan (what would change, where, which conflicts)
    without writing either side."""

    dry_run: bool = False


class PullConfig(dg.Config):
    """How far before a window's start the pull reaches (a change stamped just before the
    previous window closed, or by a skewed clock, is still seen)."""

    overlap_minutes: int = 5
