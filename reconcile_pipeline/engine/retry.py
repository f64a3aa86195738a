"""Database failures the engine survives or reports without leaking record contents.

- A batch that meets a deadlock, a serialization failure or a lock timeout (we wait at most
  `repository.LOCK_TIMEOUT` for a row the portal holds) is rolled back and retried: ordinary
  portal activity must never fail a run (DESIGN §3.4).
- Any other database error leaves the engine as `ReconcileDatabaseError`, carrying PostgreSQL's
  SQLSTATE and primary message only: no bound parameters, no DETAIL or CONTEXT lines, which can
  quote record contents (DESIGN §3.8: failures name records by id, never by their contents).
"""

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEADLOCK = "40P01"
SERIALIZATION_FAILURE = "40001"
LOCK_NOT_AVAILABLE = "55P03"
RETRYABLE = frozenset({DEADLOCK, SERIALIZATION_FAILURE, LOCK_NOT_AVAILABLE})
ATTEMPTS = 8


class ReconcileDatabaseError(RuntimeError):
    """A database error, described without record contents."""


def sqlstate(error: BaseException) -> str | None:
    original = getattr(error, "orig", None)
    return getattr(original, "sqlstate", None)


def retry_on_contention(
    work: Callable[[], T], *, what: str, attempts: int = ATTEMPTS, sleep=time.sleep
) -> T:
    """Run `work` (one whole transaction), again after a deadlock, serialization failure or
    lock timeout, with a growing jittered pause; the last failure propagates."""
    for attempt in range(1, attempts + 1):
        try:
            return work()
        except DBAPIError as error:
            code = sqlstate(error)
            if code not in RETRYABLE or attempt == attempts:
                raise
            pause = min(0.05 * 2**attempt, 2.0) * random.uniform(0.5, 1.0)
            logger.warning(
                "%s met concurrent portal writes (SQLSTATE %s); retrying in %.2f s (%d/%d)",
                what,
                code,
                pause,
                attempt,
                attempts - 1,
            )
            sleep(pause)
    raise AssertionError("unreachable")


def describe_database_error(error: DBAPIError) -> str:
    original = getattr(error, "orig", None)
    diag = getattr(original, "diag", None)
    primary = getattr(diag, "message_primary", None) or type(original or error).__name__
    code = sqlstate(error) or "unknown"
    return f"PostgreSQL error {code}: {primary}"


def without_contents(stage: str, work: Callable[[], T]) -> T:
    """Run `work`; a database error leaves as ReconcileDatabaseError with SQLSTATE and primary
    message only, raised outside the handler so the original (whose text can quote a row) is
    neither its cause nor its context in what Dagster records."""
    message = None
    try:
        return work()
    except DBAPIError as error:
        message = describe_database_error(error)
    raise ReconcileDatabaseError(
        f"{stage} failed: {message}. Nothing of the failed transaction was kept; the next run "
        "retries it."
    )
