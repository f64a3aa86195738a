"""The project file as the code location sees it: read once when the location loads (the only
file read at import: it says which clients and assets exist), never the environment's secrets.

One code location serves every client of the file: per client its own assets (key prefix and
group named after the client), checks, jobs, schedules, Airtable resource and concurrency pool.
"""

import functools
from dataclasses import dataclass

from reconcile_pipeline.config.load import Project, load
from reconcile_pipeline.config.model import ClientConfig
from reconcile_pipeline.engine.mapping import TableMapping


@dataclass(frozen=True)
class ClientSpec:
    """One client of the project file: one Airtable base, its token's variable, its tables."""

    key: str
    config: ClientConfig
    mappings: tuple[TableMapping, ...]
    # Every client of the project file in this client's Airtable workspace (they share its
    # monthly API calls); empty: the client alone.
    workspace_clients: tuple[str, ...] = ()

    @property
    def workspace(self) -> str:
        return self.config.workspace or self.key

    @property
    def workspace_members(self) -> tuple[str, ...]:
        return self.workspace_clients or (self.key,)

    @property
    def base_id(self) -> str:
        return self.config.base_id

    @property
    def token_env(self) -> str:
        return self.config.token_env

    @property
    def label(self) -> str:
        """How people call the client (the file's `name`, else its key)."""
        return self.config.name or self.key


@functools.cache
def project() -> Project:
    return load()


@functools.cache
def clients() -> tuple[ClientSpec, ...]:
    """Every client of the project file, in the file's order."""
    return specs_of(project())


def specs_of(loaded: Project) -> tuple[ClientSpec, ...]:
    """The clients of a loaded project file."""
    declared = loaded.config.clients
    workspaces = {key: client.workspace or key for key, client in declared.items()}
    return tuple(
        ClientSpec(
            key,
            client,
            tuple(loaded.mappings(key)),
            tuple(k for k in declared if workspaces[k] == workspaces[key]),
        )
        for key, client in declared.items()
    )


def client_by_key(key: str) -> ClientSpec:
    for spec in clients():
        if spec.key == key:
            return spec
    raise KeyError(f"the project file {project().path} declares no client {key!r}")


def client_of_base(base_id: str) -> ClientSpec | None:
    return next((spec for spec in clients() if spec.base_id == base_id), None)


def base_id() -> str:
    """The base of the project file's only client (raises naming --client with several)."""
    return project().client()[1].base_id
