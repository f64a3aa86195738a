"""List-records machinery: query parameters, sorting and the expiring offset iterators.

The first page of a listing snapshots the matching record ids into an iterator; later pages
read from it by the opaque ``offset`` token (``itr…/rec…``), like Airtable. Iterators expire
after a period of inactivity, and can be expired on demand to exercise client restart logic.
"""

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from reconcile_pipeline.emulator.clock import new_id
from reconcile_pipeline.emulator.errors import ApiError

MAX_PAGE_SIZE = 100
_MAX_LIVE_ITERATORS = 1000


@dataclass
class ListQuery:
    formula: str | None = None
    sort: list[tuple[str, str]] = field(default_factory=list)  # (field id or name, direction)
    fields: list[str] | None = None
    page_size: int = MAX_PAGE_SIZE
    max_records: int | None = None
    offset: str | None = None
    by_field_id: bool = False
    cell_format: str = "json"


@dataclass
class _Iterator:
    table_key: tuple[str, str]
    record_ids: list[str]
    expires_at: float
    page_starts: dict[str, int] = field(default_factory=dict)


class IteratorRegistry:
    """Live list iterators by id; thread-safe, bounded, expiring after ``ttl_seconds`` idle."""

    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_seconds = ttl_seconds
        self._clock = clock  # the emulator's (advancing it expires offsets)
        self._lock = threading.Lock()
        self._iterators: OrderedDict[str, _Iterator] = OrderedDict()

    def start(self, table_key: tuple[str, str], record_ids: list[str]) -> str:
        iterator_id = new_id("itr")
        with self._lock:
            self._iterators[iterator_id] = _Iterator(
                table_key, record_ids, self._clock() + self.ttl_seconds
            )
            while len(self._iterators) > _MAX_LIVE_ITERATORS:
                self._iterators.popitem(last=False)
        return iterator_id

    def token(self, iterator_id: str, position: int) -> str:
        with self._lock:
            iterator = self._iterators[iterator_id]
            record_id = iterator.record_ids[position]
            iterator.page_starts[record_id] = position
        return f"{iterator_id}/{record_id}"

    def resume(self, token: str, table_key: tuple[str, str]) -> tuple[str, list[str], int]:
        """The iterator id, its snapshot of ids and the position a token points at.

        Raises:
            ApiError: 422 INVALID_OFFSET_VALUE for a malformed token,
                LIST_RECORDS_ITERATOR_NOT_AVAILABLE for an expired or unknown one.
        """
        iterator_id, _, record_id = token.partition("/")
        if not iterator_id.startswith("itr") or not record_id.startswith("rec"):
            raise ApiError(422, "INVALID_OFFSET_VALUE", f"The value of offset {token} is invalid")
        now = self._clock()
        with self._lock:
            iterator = self._iterators.get(iterator_id)
            if iterator is not None and iterator.expires_at < now:
                del self._iterators[iterator_id]
                iterator = None
            position = iterator.page_starts.get(record_id) if iterator else None
            if iterator is None or position is None or iterator.table_key != table_key:
                raise ApiError(
                    422,
                    "LIST_RECORDS_ITERATOR_NOT_AVAILABLE",
                    "Iteration has timed out. Restart the listing from the first page.",
                )
            iterator.expires_at = now + self.ttl_seconds
            return iterator_id, iterator.record_ids, position

    def expire_all(self) -> int:
        with self._lock:
            count = len(self._iterators)
            self._iterators.clear()
        return count


def sort_records(
    records: list[Any],
    keys: Sequence[tuple[Callable[[Any], Any], bool]],
) -> list[Any]:
    """Stable multi-key sort; each key is (value getter, descending). Blanks sort first."""
    result = list(records)
    for getter, descending in reversed(keys):
        result.sort(key=lambda record, g=getter: _sort_key(g(record)), reverse=descending)
    return result


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None or value == "":
        return (0, 0)
    if isinstance(value, bool | int | float):
        return (1, float(value))
    if isinstance(value, datetime):
        return (2, value.timestamp())
    return (3, str(value).casefold())
