"""Schema edits at run time: rename a table or a field, delete a field, change a field's type.

What Airtable does when someone edits the base in its UI: ids never change, so records and
requests that address fields and tables by id keep working, while names take effect in the
metadata API, in record responses and in formulas (a formula field's text follows a renamed
field; ``filterByFormula`` with an old name is a 422, as in Airtable) at once. Edits live in
memory only: the data file keeps records, and the schema file stays the source of the schema
at start-up.
"""

from typing import TYPE_CHECKING, Any

from reconcile_pipeline.emulator import cells
from reconcile_pipeline.emulator.errors import ApiError, invalid_request, unknown_field
from reconcile_pipeline.emulator.formula import FormulaSyntaxError, compile_formula
from reconcile_pipeline.emulator.formula_parser import rename_field_refs
from reconcile_pipeline.emulator.records import TableData
from reconcile_pipeline.emulator.schema import FieldSchema

if TYPE_CHECKING:
    from reconcile_pipeline.emulator.store import Store


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
