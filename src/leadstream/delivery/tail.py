"""Reading the log for every sender: the tail is read once and shared.

Senders that keep up all want the same few newest events. ``LogTail`` reads each new stretch of
the log once, sorts it by (stream, tenant) — the only thing a sender filters on before event
types — and keeps the newest stretches in memory, bounded in events and bytes. A sender at the
tail takes its slice from there and sleeps on a future of its own (stream, tenant), so a
thousand idle subscriptions cost nothing and only the ones concerned wake up. A sender behind
the window (a backlog, a replay) reads its own way from the store (``Store.read_page``), a page at a time, without
holding up the tail or anyone else.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
from collections import deque
from dataclasses import dataclass, field

from leadstream import formats
from leadstream.events import Event
from leadstream.logs import log
from leadstream.store.base import Store

Key = tuple[str, str]  # (stream, munchkin id)


@dataclass(slots=True)
class Chunk:
    """Every event with a position in ``(after, last]``, grouped by key, each group in order."""

    after: int
    last: int
    by_key: dict[Key, list[Event]]
    size: int  # bytes of event data, for the memory bound
    count: int
    _sizes: dict[tuple[Key, str], list[int]] = field(default_factory=dict)

    def sizes(self, key: Key, fmt: str) -> list[int]:
        """What each event of ``key`` adds to a ``fmt`` body: computed once, for every sender."""
        found = self._sizes.get((key, fmt))
        if found is None:
            found = self._sizes[(key, fmt)] = body_sizes(fmt, self.by_key[key])
        return found


def body_sizes(fmt: str, events: list[Event]) -> list[int]:
    """Bytes each event adds to a batch body of ``fmt``: exact for legacy, for the other formats an
    upper bound (it allows for any subscription id), so a batch never passes maxBatchBytes."""
    return [formats.body_size(fmt, e) for e in events]


@dataclass
class LogTail:
    store: Store
    max_events: int = 100_000
    max_bytes: int = 32 * 1024 * 1024
    page: int = 5000
    _chunks: deque[Chunk] = field(default_factory=deque)
    _lasts: list[int] = field(default_factory=list)  # chunk.last of each chunk, for bisect
    _events: int = 0
    _bytes: int = 0
    _waiters: dict[Key, asyncio.Future[None]] = field(default_factory=dict)
    start: int = 0  # the window holds every event in (start, end]
    end: int = 0

    async def prime(self) -> None:
        """Start the window at the current end of the log (before any sender looks at it)."""
        self.start = self.end = await self.store.last_position()

    async def run(self) -> None:
        """Follow the log for ever (cancel to stop)."""
        while True:
            top = await self.store.wait_for_events(self.end, 30.0)
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
        by_key: dict[Key, list[Event]] = {}
        size = 0
        for event in events:
            group = by_key.get((event.stream, event.munchkin_id))
            if group is None:
                group = by_key[(event.stream, event.munchkin_id)] = []
            group.append(event)
            size += len(event.data)
        self._chunks.append(Chunk(self.end, last, by_key, size, len(events)))
        self._lasts.append(last)
        self._events += len(events)
        self._bytes += size
        self.end = last
        while len(self._chunks) > 1 and (self._events > self.max_events or self._bytes > self.max_bytes):
            gone = self._chunks.popleft()
            self._lasts.pop(0)
            self._events -= gone.count
            self._bytes -= gone.size
            self.start = gone.last
        for key in by_key:
            waiter = self._waiters.pop(key, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def forget_through(self, position: int) -> None:
        """Retention deleted the log up to ``position``: nobody may be served those events from
        memory any more (a sender below the window reads the store, where they are gone)."""
        while self._chunks and self._chunks[0].last <= position:
            gone = self._chunks.popleft()
            self._lasts.pop(0)
            self._events -= gone.count
            self._bytes -= gone.size
        self.start = max(self.start, min(position, self.end))

    def covers(self, position: int) -> bool:
        return self.start <= position

    def take(self, key: Key, after: int, limit: int, fmt: str) -> tuple[list[Event], list[int], int]:
        """Up to ``limit`` events of ``key`` above ``after`` from the window, their ``fmt`` body
        sizes, and the position up to which the answer is complete. ``after`` must be covered by
        the window."""
        found: list[Event] = []
        sizes: list[int] = []
        index = bisect.bisect_right(self._lasts, after)
        scanned = after
        for chunk in itertools.islice(self._chunks, index, None):
            group = chunk.by_key.get(key)
            if group:
                start = bisect.bisect_right(group, after, key=_position) if chunk.after < after else 0
                room = limit - len(found)
                found.extend(group[start : start + room])
                sizes.extend(chunk.sizes(key, fmt)[start : start + room])
                if len(group) - start > room:  # stopped inside this chunk
                    return found, sizes, found[-1].position if found else scanned
            scanned = chunk.last
        return found, sizes, max(scanned, after)

    async def wait(self, key: Key, after: int, timeout: float | None) -> None:
        """Until the window holds an event of ``key`` above ``after`` (or ``timeout`` seconds)."""
        if self.end > after and self._has(key, after):
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
            if group and group[-1].position > after:
                return True
        return False


def _position(event: Event) -> int:
    return event.position
