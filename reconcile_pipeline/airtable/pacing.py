"""Client-side pacing under Airtable's per-base rate limit, shared by the whole process.

Airtable allows 5 requests per second per base and blocks the base for 30 seconds after a
429, so a healthy run must never provoke one. Every client (and thread) talking to the same
base through the same endpoint shares one `RequestPacer`, obtained with `pacer_for`.

The rule: request *k + 5* may start only once request *k* has been answered and a full window
(1 s at 5 req/s) has passed since. Airtable received request *k* before it answered, and
request *k + 5* reaches Airtable after we send it, so the two arrivals are at least a window
apart on Airtable's clock whatever the network delays. Measured from the *start* of request *k*
instead, a margin must absorb the delays and is paid on every window; anchoring on the answer
pays only the request's own duration (milliseconds against Airtable's fast endpoints).

A request still unanswered at its start-anchored deadline (start + window + margin) does not
hold the others up further: they go out at that deadline, which assumes the request reached
Airtable within the margin of being sent. Once a request is answered, the window always runs
from its answer, however slow: a slow answer may be a late arrival (a loaded network, or a
loaded server stamping arrivals late), and a window measured from the send would then let six
requests land within a second. The scale benchmark drew 429s that way under load.
"""

import math
import threading
import time
from collections import deque
from dataclasses import dataclass

# Fallback slack for requests whose completion is not known in time: the server timestamps
# arrivals, not our sends, so network and scheduling jitter must not push a request into the
# previous window.
DEFAULT_MARGIN_SECONDS = 0.1


@dataclass
class _Ticket:
    start: float
    end: float | None = None


class RequestPacer:
    """Admits at most ``floor(rate)`` request arrivals in any window of ``burst/rate`` seconds.

    Callers reserve the earliest admissible slot under a lock and sleep outside it, so waiting
    threads never block each other's bookkeeping. Each caller reports its request's completion
    with `done()` (a thread's next `acquire()` also completes its previous request).
    """

    def __init__(self, rate: float, margin_seconds: float = DEFAULT_MARGIN_SECONDS) -> None:
        self.margin_seconds = margin_seconds
        self._changed = threading.Condition()
        self._own = threading.local()
        self.set_rate(rate)

    def set_rate(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        with self._changed:
            self.rate = rate
            self.burst = max(1, math.floor(rate))
            self.window = self.burst / rate
            previous = list(getattr(self, "_tickets", ()))
            self._tickets: deque[_Ticket] = deque(previous[-self.burst :], maxlen=self.burst)
            self._changed.notify_all()

    def acquire(self) -> float:
        """Block until this request may start; returns the seconds waited."""
        asked = time.monotonic()
        self.done()
        with self._changed:
            while True:
                now = time.monotonic()
                slot = max(now, self._tickets[-1].start) if self._tickets else now
                if len(self._tickets) == self.burst:
                    oldest = self._tickets[0]
                    deadline = oldest.start + self.window + self.margin_seconds
                    if oldest.end is not None:
                        # Answered: a window after its answer, however slow it was (a slow
                        # answer may mean a late arrival: the server's clock is what counts).
                        slot = max(slot, oldest.end + self.window)
                    elif now < deadline:
                        # Still in flight: its answer (or the fallback deadline) decides.
                        self._changed.wait(timeout=deadline - now)
                        continue
                    else:
                        slot = max(slot, deadline)
                ticket = _Ticket(slot)
                self._tickets.append(ticket)
                self._own.ticket = ticket
                break
        wait = slot - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        return max(time.monotonic() - asked, 0.0)

    def quiet_in(self) -> float:
        """Seconds until a full window has passed since this pacer's latest request was
        answered (or, unanswered, since its fallback deadline): from then on another client of
        the base may send a full burst without six of them landing within one window."""
        with self._changed:
            if not self._tickets:
                return 0.0
            last = self._tickets[-1]
            answered = last.end if last.end is not None else last.start + self.window
            return max(0.0, answered + self.margin_seconds + self.window - time.monotonic())

    def done(self) -> None:
        """The calling thread's current request has been answered (or has failed)."""
        ticket: _Ticket | None = getattr(self._own, "ticket", None)
        if ticket is None or ticket.end is not None:
            return
        with self._changed:
            ticket.end = max(time.monotonic(), ticket.start)
            self._changed.notify_all()


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


def wait_until_quiet(base_id: str) -> float:
    """Sleep until every pacer of `base_id` in this process is a window past its last request;
    the seconds slept. A run handing its base over to a run of another process (which paces
    only itself) calls it first: the other's first burst then never shares a window with this
    process's last requests."""
    with _registry_lock:
        pacers = [pacer for (_, base), pacer in _registry.items() if base == base_id]
    wait = max((pacer.quiet_in() for pacer in pacers), default=0.0)
    if wait > 0:
        time.sleep(wait)
    return wait
