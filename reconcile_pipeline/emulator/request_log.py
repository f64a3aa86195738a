"""The log of every ``/v0`` request: what tests and benchmarks assert pacing and retries on."""

import threading
from collections import Counter, deque
from typing import Any

_MAX_ENTRIES = 200_000


class RequestLog:
    """Entries plus counts by ``"METHOD /path/template"``, by token owner and by base.

    Thread-safe; the entries are bounded (the oldest go first), the counts are not.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: deque[dict[str, Any]] = deque(maxlen=_MAX_ENTRIES)
        self._counts: Counter[str] = Counter()
        self._by_owner: dict[str, Counter[str]] = {}
        self._by_base: dict[str, Counter[str]] = {}

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._entries.append(entry)
            self._counts[f"{entry['method']} {entry['path']}"] += 1
            for key, table in ((entry["owner"], self._by_owner), (entry["base"], self._by_base)):
                if key is None:
                    continue
                counts = table.setdefault(key, Counter(requests=0, rate_limited=0))
                counts["requests"] += 1
                if entry["status"] == 429:
                    counts["rate_limited"] += 1

    def snapshot(self, entries: bool = True) -> dict[str, Any]:
        """``{"total", "counts", "by_owner", "by_base", "entries"}``.

        ``counts``: ``{"GET /v0/{base}/{table}": n, …}``. ``by_owner``: token owner ->
        ``{"requests", "rate_limited"}`` (429s, whichever limit or fault answered them),
        authenticated requests only; the owner of a token added without one is its
        fingerprint (``tok_…``, see `tokens.fingerprint`), never the token. ``by_base``: the
        same per base id (requests not tied to a base are left out).

        Each entry: ``time`` (epoch seconds at arrival), ``monotonic`` (the emulator's clock at
        arrival, see `clock.EmulatorClock`), ``method``, ``path`` (template), ``target`` (the
        raw path), ``query`` (the raw query string, truncated; both with any token redacted),
        ``status`` (0 when the connection was dropped), ``base``, ``dropped``, ``token`` (the
        presented token's fingerprint, None without one), ``owner`` (None when the token was
        refused), ``limit`` (what answered a 429: ``"token"``, ``"base"`` or ``"injected"``;
        else None). ``entries=False`` leaves the entries out (an empty list).
        """
        with self._lock:
            return {
                "total": sum(self._counts.values()),
                "counts": dict(self._counts),
                "by_owner": {k: dict(v) for k, v in self._by_owner.items()},
                "by_base": {k: dict(v) for k, v in self._by_base.items()},
                "entries": [dict(e) for e in self._entries] if entries else [],
            }

    def reset(self) -> None:
        with self._lock:
            self._entries.clear()
            self._counts.clear()
            self._by_owner.clear()
            self._by_base.clear()
