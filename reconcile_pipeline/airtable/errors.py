"""Errors raised by the Airtable client, with messages that never contain the token."""

import json
from collections.abc import Iterable
from typing import Any

import requests
from urllib3.exceptions import MaxRetryError, NewConnectionError

from reconcile_pipeline.airtable.secrets import redact


class AirtableError(Exception):
    """Base class of this package's errors."""


class AirtableConfigError(AirtableError):
    """The configuration cannot work (bad token, unknown base or table); says what to set."""


class AirtableMappingError(AirtableConfigError):
    """The table's fields do not match what the mapping expects.

    Attributes:
        problems: one line per missing field or wrong type.
    """

    def __init__(self, message: str, problems: list[str]) -> None:
        super().__init__(message)
        self.problems = problems


class AirtableRequestError(AirtableError, requests.RequestException):
    """A failed Airtable request, translated from the requests/pyairtable error.

    Attributes:
        status_code: the HTTP status, or None when no response arrived.
        error_type: Airtable's error type (``INVALID_VALUE_FOR_COLUMN``, ``NOT_FOUND``,
            ``RATE_LIMIT_REACHED``…) or the transport error's class name.
        message: Airtable's message (or the transport error's), token redacted.
        outcome_unknown: True when the request may have reached Airtable but no answer came
            back (dropped connection, read timeout): a write may or may not have applied.
    """

    def __init__(
        self,
        status_code: int | None,
        error_type: str,
        message: str,
        outcome_unknown: bool = False,
    ) -> None:
        status = status_code if status_code is not None else "no response"
        super().__init__(f"Airtable request failed ({status}): {error_type}: {message}")
        self.status_code = status_code
        self.error_type = error_type
        self.message = message
        self.outcome_unknown = outcome_unknown

    @property
    def is_unprocessable(self) -> bool:
        """A 422: Airtable rejected the content (bad value, unknown field, bad formula)."""
        return self.status_code == 422

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            (self.status_code, self.error_type, self.message, self.outcome_unknown),
        )


def translate_error(exc: Exception, secrets: Iterable[str] = ()) -> AirtableRequestError:
    """Turn a requests/pyairtable exception into an `AirtableRequestError`.

    Every form of each of ``secrets`` (the token: as given, stripped, repr- or JSON-escaped,
    URL-encoded) is replaced by ``***`` in the message: requests quotes a header value it
    refuses (repr-escaped), and a proxy's error page could echo the request. Raise the result
    ``from None``: the original exception's text is unredacted.
    """
    secrets = tuple(secrets)
    if isinstance(exc, AirtableRequestError):
        return AirtableRequestError(
            exc.status_code,
            exc.error_type,
            _redact(exc.message, secrets),
            outcome_unknown=exc.outcome_unknown,
        )
    response = getattr(exc, "response", None)
    if response is not None:
        error_type, message = _parse_error_body(response)
        return AirtableRequestError(response.status_code, error_type, _redact(message, secrets))
    return AirtableRequestError(
        None,
        type(exc).__name__,
        _redact(str(exc), secrets),
        outcome_unknown=_may_have_been_sent(exc),
    )


def _parse_error_body(response: requests.Response) -> tuple[str, str]:
    try:
        body = response.json()
    except (ValueError, json.JSONDecodeError):
        return f"HTTP_{response.status_code}", (response.text or response.reason or "")[:500]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("type", f"HTTP_{response.status_code}")), str(error.get("message", ""))
    if isinstance(error, str):
        return error, str(body.get("message", response.reason or ""))
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return str(errors[0].get("error", "")), str(errors[0].get("message", ""))
    return f"HTTP_{response.status_code}", str(body)[:500]


def _may_have_been_sent(exc: Exception) -> bool:
    if isinstance(exc, requests.ConnectTimeout):
        return False
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError) and isinstance(reason.reason, NewConnectionError):
        return False
    return isinstance(exc, requests.ConnectionError | requests.Timeout)


def _redact(text: str, secrets: Iterable[str]) -> str:
    return redact(text, secrets)
