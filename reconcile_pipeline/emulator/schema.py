"""Bases, tables and fields, loaded from a file shaped like Airtable's metadata API."""

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from reconcile_pipeline.emulator.clock import new_id

# Types whose values Airtable computes; writing one is a 422.
COMPUTED_TYPES = frozenset(
    {
        "autoNumber",
        "button",
        "count",
        "createdBy",
        "createdTime",
        "formula",
        "lastModifiedBy",
        "lastModifiedTime",
        "lookup",
        "multipleLookupValues",
        "rollup",
        "aiText",
    }
)


def demo_schema_path() -> Path:
    """The schema shipped with the demo (the Leads table)."""
    resource = resources.files("reconcile_pipeline.demo").joinpath("airtable_schema.json")
    return Path(str(resource))


@dataclass
class FieldSchema:
    id: str
    name: str
    type: str
    options: dict[str, Any] = field(default_factory=dict)
    description: str | None = None

    @property
    def computed(self) -> bool:
        return self.type in COMPUTED_TYPES

    def choice_names(self) -> list[str]:
        return [choice["name"] for choice in self.options.get("choices", [])]

    def add_choice(self, name: str) -> None:
        """What typecast does with an unknown select option: extend the field's choices."""
        self.options.setdefault("choices", []).append(
            {"id": new_id("sel"), "name": name, "color": "grayLight2"}
        )

    def to_meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"id": self.id, "name": self.name, "type": self.type}
        if self.description:
            meta["description"] = self.description
        if self.options:
            meta["options"] = copy.deepcopy(self.options)
        return meta


@dataclass
class TableSchema:
    id: str
    name: str
    primary_field_id: str
    fields: list[FieldSchema]
    description: str | None = None
    views: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reindex()

    def reindex(self) -> None:
        """Rebuild the lookups after fields were renamed, added or removed."""
        self._by_id = {f.id: f for f in self.fields}
        self._by_name = {f.name: f for f in self.fields}

    def field(self, key: str) -> FieldSchema | None:
        """A field by id or by name, as Airtable accepts either in writes and formulas."""
        return self._by_id.get(key) or self._by_name.get(key)

    def to_meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "primaryFieldId": self.primary_field_id,
            "fields": [f.to_meta() for f in self.fields],
            "views": copy.deepcopy(self.views),
        }
        if self.description:
            meta["description"] = self.description
        return meta


@dataclass
class BaseSchema:
    id: str
    name: str
    tables: list[TableSchema]
    permission_level: str = "create"

    def table(self, key: str) -> TableSchema | None:
        for table in self.tables:
            if key in (table.id, table.name):
                return table
        return None

    def to_meta(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "permissionLevel": self.permission_level}


class Schema:
    """Every base the emulator serves."""

    def __init__(self, bases: Iterable[BaseSchema]) -> None:
        self.bases = {base.id: base for base in bases}

    def base(self, base_id: str) -> BaseSchema | None:
        return self.bases.get(base_id)

    @classmethod
    def load(cls, path: Path | str | None = None) -> "Schema":
        source = Path(path) if path is not None else demo_schema_path()
        return cls.from_dict(json.loads(source.read_text(encoding="utf-8")))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Schema":
        return cls(_parse_base(base) for base in data["bases"])


def _parse_base(data: dict[str, Any]) -> BaseSchema:
    return BaseSchema(
        id=data["id"],
        name=data.get("name", data["id"]),
        permission_level=data.get("permissionLevel", "create"),
        tables=[_parse_table(table) for table in data.get("tables", [])],
    )


def _parse_table(data: dict[str, Any]) -> TableSchema:
    fields = [
        FieldSchema(
            id=f["id"],
            name=f["name"],
            type=f["type"],
            # Deep-copied so typecast adding choices never touches the caller's dict.
            options=copy.deepcopy(f.get("options") or {}),
            description=f.get("description"),
        )
        for f in data["fields"]
    ]
    return TableSchema(
        id=data["id"],
        name=data["name"],
        primary_field_id=data.get("primaryFieldId", fields[0].id),
        fields=fields,
        description=data.get("description"),
        views=list(data.get("views", [])),
    )
