"""Two runs of one base never overlap, however they were launched: every run holds the base's
run-wide PostgreSQL advisory lock from its resources' setup to their teardown.

Two `reconcile backfill` processes (in-process runs, which skip Dagster's queue) against one
emulator enforcing Airtable's 5 requests/s: each process paces only itself, so overlapping they
would draw 429s. The first run is slowed by emulator latency until the second is seen waiting on
the lock; then both finish, one after the other, and the emulator answered no 429.
"""

import datetime as dt
import time
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from reconcile_pipeline.db.base_lock import BaseRunLock, lock_key, sessions_on
from reconcile_pipeline.emulator.server import run_emulator
from reconcile_pipeline_tests.dagster.cli import BASE, TABLE, reconcile_env, start_reconcile_cli

RECORDS = 600  # six pages per pull: enough requests that two runs at once would pass 5/s


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def wait_for(condition, what: str, deadline_seconds: float = 180.0) -> None:
    """Poll until `condition()` holds (a wait for an event, not a timing assertion)."""
    deadline = time.monotonic() + deadline_seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def step_span(instance: dg.DagsterInstance, run_id: str) -> tuple[float, float]:
    """(first step start, last step end) of a run, from its event log."""
    starts = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)
    ends = instance.all_logs(
        run_id, of_type={dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}
    )
    return min(e.timestamp for e in starts), max(e.timestamp for e in ends)


@pytest.fixture
def emulator():
    with run_emulator(rate_limit=5, penalty_seconds=30) as emulator:
        now = dt.datetime.now(dt.UTC)
        emulator.seed_records(
            BASE,
            TABLE,
            [{"Email": f"lead{i}@example.com", "Status": "New"} for i in range(RECORDS)],
            created_time=now - dt.timedelta(minutes=30),
        )
        yield emulator


@pytest.mark.slow
def test_two_cli_runs_of_one_base_take_turns_and_draw_no_429(
    tmp_path: Path, emulator, database_url, project_dagster_database
) -> None:
    env = reconcile_env(tmp_path / "home", database_url, emulator.url, emulator.token)
    emulator.reset_request_log()
    emulator.set_faults(latency_ms=1500)  # the first run holds the base while we look
    processes = []
    with psycopg.connect(libpq(database_url), autocommit=True) as conn:
        try:
            processes.append(
                start_reconcile_cli(["backfill", "--hours", "1"], env, tmp_path / "a.log")
            )
            wait_for(lambda: sessions_on(conn, BASE, granted=True), "the first run's lock")
            processes.append(
                start_reconcile_cli(["backfill", "--hours", "1"], env, tmp_path / "b.log")
            )
            wait_for(lambda: sessions_on(conn, BASE, granted=False), "the second run to wait")
            emulator.clear_faults()
            codes = [process.wait(timeout=300) for process in processes]
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        wait_for(lambda: sessions_on(conn, BASE, granted=True) == [], "the base to be free")

    logs = {name: (tmp_path / f"{name}.log").read_text() for name in ("a", "b")}
    assert codes == [0, 0], logs
    entries = emulator.request_log()["entries"]
    statuses = [entry["status"] for entry in entries]
    assert statuses.count(429) == 0, [e for e in entries if e["status"] != 200]
    assert statuses.count(200) == len(statuses) > 2 * (RECORDS // 100)
    with dg.DagsterInstance.get() as instance:
        first, second = sorted(instance.get_runs(), key=lambda run: step_span(instance, run.run_id))
        assert first.status == second.status == dg.DagsterRunStatus.SUCCESS
        waiting = [
            entry.user_message
            for entry in instance.all_logs(second.run_id)
            if "Waiting for another run of base" in entry.user_message
        ]
        # The second run's steps began only after the first run's last step had ended.
        assert step_span(instance, first.run_id)[1] <= step_span(instance, second.run_id)[0]
    assert waiting == [
        f"Waiting for another run of base {BASE} to finish (held by run {first.run_id}); one "
        "run per base at a time keeps Airtable's 5 requests/s per base"
    ]


def test_the_lock_is_per_base_and_released_when_the_session_ends(database_url) -> None:
    assert lock_key("appA") != lock_key("appB")
    with psycopg.connect(libpq(database_url), autocommit=True) as conn:
        holder = BaseRunLock(database_url, "appA", owner="run-1")
        holder.acquire()
        other_base = BaseRunLock(database_url, "appB", owner="run-2")
        other_base.acquire()  # another base: no wait
        assert [name for _, name in sessions_on(conn, "appA", granted=True)] == [
            "reconcile run run-1"
        ]
        # A killed process: its session ends without unlocking, and the server, seeing the
        # connection gone, ends the backend and drops its locks.
        holder._conn.close()
        wait_for(lambda: sessions_on(conn, "appA", granted=True) == [], "the session to end")
        messages: list[str] = []
        with BaseRunLock(database_url, "appA", owner="run-3", on_wait=messages.append):
            assert messages == []  # free again: taken without waiting
        other_base.release()


def test_a_waiting_run_gets_the_base_a_pacing_window_after_the_holder_s_last_request(
    database_url,
) -> None:
    """The next run of a base (another process, pacing only its own requests) sends a full
    burst the moment it gets the lock: the holder hands the base over only once its last
    request is a window old, so the two bursts never share Airtable's one-second window."""
    import threading

    from reconcile_pipeline.airtable.pacing import pacer_for, wait_until_quiet

    base = "appHandOver000001"
    pacer = pacer_for("http://handover.invalid", base, 5)
    holder = BaseRunLock(database_url, base, owner="run-1")
    holder.acquire()
    acquired: list[float] = []

    def next_run() -> None:
        with BaseRunLock(database_url, base, owner="run-2"):
            acquired.append(time.monotonic())

    waiter = threading.Thread(target=next_run)
    waiter.start()
    with psycopg.connect(libpq(database_url), autocommit=True) as conn:
        wait_for(lambda: sessions_on(conn, base, granted=False), "the next run to wait")
    pacer.acquire()  # the holder's last request, answered just now
    pacer.done()
    answered = time.monotonic()

    holder.release(before_handover=lambda: wait_until_quiet(base))
    waiter.join(timeout=30)

    assert acquired and acquired[0] >= answered + pacer.window


def test_a_base_nobody_waits_for_is_released_at_once(database_url) -> None:
    handed_over: list[bool] = []
    with BaseRunLock(database_url, "appNobodyWaits001", owner="run-1") as holder:
        pass
    holder.release(before_handover=lambda: handed_over.append(True))  # already released

    lock = BaseRunLock(database_url, "appNobodyWaits001", owner="run-2")
    lock.acquire()
    lock.release(before_handover=lambda: handed_over.append(True))

    assert handed_over == []  # no one waited: no pause at the end of the run
