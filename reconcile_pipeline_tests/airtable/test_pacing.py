"""Client pacing keeps a whole process under Airtable's 5 requests/s per base.

Two threads, each with its own `AirtableClient` on the same base, fire 25 requests apiece at
an emulator enforcing the real limit (5/s, 30-second block). The shared per-base pacer must
keep every one-second window of arrivals, as timestamped by the server, at 5 or fewer, so not
a single 429 occurs. Asserted from the emulator's request log, not from wall-clock timing.
"""

import threading
import time

from reconcile_pipeline.airtable.client import AirtableClient
from reconcile_pipeline.emulator import run_emulator
from reconcile_pipeline_tests.airtable.conftest import BASE, TABLE

REQUESTS_PER_THREAD = 25


def test_burst_from_two_threads_never_exceeds_five_per_second() -> None:
    with run_emulator(rate_limit=5, penalty_seconds=30.0) as emulator:
        clients = [
            AirtableClient(emulator.token, BASE, TABLE, endpoint_url=emulator.url) for _ in range(2)
        ]

        def burst(client: AirtableClient) -> None:
            for _ in range(REQUESTS_PER_THREAD):
                list(client.iter_all())

        threads = [threading.Thread(target=burst, args=(c,)) for c in clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        entries = emulator.request_log()["entries"]
        for client in clients:
            client.close()

    assert len(entries) == 2 * REQUESTS_PER_THREAD
    assert [e["status"] for e in entries].count(429) == 0
    arrivals = sorted(e["monotonic"] for e in entries)
    busiest = max(sum(1 for t in arrivals if start <= t < start + 1.0) for start in arrivals)
    assert busiest <= 5
    assert sum(c.requests_sent for c in clients) == 2 * REQUESTS_PER_THREAD


def test_each_window_starts_after_the_answer_to_the_request_it_follows() -> None:
    """Requests of varied length, some answered slower than the margin: request k + burst
    never starts before request k was answered plus a window (a slow answer may be a late
    arrival). Lower bounds only: a slow machine can make the pacer later, never earlier."""
    from reconcile_pipeline.airtable.pacing import RequestPacer

    pacer = RequestPacer(rate=5, margin_seconds=0.1)
    spans: list[tuple[float, float, float]] = []  # asked, started, answered
    for duration in [0.002, 0.03, 0.25, 0.0, 0.01] * 3:
        asked = time.monotonic()  # the slot is no earlier than this
        pacer.acquire()
        started = time.monotonic()
        time.sleep(duration)
        answered = time.monotonic()  # done() reads the clock after this
        pacer.done()
        spans.append((asked, started, answered))

    for (_, _, answered), later in zip(spans, spans[pacer.burst :], strict=False):
        assert later[1] >= answered + pacer.window - 1e-6


def test_an_unanswered_request_holds_the_others_only_until_its_fallback_deadline() -> None:
    from reconcile_pipeline.airtable.pacing import RequestPacer

    pacer = RequestPacer(rate=1, margin_seconds=0.1)
    hung_started = threading.Event()
    release_hung = threading.Event()
    asked: list[float] = []

    def hung_request() -> None:
        asked.append(time.monotonic())  # its slot can be no earlier than this
        pacer.acquire()
        hung_started.set()
        release_hung.wait(timeout=30)  # no answer until the other request went out
        pacer.done()

    def next_request() -> None:
        pacer.acquire()
        asked.append(time.monotonic())

    hung = threading.Thread(target=hung_request)
    hung.start()
    assert hung_started.wait(timeout=10)
    waiter = threading.Thread(target=next_request)
    waiter.start()
    waiter.join(timeout=10)
    went_out = not waiter.is_alive()
    release_hung.set()
    hung.join()

    assert went_out  # it did not wait for the hung request's answer
    assert asked[1] - asked[0] >= pacer.window + 0.1 - 1e-6  # but kept the start-anchored deadline
