"""What a stage run is: who runs it, over which window, and whether it may write."""

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class RunContext:
    """Carried into every bookkeeping row (audit: "which run changed this, for which window")."""

    run_id: str | None = None
    window_start: dt.datetime | None = None
    window_end: dt.datetime | None = None
    dry_run: bool = False

    def audit(self) -> dict:
        return {
            "run_id": self.run_id,
            "window_start": self.window_start.isoformat() if self.window_start else None,
            "window_end": self.window_end.isoformat() if self.window_end else None,
        }
