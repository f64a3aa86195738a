"""Run-time fault injection and Airtable's rate limits (per base and per token owner).

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


class _Limit:
    """``rate`` requests per second per key (sliding one-second window), and its blocks."""

    def __init__(self, rate: float, penalty_seconds: float) -> None:
        self.rate = rate
        self.penalty_seconds = penalty_seconds
        self.windows: dict[str, deque[float]] = {}
        self.blocked_until: dict[str, float] = {}

    def blocked(self, key: str, now: float) -> bool:
        return now < self.blocked_until.get(key, 0.0)

    def full(self, key: str, now: float) -> bool:
        """Whether one more request now would go over the rate (never, when it is off)."""
        if self.rate <= 0:
            return False
        window = self.windows.setdefault(key, deque())
        while window and window[0] <= now - 1.0:
            window.popleft()
        return len(window) >= self.rate

    def count(self, key: str, now: float) -> None:
        if self.rate > 0:
            self.windows.setdefault(key, deque()).append(now)

    def block(self, key: str, now: float) -> None:
        self.blocked_until[key] = now + self.penalty_seconds

    def reset(self) -> None:
        self.windows.clear()
        self.blocked_until.clear()


class RateLimiter:
    """Airtable's limits: ``rate`` requests/s per base and ``token_rate`` requests/s per token
    owner across all its bases (sliding one-second windows; 0 turns a limit off).

    A request over either limit answers 429 and blocks what went over (the base, or the token
    owner: then every request of that owner, to any base, is refused) for ``penalty_seconds``:
    every request it makes gets 429 until the block ends; requests during a block neither
    extend it nor count in any window. A request not tied to a base (the metadata API) counts
    against the owner's limit only.
    """

    def __init__(self, rate: float, penalty_seconds: float, token_rate: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._per_base = _Limit(rate, penalty_seconds)
        self._per_owner = _Limit(token_rate, penalty_seconds)

    @property
    def rate(self) -> float:
        return self._per_base.rate

    @property
    def token_rate(self) -> float:
        return self._per_owner.rate

    @property
    def penalty_seconds(self) -> float:
        return self._per_base.penalty_seconds

    def configure(
        self,
        rate: float | None = None,
        penalty_seconds: float | None = None,
        token_rate: float | None = None,
    ) -> None:
        """Change the given settings and lift every block and window."""
        with self._lock:
            if rate is not None:
                self._per_base.rate = float(rate)
            if token_rate is not None:
                self._per_owner.rate = float(token_rate)
            if penalty_seconds is not None:
                self._per_base.penalty_seconds = float(penalty_seconds)
                self._per_owner.penalty_seconds = float(penalty_seconds)
            self._per_base.reset()
            self._per_owner.reset()

    def admit(self, base_id: str | None, owner: str | None, now: float) -> str | None:
        """None if the request may go ahead (it is counted), else the limit refusing it:
        ``"token"`` (the owner's) or ``"base"``."""
        with self._lock:
            if owner is not None and self._per_owner.blocked(owner, now):
                return "token"
            if base_id is not None and self._per_base.blocked(base_id, now):
                return "base"
            owner_full = owner is not None and self._per_owner.full(owner, now)
            base_full = base_id is not None and self._per_base.full(base_id, now)
            if owner_full:
                self._per_owner.block(owner, now)
            if base_full:
                self._per_base.block(base_id, now)
            if owner_full:
                return "token"
            if base_full:
                return "base"
            if owner is not None:
                self._per_owner.count(owner, now)
            if base_id is not None:
                self._per_base.count(base_id, now)
            return None

    def block(self, base_id: str, now: float) -> None:
        """Start the base's penalty, as an injected 429 does."""
        with self._lock:
            self._per_base.block(base_id, now)

    def state(self, now: float) -> dict[str, Any]:
        """The settings, and the blocks in force: key -> seconds left."""
        with self._lock:
            return {
                "rate": self._per_base.rate,
                "token_rate": self._per_owner.rate,
                "penalty_seconds": self._per_base.penalty_seconds,
                "blocked_bases": _left(self._per_base.blocked_until, now),
                "blocked_owners": _left(self._per_owner.blocked_until, now),
            }

    def reset(self) -> None:
        self.configure()


def _left(blocked_until: dict[str, float], now: float) -> dict[str, float]:
    return {key: until - now for key, until in blocked_until.items() if until > now}
