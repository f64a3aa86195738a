"""Check a mapping against both sides before syncing, and report Airtable field coverage."""

from dataclasses import dataclass

from reconcile_pipeline.engine.mapping import AIRTABLE_TYPES, POSTGRES_TYPES, TableMapping
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


def coverage(mapping: TableMapping, airtable_field_names: list[str]) -> Coverage:
    mapped_names = {spec.airtable_name for spec in mapping.fields}
    if mapping.modified_time_field:
        mapped_names.add(mapping.modified_time_field)
    return Coverage(
        mapped=[n for n in airtable_field_names if n in mapped_names],
        ignored=[n for n in airtable_field_names if n in mapping.ignored_airtable_fields],
        unmapped=[
            n
            for n in airtable_field_names
            if n not in mapped_names and n not in mapping.ignored_airtable_fields
        ],
    )


def validate_mapping(repo: Repository, airtable) -> Coverage:
    """Fail fast with one clear error per side; return the coverage report."""
    validate_postgres(repo)
    airtable.validate_fields(expected_airtable_types(repo.mapping))
    schema = airtable.table_schema()
    return coverage(repo.mapping, [f["name"] for f in schema.get("fields", [])])
