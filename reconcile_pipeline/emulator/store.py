"""The record store: Airtable's record semantics behind one lock.

Records are indexed by id per table (dicts keep creation order, which is the default list
order). Timestamps follow Airtable: ``createdTime`` on create; a record never edited since
creation has no last-modified time; an edit bumps the record's and each changed field's
last-modified time; computed fields (formulas, created/modified time, autonumber) are derived
on read, so their changes never bump anything.

Raw cells (`put_raw_fields`, `create_raw_records`) hold any JSON value verbatim, bypassing
validation: they are served exactly as stored, even empty or ``null``, and override computed
fields too. A regular write to the field replaces a raw value.
"""

import copy
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from reconcile_pipeline.emulator import cells
from reconcile_pipeline.emulator.clock import format_datetime, new_id, utc_now
from reconcile_pipeline.emulator.errors import ApiError, not_found, unknown_field, unprocessable
from reconcile_pipeline.emulator.formula import (
    CompiledFormula,
    FormulaRuntimeError,
    FormulaSyntaxError,
    compile_formula,
)
from reconcile_pipeline.emulator.listing import IteratorRegistry, ListQuery, sort_records
from reconcile_pipeline.emulator.records import (
    StoredRecord,
    TableData,
    record_from_json,
    record_to_json,
)
from reconcile_pipeline.emulator.schema import BaseSchema, FieldSchema, Schema

_FORMULA_CACHE_SIZE = 256
_MAX_FORMULA_DEPTH = 20


class _RecordContext:
    """A record as formulas see it (implements `formula.FormulaContext`)."""

    __slots__ = ("store", "table", "record", "now", "depth")

    def __init__(self, store: "Store", table: TableData, record: StoredRecord, now: datetime):
        self.store, self.table, self.record, self.now = store, table, record, now
        self.depth = 0

    @property
    def record_id(self) -> str:
        return self.record.id

    @property
    def created_time(self) -> datetime:
        return self.record.created

    def field_value(self, field_schema: FieldSchema) -> Any:
        if field_schema.id in self.record.raw:
            return cells.raw_formula_input(field_schema, self.record.cells.get(field_schema.id))
        if field_schema.computed:
            return self.store._computed_value(self, field_schema)
        return cells.formula_input(field_schema, self.record.cells.get(field_schema.id))

    def last_modified(self, field_ids: tuple[str, ...] | None) -> datetime | None:
        if field_ids is None:
            return self.record.last_modified
        times = [
            self.record.field_modified[f] for f in field_ids if f in self.record.field_modified
        ]
        return max(times, default=None)


