"""Schema edits at run time: add a base, rename a table or a field, delete a field, change a
field's type.

What Airtable does when someone edits the base in its UI: ids never change, so records and
requests that address fields and tables by id keep working, while names take effect in the
metadata API, in record responses and in formulas (a formula field's text follows a renamed
field; ``filterByFormula`` with an old name is a 422, as in Airtable) at once. Edits live in
memory only: the data file keeps records, and the schema file stays the source of the schema
at start-up.
"""

import re
from typing import TYPE_CHECKING, Any

from reconcile_pipeline.emulator import cells
from reconcile_pipeline.emulator.clock import new_id
from reconcile_pipeline.emulator.errors import ApiError, invalid_request, unknown_field
from reconcile_pipeline.emulator.formula import FormulaSyntaxError, compile_formula
from reconcile_pipeline.emulator.formula_parser import rename_field_refs
from reconcile_pipeline.emulator.records import TableData
from reconcile_pipeline.emulator.schema import FieldSchema, Schema

if TYPE_CHECKING:
    from reconcile_pipeline.emulator.store import Store


_BASE_ID = re.compile(r"^app[A-Za-z0-9]{14}$")


def add_base(
    store: "Store",
    base_id: str,
    name: str | None = None,
    like: str | None = None,
    tables: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Add a base: a copy of the tables of base ``like`` (fields, field ids and views; new
    table ids, links re-pointed inside the new base; no records), or ``tables`` shaped like
    the metadata API's (table ids unused by any other base). Returns ``{"id", "name",
    "tables"}`` (metadata). Added bases live in memory only, like the other schema edits.

    Raises:
        ValueError: a malformed or taken base id, neither or both of ``like`` and ``tables``,
            an unknown ``like`` base, or a table id already in use.
    """
    if not isinstance(base_id, str) or not _BASE_ID.match(base_id):
        raise ValueError(f"A base id is 'app' and 14 letters or digits, not {base_id!r}")
    if (like is None) == (tables is None):
        raise ValueError("Give either the base to copy (like) or its tables")
    with store.lock:
        if base_id in store.schema.bases:
            raise ValueError(f"Base {base_id} exists already")
        if like is not None:
            template = store.schema.base(like)
            if template is None:
                raise ValueError(f"No base {like} to copy")
            tables = _fresh_table_ids([t.to_meta() for t in template.tables])
            name = name or f"{template.name} ({base_id})"
        in_use = {t.id for b in store.schema.bases.values() for t in b.tables}
        data = {"bases": [{"id": base_id, "name": name or base_id, "tables": tables}]}
        base = Schema.from_dict(data).bases[base_id]
        taken = sorted(in_use & {t.id for t in base.tables})
        if taken:
            raise ValueError(f"Table ids already in use: {taken}")
        store.add_base(base)
        return {**base.to_meta(), "tables": [t.to_meta() for t in base.tables]}


def _fresh_table_ids(tables: list[dict[str, Any]]) -> list[dict[str, Any]]:
    renamed = {table["id"]: new_id("tbl") for table in tables}
    for table in tables:
        table["id"] = renamed[table["id"]]
        for column in table["fields"]:
            options = column.get("options") or {}
            if options.get("linkedTableId") in renamed:
                options["linkedTableId"] = renamed[options["linkedTableId"]]
    return tables


def rename_table(store: "Store", base_id: str, table_key: str, new_name: str) -> dict[str, Any]:
    """Rename a table (by id or name); returns its metadata."""
    with store.lock:
        table = store.table(base_id, table_key)
        name = _clean_name(new_name)
        base = store.schema.bases[base_id]
        if any(t is not table.schema and t.name.casefold() == name.casefold() for t in base.tables):
            raise _duplicate("table", name)
        table.schema.name = name
        store.schema_changed()
        return table.schema.to_meta()


def rename_field(
    store: "Store", base_id: str, table_key: str, field_key: str, new_name: str
) -> dict[str, Any]:
    """Rename a field (by id or name); the table's formula fields follow. Returns its metadata."""
    with store.lock:
        table = store.table(base_id, table_key)
        column = _field(table, field_key)
        name = _clean_name(new_name)
        if any(
            f is not column and f.name.casefold() == name.casefold() for f in table.schema.fields
        ):
            raise _duplicate("field", name)
        old = column.name
        for other in table.schema.fields:
            if other.type == "formula" and isinstance(other.options.get("formula"), str):
                other.options["formula"] = rename_field_refs(other.options["formula"], old, name)
        column.name = name
        table.schema.reindex()
        store.schema_changed()
        return column.to_meta()


