"""The HTTP transport under pyairtable: retry policy and per-attempt pacing and counting.

urllib3 runs the retry loop inside one adapter ``send``, so the adapter paces the first
attempt and `AirtableRetry.sleep` paces every re-send: every HTTP attempt, retries included,
goes through the shared per-base pacer and is counted, and each attempt's completion is
reported to the pacer (which anchors its windows on completions).
"""

import logging
import threading
from collections.abc import Callable
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from reconcile_pipeline.airtable.pacing import RequestPacer

RETRY_STATUSES = (429, 500, 502, 503, 504)
_ALL_METHODS = frozenset({"GET", "POST", "PATCH", "PUT", "DELETE"})
_current = threading.local()  # the path of the request this thread is sending


def _sending_read() -> bool:
    path = getattr(_current, "path", None) or ""
    return path.split("?", 1)[0].endswith("/listRecords")


CONNECT_RETRIES = 3


class AirtableRetry(Retry):
    """Retries that survive Airtable's 30-second block without ever duplicating a create.

    - Backoff ``backoff_factor * 2**(n-1)`` capped at ``backoff_max`` (1, 2, 4, 8, 16, 30 s by
      default: six retries outlast the block); a Retry-After header wins when present.
    - Retries 429 and 500/502/503/504. A 429 means Airtable rejected the request unprocessed,
      so any method may repeat it; a 5xx may come after the work was done, so only reads
      (GET, POST ``…/listRecords``) and idempotent writes (PATCH/PUT/DELETE) repeat it, never
      a POST create.
    - Never re-sends after a read error (``read=False``): the request may have been applied.
    - A connection that cannot be made is retried three times only (see `build`).
    """

    def __init__(
        self,
        *args: Any,
        pacer: RequestPacer | None = None,
        on_attempt: Callable[[], None] | None = None,
        logger: logging.Logger | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.pacer = pacer
        self.on_attempt = on_attempt
        self.logger = logger or logging.getLogger(__name__)

    @classmethod
    def build(
        cls,
        max_retries: int,
        backoff_factor: float,
        backoff_max: float,
        pacer: RequestPacer | None,
        on_attempt: Callable[[], None] | None,
        logger: logging.Logger | None,
    ) -> "AirtableRetry":
        return cls(
            total=max_retries,
            # A refused or failed connection is retried briefly (1 + 2 + 4 s): Airtable's block
            # answers 429, it does not refuse connections, so one that keeps refusing is a wrong
            # AIRTABLE_ENDPOINT_URL or a network down, said at once rather than after two minutes
            # (the next run starts where this one stopped: nothing is lost).
            connect=min(max_retries, CONNECT_RETRIES),
            read=False,
            status=max_retries,
            other=0,
            redirect=0,
            allowed_methods=_ALL_METHODS,
            status_forcelist=RETRY_STATUSES,
            backoff_factor=backoff_factor,
            backoff_max=backoff_max,
            # When retries run out, hand back Airtable's last answer (429/5xx body) instead
            # of urllib3's MaxRetryError, so callers see the real error type.
            raise_on_status=False,
            respect_retry_after_header=True,
            pacer=pacer,
            on_attempt=on_attempt,
            logger=logger,
        )

    def new(self, **kw: Any) -> "AirtableRetry":
        retry = super().new(**kw)
        retry.pacer, retry.on_attempt, retry.logger = self.pacer, self.on_attempt, self.logger
        return retry

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if not super().is_retry(method, status_code, has_retry_after):
            return False
        if method.upper() == "POST" and status_code != 429 and not _sending_read():
            return False
        return True

    def get_backoff_time(self) -> float:
        # urllib3 waits 0 s before the first retry; against a 429 that only buys another 429.
        attempts = sum(1 for entry in self.history if entry.redirect_location is None)
        if attempts == 0:
            return 0.0
        return float(min(self.backoff_max, self.backoff_factor * 2 ** (attempts - 1)))

    def sleep(self, response: Any = None) -> None:
        status = getattr(response, "status", None)
        self.logger.info(
            "Airtable request failed (%s); retry %d after backoff",
            status if status is not None else "connection error",
            len(self.history),
        )
        if self.pacer is not None:
            self.pacer.done()  # the failed attempt has been answered
        super().sleep(response)
        if self.pacer is not None:
            self.pacer.acquire()
        if self.on_attempt is not None:
            self.on_attempt()


class PacedAdapter(HTTPAdapter):
    """Paces and counts the first attempt of each request (retries: `AirtableRetry.sleep`)."""

    def __init__(
        self,
        retry: AirtableRetry,
        pacer: RequestPacer | None,
        on_attempt: Callable[[], None],
    ) -> None:
        super().__init__(max_retries=retry)
        self.pacer = pacer
        self.on_attempt = on_attempt

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        _current.path = request.path_url
        try:
            if self.pacer is not None:
                self.pacer.acquire()
            self.on_attempt()
            return super().send(request, *args, **kwargs)
        finally:
            if self.pacer is not None:
                self.pacer.done()
            _current.path = None
