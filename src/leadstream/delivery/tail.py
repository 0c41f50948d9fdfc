"""Reading the log for every sender: the tail is read once and shared, and so is what lags behind it.

Senders that keep up all want the same few newest events. ``LogTail`` reads each new stretch of
the log once, sorts it by (stream, tenant) — the only thing a sender filters on before event
types — and keeps the newest stretches in memory, bounded in events and bytes. A sender at the
tail takes its slice from there and sleeps on a future of its own (stream, tenant), so a
thousand idle subscriptions cost nothing and only the ones concerned wake up. While no sender
reads from the window (none runs, or all are behind it), the tail reads nothing: the window just
moves to the head.

Each event's body element (``formats.elements``) is built once per format, kept with the
stretch it came in and shared by every sender of that format, so memory stays bounded by the
window (the elements count towards its bytes).

A sender behind the window (a backlog, a replay) reads a page of its own (stream, tenant) from
the store (``read_behind``). The last pages read stay for a while (bounded in bytes), and a read
under way is joined by anyone it will serve, so the senders of one key that fell behind together
read each page once between them, and converge on the same pages. A page's rows become events
on the store's reader thread and its elements are built on a worker thread: the event loop that
serves the other senders (and, in one process, ingest) only joins bytes for a drain.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

from leadstream import formats
from leadstream.events import Event
from leadstream.logs import log
from leadstream.store.base import Store

Key = tuple[str, str]  # (stream, munchkin id)
READ_PAGE = 1000  # events per read of the store for senders behind the window
# What an event held in memory costs beyond its data: the struct and its short strings (measured
# with sys.getsizeof on a benchmark event: 104 + ~500 bytes), and each built element's bytes header.
EVENT_OVERHEAD = 600
ELEMENT_OVERHEAD = 33


class Taken(NamedTuple):
    """Events of one key, their shared ``fmt`` elements, the position up to which the answer is
    complete, and whether any of the events is a custom object (for the take-everything path)."""

    events: list[Event]
    shared: list[bytes]
    scanned: int
    custom_objects: bool


@dataclass(slots=True)
class Group:
    """The events of one key in a stretch of the log, in order, and what is built from them once."""

    events: list[Event]
    elements: dict[str, list[bytes]] = field(default_factory=dict)
    custom_objects: bool | None = None

    def shared(self, fmt: str) -> tuple[list[bytes], int]:
        """The ``fmt`` elements, and how many bytes building them just took (0 if built before)."""
        found = self.elements.get(fmt)
        if found is not None:
            return found, 0
        found = self.elements[fmt] = formats.elements(fmt, self.events)
        return found, sum(map(len, found)) + ELEMENT_OVERHEAD * len(found)

    def has_custom_objects(self) -> bool:
        if self.custom_objects is None:
            self.custom_objects = any(e.etype.startswith("co:") for e in self.events)
        return self.custom_objects


@dataclass(slots=True)
class Chunk:
    """Every event with a position in ``(after, last]``, grouped by key, each group in order."""

    after: int
    last: int
    by_key: dict[Key, Group]
    size: int  # bytes of event data and built elements, for the memory bound
    count: int


@dataclass(slots=True)
class Page:
    """Every event of one key in ``(after, last]``, read from the store for senders behind the window."""

    key: Key
    after: int
    last: int
    group: Group
    size: int
    building: dict[str, asyncio.Future[list[bytes]]] = field(default_factory=dict)  # elements, by format


@dataclass
class LogTail:
    store: Store
    max_events: int = 100_000
    max_bytes: int = 24 * 1024 * 1024  # events, their overhead and their built elements
    page: int = 5000
    pages_bytes: int = 8 * 1024 * 1024  # the pages read behind the window, kept for the others
    users: int = 0  # running senders at the window or waiting on it: with none, nothing is read
    _chunks: deque[Chunk] = field(default_factory=deque)
    _lasts: list[int] = field(default_factory=list)  # chunk.last of each chunk, for bisect
    _events: int = 0
    _bytes: int = 0
    _waiters: dict[Key, asyncio.Future[None]] = field(default_factory=dict)
    _pages: deque[Page] = field(default_factory=deque)
    _pages_size: int = 0
    _reading: dict[tuple[Key, int], asyncio.Future[Page]] = field(default_factory=dict)
    start: int = 0  # the window holds every event in (start, end]
    end: int = 0

    async def prime(self) -> None:
        """Start the window at the current end of the log (before any sender looks at it)."""
        self.start = self.end = await self.store.last_position()

    async def run(self) -> None:
        """Follow the log for ever (cancel to stop)."""
        while True:
            top = await self.store.wait_for_events(self.end, 30.0)
            if not self.users:  # nobody to serve: the window moves to the head, empty
                self._drop_chunks(len(self._chunks))
                self.start = self.end = max(self.end, top)
                continue
            while self.end < top:
                try:
                    await self._read_more(top)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the store hiccuped: senders fall back to their own reads
                    log.warning("reading the log tail failed", error=str(exc))
                    await asyncio.sleep(0.5)
                    break

    async def _read_more(self, top: int) -> None:
        events = await self.store.read(self.end, self.page)
        # Everything at or below `top` was committed before this read began, so a short page
        # means there is nothing else up to `top` (positions may have gaps).
        last = events[-1].position if len(events) == self.page else max(top, events[-1].position if events else top)
        by_key: dict[Key, Group] = {}
        size = 0
        for event in events:
            group = by_key.get((event.stream, event.munchkin_id))
            if group is None:
                group = by_key[(event.stream, event.munchkin_id)] = Group([])
            group.events.append(event)
            size += len(event.data) + EVENT_OVERHEAD
        self._chunks.append(Chunk(self.end, last, by_key, size, len(events)))
        self._lasts.append(last)
        self._events += len(events)
        self._bytes += size
        self.end = last
        while len(self._chunks) > 1 and (self._events > self.max_events or self._bytes > self.max_bytes):
            self._drop_chunks(1)
        for key in by_key:
            waiter = self._waiters.pop(key, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _drop_chunks(self, n: int) -> None:
        for _ in range(n):
            gone = self._chunks.popleft()
            self._lasts.pop(0)
            self._events -= gone.count
            self._bytes -= gone.size
            self.start = gone.last

    def forget_through(self, position: int) -> None:
        """Retention deleted the log up to ``position``: nobody may be served those events from
        memory any more (a sender below the window reads the store, where they are gone)."""
        while self._chunks and self._chunks[0].last <= position:
            self._drop_chunks(1)
        self.start = max(self.start, min(position, self.end))
        self._pages.clear()
        self._pages_size = 0

    def covers(self, position: int) -> bool:
        return self.start <= position

    def take(self, key: Key, after: int, limit: int, fmt: str) -> Taken:
        """Up to ``limit`` events of ``key`` above ``after`` from the window. ``after`` must be
        covered by the window."""
        found: list[Event] = []
        shared: list[bytes] = []
        custom_objects = False
        index = bisect.bisect_right(self._lasts, after)
        scanned = after
        for chunk in itertools.islice(self._chunks, index, None):
            group = chunk.by_key.get(key)
            if group:
                start = bisect.bisect_right(group.events, after, key=_position) if chunk.after < after else 0
                room = limit - len(found)
                elements, built = group.shared(fmt)
                chunk.size += built
                self._bytes += built
                found.extend(group.events[start : start + room])
                shared.extend(elements[start : start + room])
                custom_objects = custom_objects or group.has_custom_objects()
                if len(group.events) - start > room:  # stopped inside this chunk
                    return Taken(found, shared, found[-1].position if found else scanned, custom_objects)
            scanned = chunk.last
        return Taken(found, shared, max(scanned, after), custom_objects)

    async def wait(self, key: Key, after: int, timeout: float | None) -> None:
        """Until the window holds an event of ``key`` above ``after`` (or ``timeout`` seconds).
        At once when ``after`` is below the window: the store has what the window skipped."""
        if after < self.start or (self.end > after and self._has(key, after)):
            return
        waiter = self._waiters.get(key)
        if waiter is None or waiter.done():
            waiter = self._waiters[key] = asyncio.get_running_loop().create_future()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiter), timeout)

    def _has(self, key: Key, after: int) -> bool:
        for chunk in reversed(self._chunks):
            if chunk.last <= after:
                return False
            group = chunk.by_key.get(key)
            if group and group.events[-1].position > after:
                return True
        return False

    # -- behind the window ------------------------------------------------------------------------

    async def read_behind(self, key: Key, after: int, fmt: str) -> Taken:
        """The events of ``key`` above ``after`` from the store, a page at a time: from a page
        read lately when one covers ``after``, else from a read under way that starts at or
        below it, else from a read of its own that the others may join."""
        while True:
            for page in reversed(self._pages):
                if page.key == key and page.after <= after < page.last:
                    return await self._from_page(page, after, fmt)
            joined = max(
                ((start, r) for (k, start), r in self._reading.items() if k == key and start <= after and not r.done()),
                default=None,
                key=lambda pair: pair[0],
            )
            if joined is not None:
                start, reading = joined
                page = await asyncio.shield(reading)
                if start == after:  # it was read from here: its answer is ours, even when empty
                    return await self._from_page(page, after, fmt)
                continue  # it may cover `after` now
            reading = asyncio.ensure_future(self._read_page(key, after))
            self._reading[(key, after)] = reading
            try:
                page = await asyncio.shield(reading)
            finally:
                self._reading.pop((key, after), None)
            return await self._from_page(page, after, fmt)

    async def _read_page(self, key: Key, after: int) -> Page:
        events, last = await self.store.read_page(after, READ_PAGE, stream=key[0], munchkin_id=key[1])
        page = Page(key, after, last, Group(events), sum(len(e.data) for e in events) + EVENT_OVERHEAD * len(events))
        if events:
            self._pages.append(page)
            self._pages_size += page.size
            while len(self._pages) > 1 and self._pages_size > self.pages_bytes:
                self._pages_size -= self._pages.popleft().size
        return page

    async def _from_page(self, page: Page, after: int, fmt: str) -> Taken:
        group = page.group
        building = page.building.get(fmt)
        if building is None:  # built once per format, whoever asks first
            building = page.building[fmt] = asyncio.ensure_future(self._build(page, fmt))
        elements = await asyncio.shield(building)
        start = bisect.bisect_right(group.events, after, key=_position) if page.after < after else 0
        return Taken(group.events[start:], elements[start:], max(page.last, after), group.has_custom_objects())

    async def _build(self, page: Page, fmt: str) -> list[bytes]:
        elements = page.group.elements[fmt] = await asyncio.to_thread(formats.elements, fmt, page.group.events)
        built = sum(map(len, elements)) + ELEMENT_OVERHEAD * len(elements)
        page.size += built
        if any(p is page for p in self._pages):
            self._pages_size += built
        return elements


def _position(event: Event) -> int:
    return event.position
