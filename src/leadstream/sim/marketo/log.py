"""The activities a simulated instance holds, in id order, and the scan that pages through them.

Ids and activity dates never go down together, so a position is one id and a date is one bisect.
Records are kept as the JSON bytes they are served as: a page is a join, not an encode.

A scan reads at most ``scan_limit`` activities per call, matching or not, like Marketo's own
partition scans: a page asking for rare types may come back short (even empty) while
``moreResult`` is true. ``moreResult`` is true whenever activities remain after the scan position.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from leadstream.sim.marketo.paging import Cursor


@dataclass(frozen=True, slots=True)
class StoredActivity:
    id: int
    second: int  # activityDate as epoch seconds (the record shows whole seconds)
    type_id: int
    lead_id: int
    body: bytes  # the record as served

    def record(self) -> dict[str, Any]:
        value: dict[str, Any] = orjson.loads(self.body)
        return value


@dataclass(frozen=True, slots=True)
class Scan:
    found: list[StoredActivity]
    cursor: Cursor  # where the next page starts
    more: bool  # activities remain after ``cursor`` (the page may still be short)


class ActivityLog:
    """Append-only, bounded: past ``max_records`` the oldest tenth is dropped (Marketo keeps 90 days)."""

    def __init__(self, max_records: int = 250_000) -> None:
        if max_records < 1:
            raise ValueError(f"max_records: must be at least 1, got {max_records}")
        self.max_records = max_records
        self._items: list[StoredActivity] = []
        self._ids: list[int] = []
        self._seconds: list[int] = []

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[StoredActivity]:
        return iter(self._items)

    @property
    def last(self) -> StoredActivity | None:
        return self._items[-1] if self._items else None

    def append(self, record: dict[str, Any], second: int) -> StoredActivity:
        last = self.last
        if last is not None and (record["id"] <= last.id or second < last.second):
            raise ValueError(
                f"activity {record['id']} at {second} would go back in the log (last: {last.id} at {last.second})"
            )
        item = StoredActivity(record["id"], second, record["activityTypeId"], record["leadId"], orjson.dumps(record))
        self._items.append(item)
        self._ids.append(item.id)
        self._seconds.append(second)
        if len(self._items) > self.max_records:
            drop = max(1, self.max_records // 10)
            del self._items[:drop], self._ids[:drop], self._seconds[:drop]
        return item

    def scan(self, cursor: Cursor, accept: Callable[[StoredActivity], bool], page_size: int, scan_limit: int) -> Scan:
        start = max(bisect.bisect_right(self._ids, cursor.after_id), bisect.bisect_left(self._seconds, cursor.since))
        stop = min(len(self._items), start + scan_limit)
        found: list[StoredActivity] = []
        index = start
        while index < stop and len(found) < page_size:
            item = self._items[index]
            if accept(item):
                found.append(item)
            index += 1
        after_id = self._ids[index - 1] if index > start else cursor.after_id
        return Scan(found, Cursor(cursor.since, after_id), more=index < len(self._items))