def delete_field(store: "Store", base_id: str, table_key: str, field_key: str) -> dict[str, Any]:
    """Delete a field and its values (not the primary field, as in Airtable).

    Formula fields that referred to it become invalid (``#ERROR!``).
    """
    with store.lock:
        table = store.table(base_id, table_key)
        column = _field(table, field_key)
        if column.id == table.schema.primary_field_id:
            raise ApiError(422, "INVALID_REQUEST_UNKNOWN", "The primary field cannot be deleted")
        table.schema.fields.remove(column)
        table.schema.reindex()
        for record in table.records.values():
            record.cells.pop(column.id, None)
            record.raw = record.raw - {column.id}
            record.field_modified.pop(column.id, None)
        for other in table.schema.fields:
            referenced = other.options.get("referencedFieldIds")
            if isinstance(referenced, list) and column.id in referenced:
                referenced.remove(column.id)
        _mark_formula_validity(table)
        store.schema_changed()
        return {"id": column.id, "deleted": True}


def retype_field(
    store: "Store",
    base_id: str,
    table_key: str,
    field_key: str,
    new_type: str,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Change a field's type (and options); returns its metadata.

    Stored values are converted as a typecast write would convert the value the API showed
    (select options are added as needed); values that do not convert are cleared, as are all
    values when the new type is computed. Raw values stay. Modified times do not move.
    """
    if not isinstance(new_type, str) or not new_type:
        raise invalid_request("Invalid request: the field type must be a non-empty string")
    if options is not None and not isinstance(options, dict):
        raise invalid_request("Invalid request: field options must be an object")
    with store.lock:
        table = store.table(base_id, table_key)
        column = _field(table, field_key)
        before = FieldSchema(column.id, column.name, column.type, dict(column.options))
        column.type = new_type
        column.options = dict(options or {})
        for record in table.records.values():
            if column.id in record.raw or column.id not in record.cells:
                continue
            value = _converted(before, column, record.cells[column.id])
            if value is None:
                del record.cells[column.id]
            else:
                record.cells[column.id] = value
        _mark_formula_validity(table)
        store.schema_changed()
        return column.to_meta()


def _converted(before: FieldSchema, after: FieldSchema, stored: Any) -> Any:
    if after.computed:
        return None
    shown = cells.output(before, stored)
    if isinstance(shown, list) and (after.type in cells.TEXT_TYPES or after.type == "singleSelect"):
        shown = ", ".join(
            item.get("filename", item.get("url", "")) if isinstance(item, dict) else str(item)
            for item in shown
        )
    try:
        return cells.normalize(after, shown, typecast=True)
    except ApiError:
        return None


def _mark_formula_validity(table: TableData) -> None:
    for column in table.schema.fields:
        if column.type != "formula":
            continue
        try:
            compile_formula(str(column.options.get("formula", "")), table.schema.field)
            valid = True
        except FormulaSyntaxError:
            valid = False
        if "isValid" in column.options or not valid:
            column.options["isValid"] = valid


def _field(table: TableData, key: str) -> FieldSchema:
    column = table.schema.field(key)
    if column is None:
        raise unknown_field(key)
    return column


def _clean_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise invalid_request("Invalid request: the name must be a non-empty string")
    return name.strip()


def _duplicate(kind: str, name: str) -> ApiError:
    error_type = "DUPLICATE_OR_EMPTY_FIELD_NAME" if kind == "field" else "DUPLICATE_TABLE_NAME"
    return ApiError(422, error_type, f"A {kind} named {name!r} already exists")
