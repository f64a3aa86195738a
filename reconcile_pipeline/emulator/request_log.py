"""The log of every ``/v0`` request: what tests and benchmarks assert pacing and retries on."""

import threading
from collections import Counter, deque
from typing import Any

_MAX_ENTRIES = 200_000


class RequestLog:
    """Entries plus counts by ``"METHOD /path/template"``. Thread-safe and bounded."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: deque[dict[str, Any]] = deque(maxlen=_MAX_ENTRIES)
        self._counts: Counter[str] = Counter()

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._entries.append(entry)
            self._counts[f"{entry['method']} {entry['path']}"] += 1

    def snapshot(self) -> dict[str, Any]:
        """``{"total", "counts": {"GET /v0/{base}/{table}": n, …}, "entries": […]}``.

        Each entry: ``time`` (epoch seconds at arrival), ``monotonic`` (server's monotonic
        clock at arrival), ``method``, ``path`` (template), ``target`` (the raw path),
        ``query`` (the raw query string, truncated),
        ``status`` (0 when the connection was dropped), ``base``, ``dropped``.
        """
        with self._lock:
            return {
                "total": sum(self._counts.values()),
                "counts": dict(self._counts),
                "entries": [dict(e) for e in self._entries],
            }

    def reset(self) -> None:
        with self._lock:
            self._entries.clear()
            self._counts.clear()
