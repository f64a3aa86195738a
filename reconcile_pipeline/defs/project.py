"""The project file as the code location sees it: read once when the location loads (the only
file read at import: it says which assets exist), never the environment's secrets."""

import functools

from reconcile_pipeline.config.load import Project, load
from reconcile_pipeline.config.model import ClientConfig
from reconcile_pipeline.engine.mapping import TableMapping


@functools.cache
def project() -> Project:
    return load()


def client() -> tuple[str, ClientConfig]:
    """The project's client (one per deployment until multi-client support lands)."""
    return project().client()


def base_id() -> str:
    return client()[1].base_id


def mappings() -> list[TableMapping]:
    return project().mappings()
