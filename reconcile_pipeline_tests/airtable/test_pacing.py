"""Client pacing keeps a whole process under Airtable's 5 requests/s per base.

Two threads, each with its own `AirtableClient` on the same base, fire 25 requests apiece at
an emulator enforcing the real limit (5/s, 30-second block). The shared per-base pacer must
keep every one-second window of arrivals, as timestamped by the server, at 5 or fewer, so not
a single 429 occurs. Asserted from the emulator's request log, not from wall-clock timing.
"""

import threading

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
