"""Airtable access: `client.AirtableClient` (plain Python) and `resource.AirtableResource`.

The resource is not imported here so the client stays usable without loading Dagster; nor is
the client until it is asked for (pyairtable and pydantic take a third of a second to import), so
`reconcile_pipeline.airtable.errors` and `.secrets` load on their own.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconcile_pipeline.airtable.client import AirtableClient
    from reconcile_pipeline.airtable.errors import (
        AirtableConfigError,
        AirtableError,
        AirtableMappingError,
        AirtableRequestError,
        translate_error,
    )

__all__ = [
    "AirtableClient",
    "AirtableConfigError",
    "AirtableError",
    "AirtableMappingError",
    "AirtableRequestError",
    "translate_error",
]


def __getattr__(name: str) -> Any:
    if name == "AirtableClient":
        from reconcile_pipeline.airtable.client import AirtableClient

        return AirtableClient
    if name in __all__:
        from reconcile_pipeline.airtable import errors

        return getattr(errors, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
