"""Airtable API calls spent, per client, base and UTC day, and the month's projection against a
workspace's plan (Airtable caps calls per workspace per month: Free 1,000, Team 100,000, shared by
every integration). No Dagster here."""

import calendar
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Engine

WARN_SHARE = 0.8


def record(engine: Engine, client: str, base_id: str, requests: int) -> None:
    """Add `requests` to today's count (no-op for 0)."""
    if requests <= 0:
        return
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO reconcile.api_usage AS u (client, base_id, day, requests) "
                "VALUES (:c, :b, (now() AT TIME ZONE 'UTC')::date, :n) "
                "ON CONFLICT (client, base_id, day) DO UPDATE SET requests = u.requests + :n"
            ),
            {"c": client, "b": base_id, "n": requests},
        )


@dataclass(frozen=True)
class Budget:
    """A workspace's month so far."""

    workspace: str
    clients: tuple[str, ...]
    used: int
    cap: int
    projected: int
    days_elapsed: float
    days_in_month: int

    @property
    def used_share(self) -> float:
        return self.used / self.cap if self.cap else 0.0

    @property
    def projected_share(self) -> float:
        return self.projected / self.cap if self.cap else 0.0

    @property
    def passed(self) -> bool:
        """Under 80% of the cap, and not projected past it."""
        return self.used_share < WARN_SHARE and self.projected_share <= 1.0

    def summary(self) -> str:
        return (
            f"workspace {self.workspace}: {self.used:,} of {self.cap:,} API calls used this month "
            f"({self.used_share:.0%}), {self.projected:,} projected ({self.projected_share:.0%})"
        )

    def cadence_minutes(self, base: int = 15) -> int:
        """The schedule's cadence that keeps the month within the cap: the normal `base` while
        the projection fits, slower (×2, ×4) the further it goes over."""
        if self.projected_share <= 1.0:
            return base
        if self.projected_share <= 2.0:
            return base * 2
        return base * 4


def month_budget(
    engine: Engine,
    workspace: str,
    clients: Sequence[str],
    cap: int,
    now: dt.datetime | None = None,
) -> Budget:
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    first = now.date().replace(day=1)
    with engine.connect() as conn:
        used = conn.execute(
            text(
                "SELECT coalesce(sum(requests), 0) FROM reconcile.api_usage "
                "WHERE client = ANY(:clients) AND day >= :first"
            ),
            {"clients": list(clients), "first": first},
        ).scalar_one()
    days = calendar.monthrange(now.year, now.month)[1]
    start = dt.datetime(now.year, now.month, 1, tzinfo=dt.UTC)
    elapsed = max((now - start).total_seconds() / 86400, 1 / 24)  # at least an hour's worth
    projected = round(int(used) * days / elapsed)
    return Budget(workspace, tuple(clients), int(used), cap, projected, elapsed, days)
