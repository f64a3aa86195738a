"""Airtable access: `client.AirtableClient` (plain Python) and `resource.AirtableResource`.

The resource is not imported here so the client stays usable without loading Dagster.
"""

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