class Store:
    """All bases' records. Every public method is atomic under one re-entrant lock."""

    def __init__(
        self,
        schema: Schema,
        offset_ttl_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.schema = schema
        self.repeat_on_next_page = 0  # set by the fault injection (see faults.FaultConfig)
        self.lock = threading.RLock()
        self.iterators = IteratorRegistry(offset_ttl_seconds, clock)
        self.version = 0  # bumped on every write; persistence saves when it moves
        self._tables: dict[tuple[str, str], TableData] = {
            (base.id, table.id): TableData(base.id, table)
            for base in schema.bases.values()
            for table in base.tables
        }
        self._formulas: OrderedDict[tuple[str, str], CompiledFormula | FormulaSyntaxError] = (
            OrderedDict()
        )

    def add_base(self, base: BaseSchema) -> None:
        """Serve a new base (its id not yet in the schema), with empty tables."""
        with self.lock:
            self.schema.bases[base.id] = base
            for table in base.tables:
                self._tables[(base.id, table.id)] = TableData(base.id, table)
            self.schema_changed()

    # ----- lookup -------------------------------------------------------------------------

    def table(self, base_id: str, table_key: str) -> TableData:
        """A table by id or name.

        Raises:
            ApiError: 403 for an unknown base (what api.airtable.com answers a token that
                cannot see it), 404 TABLE_NOT_FOUND for an unknown table.
        """
        base = self.schema.base(base_id)
        if base is None:
            raise ApiError(
                403,
                "INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND",
                "Invalid permissions, or the requested model was not found. Check that both "
                "your user and your token have the required permissions, and that the model "
                "names and/or ids are correct.",
            )
        table = base.table(table_key)
        if table is None:
            raise ApiError(
                404, "TABLE_NOT_FOUND", f"Could not find table {table_key} in application {base_id}"
            )
        return self._tables[(base_id, table.id)]

    def _field(self, table: TableData, key: str) -> FieldSchema:
        found = table.schema.field(key)
        if found is None:
            raise unknown_field(key)
        return found

    def _link_exists(self, table_id: str, record_id: str) -> bool:
        return any(
            t.schema.id == table_id and record_id in t.records for t in self._tables.values()
        )

    # ----- reads --------------------------------------------------------------------------

    def list_records(self, base_id: str, table_key: str, query: ListQuery) -> dict[str, Any]:
        with self.lock:
            table = self.table(base_id, table_key)
            field_filter = self._field_filter(table, query.fields)
            if query.offset:
                iterator_id, ids, position = self.iterators.resume(query.offset, table.key)
                if self.repeat_on_next_page > 0:  # fault: the listing shifted under us
                    position = max(0, position - self.repeat_on_next_page)
                    self.repeat_on_next_page = 0
            else:
                ids = self._matching_ids(table, query)
                iterator_id, position = None, 0
            end = position + query.page_size
            page = [table.records[i] for i in ids[position:end] if i in table.records]
            if end < len(ids) and iterator_id is None:
                iterator_id = self.iterators.start(table.key, ids)
            now = utc_now()
            result: dict[str, Any] = {
                "records": [
                    self._serialize(table, r, query.by_field_id, field_filter, now) for r in page
                ]
            }
            if end < len(ids) and iterator_id is not None:
                result["offset"] = self.iterators.token(iterator_id, end)
            return result

    def _matching_ids(self, table: TableData, query: ListQuery) -> list[str]:
        records: Iterable[StoredRecord] = table.records.values()
        now = utc_now()
        if query.formula:
            compiled = self._compile(table, query.formula)
            if isinstance(compiled, FormulaSyntaxError):
                raise unprocessable(
                    "INVALID_FILTER_BY_FORMULA",
                    f"The formula for filtering records is invalid: {compiled}",
                )
            records = [r for r in records if compiled.matches(_RecordContext(self, table, r, now))]
        if query.sort:
            keys = []
            for key, direction in query.sort:
                sort_field = self._field(table, key)
                keys.append(
                    (
                        lambda r, f=sort_field: self._sort_value(table, r, f, now),
                        direction == "desc",
                    )
                )
            records = sort_records(list(records), keys)
        ids = [r.id for r in records]
        if query.max_records is not None:
            ids = ids[: query.max_records]
        return ids

    def _sort_value(
        self, table: TableData, record: StoredRecord, column: FieldSchema, now: datetime
    ) -> Any:
        try:
            return _RecordContext(self, table, record, now).field_value(column)
        except FormulaRuntimeError:
            return None  # an erroring formula or a raw object sorts as blank

    def _field_filter(self, table: TableData, keys: list[str] | None) -> set[str] | None:
        if keys is None:
            return None
        return {self._field(table, key).id for key in keys}

    def get_record(
        self, base_id: str, table_key: str, record_id: str, by_field_id: bool = False
    ) -> dict[str, Any]:
        with self.lock:
            table = self.table(base_id, table_key)
            record = table.records.get(record_id)
            if record is None:
                raise not_found()
            return self._serialize(table, record, by_field_id, None, utc_now())

    def all_records(self, base_id: str, table_key: str) -> list[dict[str, Any]]:
        with self.lock:
            table = self.table(base_id, table_key)
            now = utc_now()
            return copy.deepcopy(
                [self._serialize(table, r, False, None, now) for r in table.records.values()]
            )

    # ----- writes -------------------------------------------------------------------------

    def create_records(
        self,
        base_id: str,
        table_key: str,
        fields_list: Sequence[Mapping[str, Any]],
        typecast: bool = False,
        by_field_id: bool = False,
        created_times: Sequence[datetime] | None = None,
        modified_times: Sequence[datetime | None] | None = None,
    ) -> list[dict[str, Any]]:
        """Create records atomically: every record is validated before any is stored."""
        with self.lock:
            table = self.table(base_id, table_key)
            prepared = [self._prepare(table, fields, typecast) for fields in fields_list]
            now = utc_now()
            created = []
            for index, values in enumerate(prepared):
                created_at = created_times[index] if created_times else now
                record = StoredRecord(
                    id=self._new_record_id(table),
                    created=created_at,
                    created_text=format_datetime(created_at),
                    auto_number=table.next_auto_number,
                    cells=values,
                )
                modified_at = modified_times[index] if modified_times else None
                if modified_at is not None:
                    record.last_modified = modified_at
                    record.field_modified = dict.fromkeys(values, modified_at)
                table.next_auto_number += 1
                table.records[record.id] = record
                created.append(record)
            self.version += 1
            return [self._serialize(table, r, by_field_id, None, now) for r in created]

    def update_records(
        self,
        base_id: str,
        table_key: str,
        updates: Sequence[tuple[str, Mapping[str, Any]]],
        replace: bool = False,
        typecast: bool = False,
        by_field_id: bool = False,
        modified_time: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """PATCH (partial) or PUT (``replace``) semantics, all-or-nothing."""
        with self.lock:
            table = self.table(base_id, table_key)
            prepared = []
            for record_id, fields in updates:
                record = table.records.get(record_id)
                if record is None:
                    raise unprocessable(
                        "ROW_DOES_NOT_EXIST", f"Record ID {record_id} does not exist in this table"
                    )
                prepared.append((record, self._prepare(table, fields, typecast)))
            now = modified_time or utc_now()
            for record, values in prepared:
                self._apply(record, values, replace, now)
            self.version += 1
            return [self._serialize(table, r, by_field_id, None, now) for r, _ in prepared]

    def upsert_records(
        self,
        base_id: str,
        table_key: str,
        records: Sequence[Mapping[str, Any]],
        merge_on: Sequence[str],
        replace: bool = False,
        typecast: bool = False,
        by_field_id: bool = False,
    ) -> dict[str, Any]:
        """``performUpsert``: match on ``fieldsToMergeOn``; 0 matches create, 1 updates."""
        with self.lock:
            table = self.table(base_id, table_key)
            merge_fields = [self._field(table, key) for key in merge_on]
            plan: list[tuple[StoredRecord | None, dict[str, Any]]] = []
            for item in records:
                values = self._prepare(table, item.get("fields", {}), typecast)
                if "id" in item:
                    target = table.records.get(item["id"])
                    if target is None:
                        raise unprocessable(
                            "ROW_DOES_NOT_EXIST",
                            f"Record ID {item['id']} does not exist in this table",
                        )
                    plan.append((target, values))
                    continue
                missing = [f.name for f in merge_fields if f.id not in values]
                if missing:
                    raise unprocessable(
                        "INVALID_REQUEST_UNKNOWN",
                        f"Upsert records must include every field to merge on: {missing}",
                    )
                matches = [
                    r
                    for r in table.records.values()
                    if all(r.cells.get(f.id) == values[f.id] for f in merge_fields)
                ]
                if len(matches) > 1:
                    raise unprocessable(
                        "INVALID_RECORDS",
                        "Cannot update more than one record with the same fieldsToMergeOn "
                        f"values ({len(matches)} records match)",
                    )
                plan.append((matches[0] if matches else None, values))
            now = utc_now()
            created_ids, updated_ids, touched = [], [], []
            for target, values in plan:
                if target is None:
                    target = StoredRecord(
                        id=self._new_record_id(table),
                        created=now,
                        created_text=format_datetime(now),
                        auto_number=table.next_auto_number,
                        cells=values,
                    )
                    table.next_auto_number += 1
                    table.records[target.id] = target
                    created_ids.append(target.id)
                else:
                    self._apply(target, values, replace, now)
                    updated_ids.append(target.id)
                touched.append(target)
            self.version += 1
            return {
                "records": [self._serialize(table, r, by_field_id, None, now) for r in touched],
                "createdRecords": created_ids,
                "updatedRecords": updated_ids,
            }

    def put_raw_fields(
        self,
        base_id: str,
        table_key: str,
        record_id: str,
        fields: Mapping[str, Any],
        modified_time: datetime | None = None,
    ) -> dict[str, Any]:
        """Store values verbatim (no validation or normalisation, computed fields included).

        Always bumps the record's and the fields' last-modified times (to ``modified_time`` or
        now), even when a value is unchanged. Returns the record, API-shaped.

        Raises:
            ApiError: unknown table, record (404) or field (422 UNKNOWN_FIELD_NAME).
            ValueError: ``fields`` is not an object of JSON values.
        """
        with self.lock:
            table = self.table(base_id, table_key)
            record = table.records.get(record_id)
            if record is None:
                raise not_found()
            values = self._prepare_raw(table, fields)
            now = modified_time or utc_now()
            for field_id, value in values.items():
                record.cells[field_id] = value
                record.field_modified[field_id] = now
            record.raw = record.raw.union(values)
            record.last_modified = now
            self.version += 1
            return self._serialize(table, record, False, None, utc_now())

    def create_raw_records(
        self,
        base_id: str,
        table_key: str,
        fields_list: Sequence[Mapping[str, Any]],
        created_times: Sequence[datetime] | None = None,
        modified_times: Sequence[datetime | None] | None = None,
    ) -> list[dict[str, Any]]:
        """Create records whose given fields all hold raw values (see `put_raw_fields`).

        Like `create_records`: a record without a modified time has never been modified.
        """
        with self.lock:
            table = self.table(base_id, table_key)
            prepared = [self._prepare_raw(table, fields) for fields in fields_list]
            now = utc_now()
            created = []
            for index, values in enumerate(prepared):
                created_at = created_times[index] if created_times else now
                record = StoredRecord(
                    id=self._new_record_id(table),
                    created=created_at,
                    created_text=format_datetime(created_at),
                    auto_number=table.next_auto_number,
                    cells=values,
                    raw=frozenset(values),
                )
                modified_at = modified_times[index] if modified_times else None
                if modified_at is not None:
                    record.last_modified = modified_at
                    record.field_modified = dict.fromkeys(values, modified_at)
                table.next_auto_number += 1
                table.records[record.id] = record
                created.append(record)
            self.version += 1
            return [self._serialize(table, r, False, None, now) for r in created]

    def _prepare_raw(self, table: TableData, fields: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(fields, Mapping):
            raise ValueError("raw fields must be an object")
        return {self._field(table, key).id: cells.raw_value(v) for key, v in fields.items()}

    def delete_records(
        self, base_id: str, table_key: str, record_ids: Sequence[str]
    ) -> list[dict[str, Any]]:
        with self.lock:
            table = self.table(base_id, table_key)
            for record_id in record_ids:
                if record_id not in table.records:
                    raise unprocessable(
                        "ROW_DOES_NOT_EXIST", f"Record ID {record_id} does not exist in this table"
                    )
            for record_id in record_ids:
                del table.records[record_id]
            self._unlink(table, set(record_ids))
            self.version += 1
            return [{"id": record_id, "deleted": True} for record_id in record_ids]

    def _unlink(self, table: TableData, deleted: set[str]) -> None:
        """As Airtable does: deleted records vanish from every link field pointing at their
        table, and the linking records count as modified."""
        now = utc_now()
        for other in self._tables.values():
            links = [
                f.id
                for f in other.schema.fields
                if f.type == "multipleRecordLinks"
                and (f.options or {}).get("linkedTableId") == table.schema.id
            ]
            if not links:
                continue
            for record in other.records.values():
                for field_id in links:
                    value = record.cells.get(field_id)
                    if isinstance(value, list) and deleted.intersection(value):
                        kept = [v for v in value if v not in deleted]
                        self._apply(record, {field_id: kept or None}, False, now)

    def clear(self, base_id: str | None = None, table_key: str | None = None) -> int:
        """Delete every record (of one table, one base, or everything); returns the count."""
        with self.lock:
            if table_key is not None and base_id is not None:
                targets = [self.table(base_id, table_key)]
            else:
                targets = [t for t in self._tables.values() if base_id in (None, t.base_id)]
            count = 0
            for table in targets:
                count += len(table.records)
                table.records.clear()
                table.next_auto_number = 1
            self.iterators.expire_all()
            self.version += 1
            return count

    def _prepare(
        self, table: TableData, fields: Mapping[str, Any], typecast: bool
    ) -> dict[str, Any]:
        if not isinstance(fields, Mapping):
            raise unprocessable("INVALID_RECORDS", "Record fields must be an object")
        values: dict[str, Any] = {}
        for key, raw in fields.items():
            target = self._field(table, key)
            values[target.id] = cells.normalize(target, raw, typecast, self._link_exists)
        return values

    @staticmethod
    def _apply(record: StoredRecord, values: dict[str, Any], replace: bool, now: datetime) -> None:
        changed = False
        if replace:
            for field_id in [f for f in record.cells if f not in values]:
                del record.cells[field_id]
                record.raw = record.raw - {field_id}
                record.field_modified[field_id] = now
                changed = True
        for field_id, value in values.items():
            if field_id in record.raw:
                record.raw = record.raw - {field_id}  # a regular write replaces a raw value
            elif record.cells.get(field_id) == value:
                continue
            if value is None:
                record.cells.pop(field_id, None)
            else:
                record.cells[field_id] = value
            record.field_modified[field_id] = now
            changed = True
        if changed:
            record.last_modified = now

    @staticmethod
    def _new_record_id(table: TableData) -> str:
        while (record_id := new_id("rec")) in table.records:
            pass
        return record_id

    # ----- serialization and computed fields ----------------------------------------------

    def _serialize(
        self,
        table: TableData,
        record: StoredRecord,
        by_field_id: bool,
        field_filter: set[str] | None,
        now: datetime,
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        context = None
        raw = record.raw
        for column in table.schema.fields:
            if field_filter is not None and column.id not in field_filter:
                continue
            if raw and column.id in raw:
                fields[column.id if by_field_id else column.name] = record.cells.get(column.id)
                continue
            if column.computed:
                context = context or _RecordContext(self, table, record, now)
                value = self._computed_output(context, column)
            else:
                stored = record.cells.get(column.id)
                if stored is None:
                    continue
                value = cells.output(column, stored)
            if not cells.is_empty(value):
                fields[column.id if by_field_id else column.name] = value
        return {"id": record.id, "createdTime": record.created_text, "fields": fields}

    def _computed_output(self, context: _RecordContext, column: FieldSchema) -> Any:
        try:
            value = self._computed_value(context, column)
        except (FormulaRuntimeError, ArithmeticError, ValueError, TypeError):
            return {"error": "#ERROR!"}
        if isinstance(value, datetime):
            return format_datetime(value)
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, float):
            if math.isnan(value):
                return {"specialValue": "NaN"}
            if math.isinf(value):
                return {"specialValue": "Infinity" if value > 0 else "-Infinity"}
        return value

    def _computed_value(self, context: _RecordContext, column: FieldSchema) -> Any:
        record = context.record
        if column.type == "createdTime":
            return record.created
        if column.type == "autoNumber":
            return record.auto_number
        if column.type == "lastModifiedTime":
            referenced = tuple(column.options.get("referencedFieldIds") or ())
            return context.last_modified(referenced or None)
        if column.type != "formula":
            return None  # rollups, lookups and the like are not emulated
        compiled = self._compile(context.table, column.options.get("formula", ""))
        if isinstance(compiled, FormulaSyntaxError) or context.depth > _MAX_FORMULA_DEPTH:
            raise FormulaRuntimeError(f"Formula field {column.name} cannot be computed")
        context.depth += 1
        try:
            return compiled.evaluate(context)
        finally:
            context.depth -= 1

    def _compile(self, table: TableData, text: str) -> CompiledFormula | FormulaSyntaxError:
        cache_key = (table.schema.id, text)
        cached = self._formulas.get(cache_key)
        if cached is None:
            try:
                cached = compile_formula(text, table.schema.field)
            except FormulaSyntaxError as exc:
                cached = exc
            self._formulas[cache_key] = cached
            if len(self._formulas) > _FORMULA_CACHE_SIZE:
                self._formulas.popitem(last=False)
        return cached

    def schema_changed(self) -> None:
        """After a schema edit (under the lock): recompile formulas, mark the data changed."""
        self._formulas.clear()
        self.version += 1

    # ----- persistence --------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to restore records (and typecast-added choices) later."""
        with self.lock:
            tables = []
            for table in self._tables.values():
                tables.append(
                    {
                        "base": table.base_id,
                        "table": table.schema.id,
                        "nextAutoNumber": table.next_auto_number,
                        "choices": {
                            f.id: f.options["choices"]
                            for f in table.schema.fields
                            if "choices" in f.options
                        },
                        "records": [record_to_json(r) for r in table.records.values()],
                    }
                )
            return {"version": 1, "tables": copy.deepcopy(tables)}

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        with self.lock:
            for entry in snapshot.get("tables", []):
                table = self._tables.get((entry["base"], entry["table"]))
                if table is None:
                    continue  # the table left the schema; its records go with it
                for field_id, choices in entry.get("choices", {}).items():
                    column = table.schema.field(field_id)
                    if column is not None:
                        column.options["choices"] = choices
                table.records = {
                    r["id"]: record_from_json(table.schema, r) for r in entry["records"]
                }
                table.next_auto_number = entry.get("nextAutoNumber", len(table.records) + 1)
            self.version += 1
