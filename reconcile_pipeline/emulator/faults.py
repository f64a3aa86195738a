"""Run-time fault injection and Airtable's per-base rate limit.

Faults are switched on and off while the emulator runs (Python or the admin endpoint).
Deterministic switches (fail the next N requests, fail the n-th request from now, drop the
next N writes) are what tests should use; random rates take a seed so runs repeat.
"""

import random
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from reconcile_pipeline.emulator.errors import ApiError, rate_limited

_FAULT_MESSAGES = {
    429: ("RATE_LIMIT_REACHED", "Rate limit exceeded. Please try again later"),
    500: ("SERVER_ERROR", "Try again. If the problem persists, contact support."),
    502: ("BAD_GATEWAY", "The server encountered a temporary error."),
    503: ("SERVICE_UNAVAILABLE", "The service is temporarily unavailable."),
    504: ("GATEWAY_TIMEOUT", "The server did not respond in time."),
}


@dataclass
class FaultConfig:
    """A complete fault setting; applying one replaces the previous one.

    Attributes:
        latency_ms: added to every API request before it is handled.
        error_rates: status code -> probability per request, e.g. ``{503: 0.2, 429: 0.1}``.
        seed: seeds the random choices of ``error_rates`` and ``drop_write_rate``.
        fail_next: the next N API requests answer ``fail_status``.
        fail_status: the status used by ``fail_next``.
        fail_nth: request number from now (1-based) -> status, e.g. ``{3: 503}``.
        drop_next_writes: the next N successful writes are applied, then the connection is
            closed without a response.
        drop_write_rate: probability that a successful write is dropped that way.
        repeat_on_next_page: the next continued list page (one read with an ``offset``) starts
            this many records early, repeating the end of the page before: what a listing does
            when records shift under pagination.
    """

    latency_ms: float = 0.0
    error_rates: dict[int, float] = field(default_factory=dict)
    seed: int | None = None
    fail_next: int = 0
    fail_status: int = 503
    fail_nth: dict[int, int] = field(default_factory=dict)
    drop_next_writes: int = 0
    drop_write_rate: float = 0.0
    repeat_on_next_page: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FaultConfig":
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"Unknown fault settings: {sorted(unknown)}")
        values = dict(data)
        values["error_rates"] = {int(k): float(v) for k, v in values.get("error_rates", {}).items()}
        values["fail_nth"] = {int(k): int(v) for k, v in values.get("fail_nth", {}).items()}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fault_error(status: int) -> ApiError:
    if status == 429:
        return rate_limited()
    error_type, message = _FAULT_MESSAGES.get(status, ("INJECTED_FAULT", "Injected fault"))
    return ApiError(status, error_type, message)


class FaultInjector:
    """Decides, per API request, whether a fault applies. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.configure(FaultConfig())

    def configure(self, config: FaultConfig) -> None:
        with self._lock:
            self._config = config
            self._rng = random.Random(config.seed)
            self._seen = 0
            self._fail_left = config.fail_next
            self._drops_left = config.drop_next_writes

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                **self._config.to_dict(),
                "remaining": {
                    "fail_next": self._fail_left,
                    "fail_nth": {n: s for n, s in self._config.fail_nth.items() if n > self._seen},
                    "drop_next_writes": self._drops_left,
                },
            }

    def before_request(self) -> tuple[float, int | None]:
        """(latency seconds, status to fail with or None) for the next API request."""
        with self._lock:
            config = self._config
            self._seen += 1
            status = config.fail_nth.get(self._seen)
            if status is None and self._fail_left > 0:
                self._fail_left -= 1
                status = config.fail_status
            if status is None:
                for code, rate in sorted(config.error_rates.items()):
                    if rate > 0 and self._rng.random() < rate:
                        status = code
                        break
            return config.latency_ms / 1000.0, status

    def drop_write(self) -> bool:
        """Whether to drop the response of a write that was just applied."""
        with self._lock:
            if self._drops_left > 0:
                self._drops_left -= 1
                return True
            rate = self._config.drop_write_rate
            return rate > 0 and self._rng.random() < rate


class RateLimiter:
    """Airtable's limit: ``rate`` requests per second per base (sliding one-second window).

    Going over answers 429 and blocks the base for ``penalty_seconds``: every request to it
    gets 429 until the block ends (requests during the block do not extend it).
    """

    def __init__(self, rate: float, penalty_seconds: float) -> None:
        self.rate = rate
        self.penalty_seconds = penalty_seconds
        self._lock = threading.Lock()
        self._windows: dict[str, deque[float]] = {}
        self._blocked_until: dict[str, float] = {}

    def admit(self, base_id: str, now: float) -> ApiError | None:
        with self._lock:
            if now < self._blocked_until.get(base_id, 0.0):
                return rate_limited()
            if self.rate <= 0:
                return None
            window = self._windows.setdefault(base_id, deque())
            while window and window[0] <= now - 1.0:
                window.popleft()
            if len(window) >= self.rate:
                self._blocked_until[base_id] = now + self.penalty_seconds
                return rate_limited()
            window.append(now)
            return None

    def block(self, base_id: str, now: float) -> None:
        """Start the penalty, as an injected 429 does."""
        with self._lock:
            self._blocked_until[base_id] = now + self.penalty_seconds

    def reset(self) -> None:
        with self._lock:
            self._windows.clear()
            self._blocked_until.clear()
