"""Find, read and validate the project file; build the engine's mappings from it.

Errors name the file, the line and the key, and say what to write. No Dagster here.
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from reconcile_pipeline.config.model import (
    ClientConfig,
    ProjectConfig,
    TableConfig,
    dependency_order,
    portal_client_id,
)
from reconcile_pipeline.engine.mapping import FieldSpec, LinkTarget, TableMapping

CONFIG_ENV = "RECONCILE_CONFIG"
DEFAULT_FILE = "reconcile.yaml"
DEMO_FILE = Path(__file__).resolve().parent.parent / "demo" / "reconcile.yaml"


class ConfigError(ValueError):
    """The project file is missing or wrong; the message says where and what to write."""


def locate(explicit: str | os.PathLike | None = None) -> Path:
    """The project file: `explicit`, else $RECONCILE_CONFIG, else ./reconcile.yaml, else the
    demo's file shipped with the package (the embedded default)."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"Project file {path} does not exist.")
        return path
    configured = os.environ.get(CONFIG_ENV)
    if configured:
        path = Path(configured)
        if not path.is_file():
            raise ConfigError(
                f"{CONFIG_ENV}={configured} does not name a file: set it to your "
                "reconcile.yaml (or unset it to use ./reconcile.yaml)."
            )
        return path
    local = Path.cwd() / DEFAULT_FILE
    if local.is_file():
        return local
    return DEMO_FILE


def _line_of(node: yaml.Node | None, path: Sequence[Any]) -> int | None:
    """The 1-based line of the YAML node at `path` (the deepest node found)."""
    line = None
    for part in path:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            match = None
            for key, value in node.value:
                if key.value == str(part):
                    match = value
                    line = key.start_mark.line + 1
                    break
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part] if part < len(node.value) else None
        else:
            node = None
    if node is not None:
        line = node.start_mark.line + 1
    return line


def parse(text: str, source: str = DEFAULT_FILE) -> ProjectConfig:
    """Validate the project file's text; errors say file:line, the key and the problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ConfigError(f"{where}: not valid YAML ({getattr(error, 'problem', error)})") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping with `clients:` at the top (see README "
            "'The project file')."
        )
    try:
        return ProjectConfig.model_validate(data)
    except ValidationError as error:
        root = yaml.compose(text)  # the nodes' lines, for the message (it parsed above)
        lines = []
        for problem in error.errors():
            loc = [p for p in problem["loc"] if not str(p).startswith("function-")]
            line = _line_of(root, loc)
            key = ".".join(str(p) for p in loc) or "(top level)"
            message = problem["msg"].removeprefix("Value error, ")
            if problem["type"] == "extra_forbidden":
                message = "unknown key (check its spelling; see README 'The project file')"
            elif problem["type"] == "missing":
                message = "required key is missing"
            where = f"{source}:{line}" if line else source
            lines.append(f"{where}: {key}: {message}")
        raise ConfigError("\n".join(lines)) from None


# The configs this process parsed, by (source, text): one command reads the project file in
# several places (the command, the migrations, the Airtable target, the definitions). The text is
# read every time, so an edited file is parsed again.
_PARSED: dict[tuple[str, str], ProjectConfig] = {}
_PARSED_MAX = 8


def load(explicit: str | os.PathLike | None = None) -> "Project":
    path = locate(explicit)
    text = path.read_text(encoding="utf-8")
    key = (str(path), text)
    config = _PARSED.get(key)
    if config is None:
        config = parse(text, str(path))  # a file with errors raises here every time
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.pop(next(iter(_PARSED)))
        _PARSED[key] = config
    return Project(path=path, config=config)


def table_mapping(
    key: str,
    table: TableConfig,
    tables: dict[str, TableConfig] | None = None,
    *,
    client: str = "default",
    client_value: str | None = None,
) -> TableMapping:
    """The engine's mapping for one configured table of `client`: fields addressed by Airtable
    field id; `tables` (the client's) locate the rows a link field points to; `client_value`
    is the client's portal_client_id (default: the client's key), written to the table's
    client_column when it has one."""

    def target(name: str | None) -> LinkTarget | None:
        if name is None or tables is None:
            return None
        linked = tables[name].postgres
        return LinkTarget(linked.schema_name, linked.table, linked.key_column)

    return TableMapping(
        name=key,
        airtable_table=table.airtable_table,
        airtable_table_name=table.name,
        postgres_table=table.postgres.table,
        postgres_schema=table.postgres.schema_name,
        key_column=table.postgres.key_column,
        soft_delete_column=table.postgres.soft_delete_column,
        modified_time_field=table.modified_time_field,
        ignored_airtable_fields=frozenset(table.ignored_fields),
        fields=tuple(
            FieldSpec(
                airtable_name=field_id,
                label=spec.name,
                column=spec.column,
                kind=spec.type,
                owner=spec.owner,
                required=spec.required,
                policy=spec.policy,
                max_length=spec.max_length,
                choices=frozenset(spec.choices) if spec.choices is not None else None,
                links_to=spec.links_to,
                link_target=target(spec.links_to),
            )
            for field_id, spec in table.fields.items()
        ),
        fields_by_id=True,
        client=client,
        client_column=table.postgres.client_column,
        client_value=(
            (client_value if client_value is not None else client)
            if table.postgres.client_column is not None
            else None
        ),
    )


@dataclass(frozen=True)
class Project:
    path: Path
    config: ProjectConfig

    @property
    def is_demo(self) -> bool:
        return self.path.resolve() == DEMO_FILE

    def client(self, key: str | None = None) -> tuple[str, ClientConfig]:
        """One client: `key`, or the only one declared."""
        clients = self.config.clients
        if key is None:
            if len(clients) != 1:
                raise ConfigError(
                    f"{self.path} declares {len(clients)} clients ({', '.join(clients)}); "
                    "name one (--client)."
                )
            key = next(iter(clients))
        if key not in clients:
            raise ConfigError(f"{self.path} declares no client {key!r} ({', '.join(clients)}).")
        return key, clients[key]

    def mappings(self, client: str | None = None) -> list[TableMapping]:
        """The client's tables as engine mappings, each after the tables it links to."""
        client_key, declared = self.client(client)
        return [
            table_mapping(
                key,
                declared.tables[key],
                declared.tables,
                client=client_key,
                client_value=portal_client_id(client_key, declared),
            )
            for key in dependency_order(declared.tables)
        ]

    def client_keys(self) -> list[str]:
        """Every client's key, in the file's order."""
        return list(self.config.clients)

    def all_mappings(self) -> list[TableMapping]:
        """Every table of every client, each client's in dependency order."""
        return [m for key in self.config.clients for m in self.mappings(key)]
