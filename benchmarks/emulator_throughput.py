"""Throughput of the Airtable emulator, unthrottled, over keep-alive HTTP.

Runs the emulator in this process (as tests and the demo's in-process mode do, sharing the
GIL with the client), seeds 1,000 leads, then two threads with keep-alive sessions send a
fixed mix of 2,000 requests: list a 100-record page, get one record, PATCH ten records.
Prints requests/s against the floor and exits non-zero below it.

    .venv/bin/python benchmarks/emulator_throughput.py
"""

import sys
import threading
import time

import requests

from reconcile_pipeline.emulator import run_emulator

FLOOR_REQUESTS_PER_SECOND = 200.0
TOTAL_REQUESTS = 2000
THREADS = 2
BASE, TABLE = "appDemoLeads00001", "Leads"


def drive(url: str, token: str, ids: list[str], count: int, offset: int, errors: list) -> None:
    table_url = f"{url}/v0/{BASE}/{TABLE}"
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {token}"
        for n in range(count):
            index = (offset + n) % len(ids)
            kind = n % 3
            if kind == 0:
                response = session.get(table_url, params={"pageSize": 100})
            elif kind == 1:
                response = session.get(f"{table_url}/{ids[index]}")
            else:
                batch = [
                    {"id": ids[(index + i) % len(ids)], "fields": {"SMS Sent Count": n}}
                    for i in range(10)
                ]
                response = session.patch(table_url, json={"records": batch})
            if response.status_code != 200:
                errors.append(response.status_code)


def main() -> int:
    with run_emulator(rate_limit=0) as emulator:
        leads = [
            {"Email": f"lead{i}@example.com", "First Name": f"Lead {i}", "ICP Score": i % 100}
            for i in range(1000)
        ]
        ids = emulator.seed_records(BASE, TABLE, leads)
        errors: list[int] = []
        per_thread = TOTAL_REQUESTS // THREADS
        threads = [
            threading.Thread(
                target=drive,
                args=(emulator.url, emulator.token, ids, per_thread, i * 500, errors),
            )
            for i in range(THREADS)
        ]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        served = emulator.request_log()["total"]

    rate = served / elapsed
    print(
        f"emulator throughput: {rate:.0f} req/s ({served} requests in {elapsed:.2f} s, "
        f"{THREADS} threads, keep-alive; list 100 / get 1 / patch 10)"
    )
    print(f"floor: {FLOOR_REQUESTS_PER_SECOND:.0f} req/s")
    if errors:
        print(f"FAIL: {len(errors)} non-200 responses ({sorted(set(errors))})")
        return 1
    if rate < FLOOR_REQUESTS_PER_SECOND:
        print("FAIL: below the floor")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
