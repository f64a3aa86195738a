"""Check a mapping against both sides before syncing, and report Airtable field coverage."""

import dataclasses
from dataclasses import dataclass

from reconcile_pipeline.engine.mapping import (
    AIRTABLE_TYPES,
    POSTGRES_TYPES,
    FieldKind,
    TableMapping,
)
from reconcile_pipeline.engine.repository import Repository


class MappingError(ValueError):
    """The mapping does not match a side; the message names every problem at once."""


@dataclass(frozen=True)
class Coverage:
    mapped: list[str]
    ignored: list[str]
    unmapped: list[str]

    def summary(self) -> str:
        total = len(self.mapped) + len(self.ignored) + len(self.unmapped)
        text = f"{len(self.mapped)}/{total} Airtable fields mapped"
        if self.unmapped:
            text += f"; not synced: {', '.join(self.unmapped)}"
        return text


def validate_postgres(repo: Repository) -> None:
    mapping = repo.mapping
    columns = repo.postgres_column_types()
    where = f"{mapping.postgres_schema}.{mapping.postgres_table}"
    if not columns:
        raise MappingError(f"PostgreSQL table {where} does not exist (run `reconcile db upgrade`)")
    problems = []
    if mapping.key_column not in columns:
        problems.append(f"key column {mapping.key_column} is missing")
    soft_delete = mapping.soft_delete_column
    if soft_delete is not None and columns.get(soft_delete) != "boolean":
        problems.append(
            f"soft-delete column {soft_delete} is "
            f"{columns.get(soft_delete, 'missing')}, expected boolean"
        )
    for spec in mapping.fields:
        found = columns.get(spec.column)
        if found is None:
            problems.append(f"column {spec.column} is missing")
        elif found not in POSTGRES_TYPES[spec.kind]:
            problems.append(
                f"column {spec.column} is {found}, not compatible with {spec.kind.value} "
                f"(expected one of {sorted(POSTGRES_TYPES[spec.kind])})"
            )
    if problems:
        raise MappingError(
            f"Mapping '{mapping.name}' does not match {where}: " + "; ".join(problems)
        )


def expected_airtable_types(mapping: TableMapping) -> dict[str, set[str]]:
    expected = {spec.airtable_name: set(AIRTABLE_TYPES[spec.kind]) for spec in mapping.fields}
    if mapping.modified_time_field:
        expected[mapping.modified_time_field] = {"lastModifiedTime"}
    return expected


def coverage(mapping: TableMapping, airtable_fields: list[dict]) -> Coverage:
    """Which of the table's Airtable fields are mapped, deliberately ignored, or not synced
    (fields matched by id or by name, shown by name)."""
    mapped_keys = {spec.airtable_name for spec in mapping.fields}
    if mapping.modified_time_field:
        mapped_keys.add(mapping.modified_time_field)
    ignored_keys = set(mapping.ignored_airtable_fields)

    def matches(field: dict, keys: set[str]) -> bool:
        return field.get("id") in keys or field.get("name") in keys

    return Coverage(
        mapped=[f["name"] for f in airtable_fields if matches(f, mapped_keys)],
        ignored=[f["name"] for f in airtable_fields if matches(f, ignored_keys)],
        unmapped=[
            f["name"]
            for f in airtable_fields
            if not matches(f, mapped_keys) and not matches(f, ignored_keys)
        ],
    )


def airtable_problems(mapping: TableMapping, schema: dict) -> list[str]:
    """Every mapped field Airtable no longer has, or has with a type we cannot convert."""
    fields = schema.get("fields", [])
    by_key = {f["id"]: f for f in fields} | {f["name"]: f for f in fields}
    problems = []
    for key, types in expected_airtable_types(mapping).items():
        spec = next((s for s in mapping.fields if s.airtable_name == key), None)
        shown = spec.display if spec else key
        found = by_key.get(key)
        if found is None:
            problems.append(
                f"field {shown} is not in the table (deleted, or a wrong id): remove it from the "
                "project file or map another field"
            )
        elif found["type"] not in types:
            problems.append(
                f"field {shown} is now {found['type']} in Airtable, expected "
                f"{' or '.join(sorted(types))}: change its type in the project file"
            )
    return problems


def validate_mapping(repo: Repository, airtable) -> Coverage:
    """Fail fast with one clear error per side; return the coverage report."""
    validate_postgres(repo)
    schema = airtable.table_schema()
    problems = airtable_problems(repo.mapping, schema)
    if problems:
        raise MappingError(
            f"Airtable table {schema.get('name')} ({schema.get('id')}) does not match the "
            f"mapping '{repo.mapping.name}': " + "; ".join(problems)
        )
    return coverage(repo.mapping, schema.get("fields", []))


def schema_choices(schema: dict) -> dict[str, frozenset[str]]:
    """Select options per field id and name, from Airtable's schema."""
    choices: dict[str, frozenset[str]] = {}
    for field in schema.get("fields", []):
        if field.get("type") in ("singleSelect", "multipleSelects"):
            names = frozenset(
                c["name"] for c in (field.get("options") or {}).get("choices", []) if "name" in c
            )
            choices[field["id"]] = names
            choices[field["name"]] = names
    return choices


def resolve_mapping(mapping: TableMapping, schema: dict) -> TableMapping:
    """The mapping with select options from Airtable's schema at run time (DESIGN §3.10): an
    option added in Airtable is accepted; a project file's `choices` restrict them further."""
    options = schema_choices(schema)
    fields = []
    for spec in mapping.fields:
        found = options.get(spec.airtable_name)
        if spec.kind is FieldKind.SELECT and found is not None:
            allowed = found if spec.choices is None else spec.choices & found
            spec = dataclasses.replace(spec, choices=frozenset(allowed))
        fields.append(spec)
    return dataclasses.replace(mapping, fields=tuple(fields))
