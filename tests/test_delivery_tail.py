"""The shared log tail (delivery/tail.py) on a real SQLite store: each event's body element is
built once for every sender of a format and counted in the window's memory bound; the tail reads
nothing while no sender runs or all are behind it; senders behind the window share the pages they read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import orjson
import pytest

from helpers import MUNCHKIN, activity, wait_until
from leadstream.catalog import Catalog
from leadstream.delivery.tail import ELEMENT_OVERHEAD, LogTail
from leadstream.events import Event, Validator
from leadstream.formats import batch_body, elements
from leadstream.store import SQLITE_FILE, Store, open_store
from leadstream.store.sqlite import SqliteStore
from leadstream.subscriptions.config import SubscriptionConfig
from leadstream.subscriptions.matching import compile_leniently, takes_every_event
from test_delivery_support import bench, receiver, wait_ids

VALIDATOR = Validator(Catalog())
KEY = ("activity", MUNCHKIN)


def events(first: int, n: int) -> list[Event]:
    return [VALIDATOR.event("activity", orjson.dumps(activity(i))) for i in range(first, first + n)]


class CountingStore(SqliteStore):
    """The real SQLite store, counting the page reads senders behind the tail ask of it."""

    page_reads = 0

    async def read_page(self, after: int, limit: int, *, stream: str, munchkin_id: str) -> tuple[list[Event], int]:
        self.page_reads += 1
        return await super().read_page(after, limit, stream=stream, munchkin_id=munchkin_id)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = open_store(str(tmp_path / "data"))
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
async def running_tail(store: Store) -> AsyncIterator[LogTail]:
    tail = LogTail(store, max_events=1000, page=100)
    await tail.prime()
    task = asyncio.create_task(tail.run())
    yield tail
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_each_element_is_built_once_for_every_sender_and_counts_in_the_window(
    store: Store, running_tail: LogTail
) -> None:
    tail = running_tail
    tail.users = 1
    await store.append(events(0, 50))
    await wait_until(lambda: tail.end == 50, what="the tail to read the 50 events")
    data_bytes = tail._bytes
    first = tail.take(KEY, 0, 500, "legacy")
    second = tail.take(KEY, 0, 500, "legacy")
    assert len(first.events) == 50 and first.scanned == 50 and not first.custom_objects
    assert all(a is b for a, b in zip(first.shared, second.shared))  # the same bytes objects: built once
    assert first.shared == elements("legacy", first.events)
    assert tail._bytes == data_bytes + sum(len(e) + ELEMENT_OVERHEAD for e in first.shared)  # once, in the bound
    body = batch_body("legacy", first.events, subscription_id="s", batch_id="b", created="c", shared=first.shared)
    assert body == batch_body("legacy", first.events, subscription_id="s", batch_id="b", created="c")
    # The bound holds with elements: 1,000 events at most, whatever was built.
    await store.append(events(50, 1500))
    await wait_until(lambda: tail.end == 1550, what="the tail to read on")
    assert tail._events <= 1000 + tail.page and tail.covers(1549) and not tail.covers(100)


async def test_the_tail_reads_nothing_while_no_sender_runs(store: Store, running_tail: LogTail) -> None:
    tail = running_tail
    await store.append(events(0, 30))
    await wait_until(lambda: tail.end == 30, what="the window to move to the head")
    assert tail._events == 0 and tail._bytes == 0 and tail.start == 30  # moved, read nothing
    tail.users = 1
    await store.append(events(30, 20))
    await wait_until(lambda: tail.end == 50, what="the tail to read once a sender runs")
    taken = tail.take(KEY, 30, 500, "cloudevents")
    assert [e.position for e in taken.events] == list(range(31, 51))


async def test_senders_behind_the_window_share_page_reads(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    store = CountingStore(tmp_path / "data" / SQLITE_FILE)
    await store.open()
    try:
        await store.append(events(0, 2500))
        tail = LogTail(store)
        await tail.prime()  # the window starts at the head: all 2,500 are behind it
        # Ten senders at the same place, and one a little ahead: one read serves them all.
        answers = await asyncio.gather(*(tail.read_behind(KEY, 0, "legacy") for _ in range(10)))
        ahead = await tail.read_behind(KEY, 7, "legacy")
        assert store.page_reads == 1
        assert all(a.events == answers[0].events and a.scanned == 1000 for a in answers)
        assert [e.position for e in ahead.events] == list(range(8, 1001)) and ahead.shared == answers[0].shared[7:]
        # They go on together from where the page ended.
        later = await asyncio.gather(*(tail.read_behind(KEY, 1000, "adobe_io") for _ in range(10)))
        assert store.page_reads == 2 and later[0].events[0].position == 1001
        # Retention forgets the pages: what was deleted is never served from memory.
        tail.forget_through(1000)
        await tail.read_behind(KEY, 1000, "adobe_io")
        assert store.page_reads == 3
    finally:
        await store.close()


def test_take_everything_subscriptions_are_known() -> None:
    catalog = Catalog()

    def kind(**settings: object) -> str | None:
        fields = {"name": "s", "munchkinId": MUNCHKIN, "stream": "activity", "endpoint": "https://example.com/x"}
        config = msgspec.convert(fields | settings, SubscriptionConfig)
        matcher, _ = compile_leniently(config, catalog, "s")
        return takes_every_event(config, matcher)

    assert kind() == "activities"  # the default: every activity type, no custom objects
    assert kind(customObjects=True) == "all"
    assert kind(stream="audit") == "all"
    assert kind(eventTypes=[10]) is None
    assert kind(filter={"type": [{"prefix": "com.adobe"}]}) is None
    assert kind(eventTypes=["*", 987654]) is None  # does not compile: it takes nothing


async def test_the_tail_reads_nothing_while_every_sender_is_behind_it(tmp_path: Path) -> None:
    # A subscription from "earliest" starts behind the window, and stays behind while its endpoint
    # holds the first batch: the tail has no user then, and skips what is published meanwhile.
    # Once the backlog is delivered (in order, once) the sender is back at the window.
    gate = asyncio.Event()

    async def held(_: object) -> None:
        await gate.wait()

    async with bench(tmp_path) as b, receiver(answer=held) as r:
        records = [activity(i) for i in range(3500)]
        await b.publish("activity", records[:3000])
        await b.subscribe(r.url, startAt="earliest", batchSize=500, timeoutMs=30_000)  # held, not timed out
        tail = b.engine.tail
        await wait_until(lambda: r.requests, what="the first batch to be held at the endpoint")
        await b.publish("activity", records[3000:])
        head = await b.store.last_position()
        await wait_until(lambda: tail.start == head, what="the window to move to the head")
        assert tail.users == 0 and tail._events == 0  # nobody at the window: nothing was read
        gate.set()
        await wait_ids(r, records)
        assert r.ids() == [rec["marketoGUID"] for rec in records]
        await wait_until(lambda: tail.users == 1, what="the sender to be back at the window")
        more = [activity(i) for i in range(3500, 3510)]
        await b.publish("activity", more)
        await wait_ids(r, records + more)
        assert r.ids()[3500:] == [rec["marketoGUID"] for rec in more] and tail._events >= 10
