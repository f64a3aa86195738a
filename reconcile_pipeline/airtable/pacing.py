"""Client-side pacing under Airtable's per-base rate limit, shared by the whole process.

Airtable allows 5 requests per second per base and blocks the base for 30 seconds after a
429, so a healthy run must never provoke one. Every client (and thread) talking to the same
base through the same endpoint shares one `RequestPacer`, obtained with `pacer_for`.
"""

import math
import threading
import time
from collections import deque

# Slack added to each window: the server timestamps arrivals, not our sends, so network and
# scheduling jitter must not push a request into the previous window.
DEFAULT_MARGIN_SECONDS = 0.1


class RequestPacer:
    """Admits at most ``floor(rate)`` request starts in any window of ``burst/rate + margin`` s.

    Callers reserve the earliest slot under a lock and sleep outside it, so waiting threads
    never block each other's bookkeeping.
    """

    def __init__(self, rate: float, margin_seconds: float = DEFAULT_MARGIN_SECONDS) -> None:
        self.margin_seconds = margin_seconds
        self._lock = threading.Lock()
        self.set_rate(rate)

    def set_rate(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        with self._lock:
            self.rate = rate
            self.burst = max(1, math.floor(rate))
            self.window = self.burst / rate + self.margin_seconds
            previous = list(getattr(self, "_slots", ()))
            self._slots: deque[float] = deque(previous[-self.burst :], maxlen=self.burst)

    def acquire(self) -> float:
        """Block until this request may start; returns the seconds waited."""
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._slots[-1]) if self._slots else now
            if len(self._slots) == self.burst:
                slot = max(slot, self._slots[0] + self.window)
            self._slots.append(slot)
        wait = slot - now
        if wait > 0:
            time.sleep(wait)
        return max(wait, 0.0)


_registry: dict[tuple[str, str], RequestPacer] = {}
_registry_lock = threading.Lock()


def pacer_for(endpoint_url: str, base_id: str, rate: float) -> RequestPacer:
    """The process-wide pacer for one base; the lowest rate asked for wins."""
    key = (endpoint_url.rstrip("/"), base_id)
    with _registry_lock:
        pacer = _registry.get(key)
        if pacer is None:
            pacer = _registry[key] = RequestPacer(rate)
        elif rate < pacer.rate:
            pacer.set_rate(rate)
        return pacer
