"""The run-wide exclusion per Airtable base: a PostgreSQL session advisory lock (no Dagster).

Every run of a base, however it was launched (the daemon's queue, the UI, `reconcile backfill`,
the demo), holds this lock from the start of its work to its end, so two runs of one base never
overlap, and their Airtable requests never add up past the base's 5 requests/s (each process
paces only itself). The queue's per-base limits keep queued runs from even starting; this lock is
what also holds back runs that skip the queue (`execute_in_process`).

It is a *session* lock on a connection of its own: PostgreSQL drops it when the session ends, so a
run whose process is killed (SIGKILL, OOM, a lost host's connection once TCP gives up) releases
the base without anyone cleaning up. The session's `application_name` names the run holding it,
so a waiting run can say whom it waits for.

The key is derived from the base id in a namespace of its own, distinct from the engine's push
lock (`hashtextextended('reconcile:<base>:<table>')`), so the two never collide.
"""

import hashlib
from collections.abc import Callable

import psycopg
from sqlalchemy.engine import make_url

from reconcile_pipeline.db import urls

KEY_NAMESPACE = "reconcile/base-run:"
APPLICATION_NAME_PREFIX = "reconcile run "
# How often a waiting run says it is still waiting.
DEFAULT_REPORT_EVERY_SECONDS = 60.0


def lock_key(base_id: str) -> int:
    """The advisory lock key (a signed 64-bit integer) of a base."""
    digest = hashlib.sha256(f"{KEY_NAMESPACE}{base_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _libpq_url(database_url: str) -> str:
    return (
        make_url(urls.app_url(database_url))
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )


# pg_locks shows a bigint advisory key as classid (high 32 bits) and objid (low 32 bits).
_HOLDERS_SQL = """
SELECT a.pid, a.application_name
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted = %(granted)s
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND ((l.classid::bigint << 32) | l.objid::bigint) = %(key)s
ORDER BY a.pid
"""


def sessions_on(conn: psycopg.Connection, base_id: str, *, granted: bool) -> list[tuple[int, str]]:
    """(backend pid, application_name) of the sessions holding (granted) or waiting for the
    base's lock in the connection's database."""
    rows = conn.execute(_HOLDERS_SQL, {"granted": granted, "key": lock_key(base_id)}).fetchall()
    return [(int(pid), str(name or "")) for pid, name in rows]


def describe_holder(application_name: str) -> str:
    if application_name.startswith(APPLICATION_NAME_PREFIX):
        return f"run {application_name.removeprefix(APPLICATION_NAME_PREFIX)}"
    return f"session {application_name!r}" if application_name else "another session"


class BaseRunLock:
    """Hold the base's lock on a dedicated connection between `acquire` and `release`.

    Args:
        database_url: the application database (any PostgreSQL URL form this project accepts).
        base_id: the Airtable base.
        owner: what holds it, shown to waiters; a run id.
        on_wait: called with a message before waiting and every `report_every_seconds` while
            the lock is held by someone else.
    """

    def __init__(
        self,
        database_url: str,
        base_id: str,
        owner: str,
        on_wait: Callable[[str], None] | None = None,
        report_every_seconds: float = DEFAULT_REPORT_EVERY_SECONDS,
        connect_timeout_seconds: int = 10,
    ) -> None:
        self.base_id = base_id
        self.owner = owner
        self.key = lock_key(base_id)
        self._url = database_url
        self._on_wait = on_wait or (lambda message: None)
        self._report_every_ms = max(1, int(report_every_seconds * 1000))
        self._connect_timeout = connect_timeout_seconds
        self._conn: psycopg.Connection | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None

    def acquire(self) -> None:
        """Take the lock, waiting (and saying so) while another session holds it."""
        if self._conn is not None:
            return
        conn = psycopg.connect(
            _libpq_url(self._url),
            autocommit=True,
            # PostgreSQL keeps 63 bytes; a run id (36) fits with the prefix.
            application_name=f"{APPLICATION_NAME_PREFIX}{self.owner}"[:63],
            connect_timeout=self._connect_timeout,
        )
        try:
            if not conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()[0]:
                self._wait(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _wait(self, conn: psycopg.Connection) -> None:
        conn.execute(f"SET lock_timeout = {self._report_every_ms}")
        waited_reports = 0
        while True:
            holders = sessions_on(conn, self.base_id, granted=True)
            held_by = ", ".join(describe_holder(name) for _, name in holders) or "another run"
            verb = "Waiting" if waited_reports == 0 else "Still waiting"
            self._on_wait(
                f"{verb} for another run of base {self.base_id} to finish (held by {held_by}); "
                "one run per base at a time keeps Airtable's 5 requests/s per base"
            )
            try:
                conn.execute("SELECT pg_advisory_lock(%s)", (self.key,))
                break
            except psycopg.errors.LockNotAvailable:
                waited_reports += 1
        conn.execute("RESET lock_timeout")

    def release(self, before_handover: Callable[[], object] | None = None) -> None:
        """Give the lock back and close the connection (closing alone would release it).

        `before_handover` runs first when another run waits for the base: that run starts
        its requests the moment it gets the lock, and it paces only its own (see
        `airtable.pacing.wait_until_quiet`)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if before_handover is not None and sessions_on(conn, self.base_id, granted=False):
                before_handover()
            conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        except psycopg.Error:
            pass  # the session is gone, and the lock with it
        finally:
            conn.close()

    def __enter__(self) -> "BaseRunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
