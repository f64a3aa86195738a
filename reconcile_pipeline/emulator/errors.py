"""Airtable's error responses, as exceptions the request handlers raise.

The shapes copy api.airtable.com: most errors are ``{"error": {"type", "message"}}``, a missing
record or route is the bare ``{"error": "NOT_FOUND"}``, and a 429 uses the ``{"errors": [...]}``
list form.
"""

from typing import Any


class ApiError(Exception):
    """An HTTP error response: status code plus the JSON body Airtable would send."""

    def __init__(self, status: int, error_type: str, message: str | None = None) -> None:
        super().__init__(f"{status} {error_type}: {message}")
        self.status = status
        self.error_type = error_type
        self.message = message
        self.limit: str | None = None  # for a 429: "token", "base" or "injected" (request log)

    def body(self) -> dict[str, Any]:
        if self.error_type == "RATE_LIMIT_REACHED":
            return {"errors": [{"error": self.error_type, "message": self.message}]}
        if self.message is None:
            return {"error": self.error_type}
        return {"error": {"type": self.error_type, "message": self.message}}


def not_found() -> ApiError:
    return ApiError(404, "NOT_FOUND")


def unprocessable(error_type: str, message: str) -> ApiError:
    return ApiError(422, error_type, message)


def invalid_request(
    message: str = "Invalid request: parameter validation failed. Check your request data.",
) -> ApiError:
    return ApiError(422, "INVALID_REQUEST_UNKNOWN", message)


def unknown_field(name: str) -> ApiError:
    return ApiError(422, "UNKNOWN_FIELD_NAME", f'Unknown field name: "{name}"')


def invalid_value(field_name: str, detail: str) -> ApiError:
    return ApiError(
        422,
        "INVALID_VALUE_FOR_COLUMN",
        f'Field "{field_name}" cannot accept the provided value: {detail}',
    )


def rate_limited(limit: str | None = None) -> ApiError:
    """Airtable's 429 (the same body whether the base's or the token owner's limit refused)."""
    error = ApiError(429, "RATE_LIMIT_REACHED", "Rate limit exceeded. Please try again later")
    error.limit = limit
    return error
