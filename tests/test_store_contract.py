"""The storage contract (SPEC §6): one suite, run against SQLite and PostgreSQL alike, then what
only the PostgreSQL backend promises (several nodes, partitions, leases, outages)."""

from __future__ import annotations

import asyncio
import random
import time
import urllib.parse
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from leadstream.errors import Conflict, Invalid, Unavailable
from leadstream.events import Event
from leadstream.store import Store, StoredSubscription, open_store
from leadstream.store.base import Control, EventQuery
from leadstream.store.postgres import DAY_MS, SCHEMA_VERSION, PostgresStore, partition_ddl, partition_name, upgrade

TENANT, OTHER_TENANT = "123-ABC-456", "987-XYZ-654"


def make_event(stream: str = "activity", tenant: str = TENANT, guid: str | None = None) -> Event:
    guid = guid or str(uuid.uuid4())
    return Event(
        eventid=str(uuid.uuid4()),
        stream=stream,
        munchkin_id=tenant,
        etype="10",
        type="com.adobe.platform.marketo.activity.standard.openemail",
        id=guid,
        time="2026-11-28T10:00:00Z",
        data=orjson.dumps({"munchkinId": tenant, "leadId": "1234", "guid": guid}),
        key=f"{tenant}:{guid}",
    )


def make_events(n: int, **kwargs: Any) -> list[Event]:
    return [make_event(**kwargs) for _ in range(n)]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def until(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


async def read_all(store: Store, after: int = 0) -> list[Event]:
    return await store.read(after, 100_000)


def sub(sub_id: str, tenant: str = TENANT, created_at: int = 1) -> StoredSubscription:
    return StoredSubscription(sub_id, tenant, b'{"name":"%s"}' % sub_id.encode(), b'{"cursor":0}', created_at)


# -- the event log ------------------------------------------------------------------------------


async def test_append_sets_positions_and_reads_back(store: Store) -> None:
    assert await store.last_position() == 0
    assert await store.first_position() == 1
    events = make_events(5)
    assert await store.append(events) == []
    positions = [e.position for e in events]
    assert positions == sorted(set(positions)) and positions[0] >= 1
    assert all(e.ingested_at > 0 for e in events)
    assert await store.last_position() == positions[-1]
    assert await store.first_position() == positions[0]

    stored = await read_all(store)
    assert [(e.eventid, e.stream, e.munchkin_id, e.etype, e.type, e.id, e.time, e.data) for e in stored] == [
        (e.eventid, e.stream, e.munchkin_id, e.etype, e.type, e.id, e.time, e.data) for e in events
    ]
    assert [(e.position, e.ingested_at) for e in stored] == [(e.position, e.ingested_at) for e in events]
    assert await store.read(positions[1], 2) == stored[2:4]

    more = make_events(3)
    await store.append(more)
    assert more[0].position > positions[-1] and more[0].ingested_at >= events[-1].ingested_at


async def test_duplicates_within_a_call_and_across_calls(store: Store) -> None:
    a, b, c = make_event(), make_event(), make_event()
    again_a = make_event(guid=a.id)
    assert await store.append([a, b, again_a]) == [2]
    again_b = make_event(guid=b.id)
    assert await store.append([again_b, c, make_event(guid=c.id)]) == [0, 2]
    assert again_a.position == again_b.position == 0  # not stored: no position
    assert [e.eventid for e in await read_all(store)] == [a.eventid, b.eventid, c.eventid]
    # A retried request: those already in the log, wherever they stand, and only those.
    d, e = make_event(), make_event()
    assert await store.append([d, make_event(guid=a.id), e, make_event(guid=c.id)]) == [1, 3]
    stored = await read_all(store)
    assert [x.eventid for x in stored] == [a.eventid, b.eventid, c.eventid, d.eventid, e.eventid]
    assert (d.position, e.position) == (stored[3].position, stored[4].position) and d.position < e.position
    assert await store.append([make_event(guid=d.id), make_event(guid=e.id)]) == [0, 1]
    assert len(await read_all(store)) == 5
    # The same guid under another tenant is another key.
    assert await store.append([make_event(tenant=OTHER_TENANT, guid=a.id)]) == []


async def test_concurrent_appends_of_one_process_all_land(store: Store) -> None:
    batches = [make_events(random.randint(1, 30)) for _ in range(40)]
    shared = make_event()  # in several calls at once: stored exactly once
    results = await asyncio.gather(*(store.append([shared.__copy__(), *batch]) for batch in batches))
    assert sum(1 for duplicates in results if duplicates == []) == 1
    stored = await read_all(store)
    assert len(stored) == 1 + sum(map(len, batches))
    assert [e.position for e in stored] == sorted({e.position for e in stored})


async def test_read_filters_by_stream_and_tenant(store: Store) -> None:
    mixed = [
        make_event("activity", TENANT),
        make_event("audit", TENANT),
        make_event("activity", OTHER_TENANT),
        make_event("notification", TENANT),
        make_event("activity", TENANT),
        make_event("audit", OTHER_TENANT),
    ]
    await store.append(mixed)

    def ids(events: list[Event]) -> list[str]:
        return [e.eventid for e in events]

    assert ids(await store.read(0, 10, stream="activity")) == ids([mixed[0], mixed[2], mixed[4]])
    assert ids(await store.read(0, 10, munchkin_id=OTHER_TENANT)) == ids([mixed[2], mixed[5]])
    assert ids(await store.read(0, 10, stream="activity", munchkin_id=TENANT)) == ids([mixed[0], mixed[4]])
    assert ids(await store.read(mixed[0].position, 1, stream="activity", munchkin_id=TENANT)) == ids([mixed[4]])
    assert await store.read(0, 10, stream="notification", munchkin_id=OTHER_TENANT) == []


async def test_find_events_for_the_event_browser(store: Store) -> None:
    mine = make_events(3)
    other = make_event(tenant=OTHER_TENANT, guid="wanted-guid")
    audit = make_event(stream="audit")
    audit.etype, audit.type = "Login:login", "com.adobe.platform.marketo.audit.login"
    lead = make_event()
    lead.data = orjson.dumps({"munchkinId": TENANT, "leadId": "777", "x": 1})
    await store.append([*mine, other, audit, lead])
    top = await store.last_position()

    async def find(query: EventQuery, above: int = 0, upto: int = top, limit: int = 50) -> list[int]:
        return [e.position for e in await store.find_events(query, above=above, upto=upto, limit=limit)]

    everything = await find(EventQuery())
    assert everything == list(range(top, top - 6, -1))  # newest first
    assert await find(EventQuery(event_id="wanted-guid")) == [other.position]
    assert await find(EventQuery(event_id="wanted-guid", munchkin_ids=frozenset({TENANT}))) == []  # not its tenant's
    assert await find(EventQuery(munchkin_ids=frozenset({OTHER_TENANT, "555-QQQ-555"}))) == [other.position]
    assert await find(EventQuery(stream="audit")) == [audit.position]
    assert await find(EventQuery(etypes=frozenset({"com.adobe.platform.marketo.audit.login"}))) == [audit.position]
    assert await find(EventQuery(etypes=frozenset({"10"}), stream="activity", lead_id=777)) == [lead.position]
    assert len(await find(EventQuery(lead_id=1234))) == 4  # the three of mine and the other tenant's
    assert await find(EventQuery(), above=mine[0].position, upto=mine[2].position) == [
        mine[2].position,
        mine[1].position,
    ]
    assert await find(EventQuery(), limit=2) == everything[:2]


async def test_position_before(store: Store) -> None:
    assert await store.position_before(now_ms()) == 0
    first = make_events(3)
    await store.append(first)
    await until(lambda: now_ms() > first[-1].ingested_at + 1, what="the clock to move on")
    second = make_events(2)
    await store.append(second)
    assert second[0].ingested_at > first[-1].ingested_at

    assert await store.position_before(0) == first[0].position - 1
    assert await store.position_before(first[0].ingested_at) == first[0].position - 1
    assert await store.position_before(second[0].ingested_at) == first[-1].position
    assert await store.position_before(now_ms() + 60_000) == second[-1].position


async def test_wait_for_events_wakes_on_append_and_times_out_otherwise(store: Store) -> None:
    last = await store.last_position()
    started = time.monotonic()
    assert await store.wait_for_events(last, 0.2) == last
    assert time.monotonic() - started >= 0.19

    waiting = asyncio.create_task(store.wait_for_events(last, 30))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    events = make_events(2)
    await store.append(events)
    assert await asyncio.wait_for(waiting, 10) == events[-1].position
    # Already past: returns at once.
    assert await asyncio.wait_for(store.wait_for_events(last, 30), 5) == events[-1].position


# -- retention ----------------------------------------------------------------------------------


async def test_purge_deletes_what_was_ingested_before_the_cutoff(store: Store) -> None:
    old = make_events(10)
    await store.append(old)
    await until(lambda: now_ms() > old[-1].ingested_at, what="the clock to move on")
    cutoff = now_ms()
    young = make_events(4)
    await store.append(young)

    deleted = await store.purge(cutoff, chunk=3)
    assert deleted == 10
    assert [e.eventid for e in await read_all(store)] == [e.eventid for e in young]
    assert await store.first_position() == young[0].position
    # Nothing left to purge before the cutoff; a later cutoff takes the rest.
    assert await store.purge(cutoff) == 0
    assert await store.purge(now_ms() + 1) == 4
    assert await store.first_position() == await store.last_position() + 1


async def test_ingest_goes_on_during_purge(store: Store) -> None:
    old = make_events(300)
    await store.append(old)
    await until(lambda: now_ms() > old[-1].ingested_at, what="the clock to move on")
    cutoff = now_ms()

    async def ingest() -> list[Event]:
        landed = []
        for _ in range(20):
            batch = make_events(5)
            assert await store.append(batch) == []
            landed += batch
        return landed

    deleted, landed = await asyncio.gather(store.purge(cutoff, chunk=7), ingest())
    assert deleted == 300
    assert {e.eventid for e in await read_all(store)} == {e.eventid for e in landed}
    # An expired key may come back once it has left the log.
    assert await store.append([make_event(guid=old[0].id)]) == []


# -- subscriptions, attempts, dead letters, settings -------------------------------------------------


async def test_subscriptions_crud_and_state(store: Store) -> None:
    await store.create_subscription(sub("s2", created_at=20))
    await store.create_subscription(sub("s1", created_at=10))
    await store.create_subscription(sub("s3", OTHER_TENANT, created_at=30))
    assert await store.get_subscription("nope") is None
    assert await store.get_subscription("s1") == sub("s1", created_at=10)
    assert [s.id for s in await store.list_subscriptions()] == ["s1", "s2", "s3"]
    assert [s.id for s in await store.list_subscriptions(TENANT)] == ["s1", "s2"]
    assert await store.list_subscriptions("000-AAA-000") == []

    asked = Control(rev=5, pause=5)
    assert await store.update_control("s2", asked, expected_rev=0, config=b'{"name":"renamed"}')
    assert not await store.update_control("s2", Control(rev=6, resume=6), expected_rev=0)  # another writer came first
    await store.save_state("s2", b'{"cursor":42}', applied=5)
    changed = await store.get_subscription("s2")
    assert changed is not None and (changed.config, changed.state) == (b'{"name":"renamed"}', b'{"cursor":42}')
    assert (changed.control, changed.applied) == (asked, 5)
    assert await store.subscriptions_revision() == 5
    assert await store.get_subscription("s1") == sub("s1", created_at=10)

    with pytest.raises(Conflict):
        await store.create_subscription(StoredSubscription("s1", TENANT, b"{}", b"{}", 99))
    assert await store.get_subscription("s1") == sub("s1", created_at=10)


TRIM_SLACK = 64  # a backend may trim the attempt log now and then rather than on every insert


async def test_attempts_are_bounded_and_newest_first(store: Store) -> None:
    await store.create_subscription(sub("busy"))
    await store.create_subscription(sub("quiet"))
    await store.record_attempt("quiet", b'{"n":"q"}', keep=20)
    for n in range(200):
        await store.record_attempt("busy", b'{"n":%d}' % n, keep=20)
    newest = [b'{"n":%d}' % n for n in range(199, -1, -1)]
    assert await store.list_attempts("busy", 5) == newest[:5]
    kept = await store.list_attempts("busy", 1000)
    assert 20 <= len(kept) <= 20 + TRIM_SLACK
    assert kept == newest[: len(kept)]
    assert await store.list_attempts("quiet", 10) == [b'{"n":"q"}']
    assert await store.list_attempts("nobody", 10) == []


async def test_an_attempt_keeps_its_trace_small_or_large(store: Store) -> None:
    small = orjson.dumps({"request": {"headers": {"A": "1"}}, "response": {"status": 500, "body": "down"}})
    large = orjson.dumps({"request": {"headers": {}}, "response": {"status": 502, "body": "<p>bad</p>" * 6000}})
    await store.record_attempt("s1", b'{"n":1}', trace=small)
    await store.record_attempt("s1", b'{"n":2}', trace=large)
    await store.record_attempt("s1", b'{"n":3}')  # an entry without a trace (written before traces were kept)
    newest, second, first = [orjson.loads(doc) for doc in await store.list_attempts("s1", 10)]
    assert newest == {"n": 3}
    assert second == {"n": 2, "trace": orjson.loads(large)}
    assert first == {"n": 1, "trace": orjson.loads(small)}


async def test_dead_letters_round_trip(store: Store) -> None:
    events = make_events(3)
    await store.append(events)
    await store.dead_letter("s1", events[2], "413 even alone")
    await store.dead_letter("s1", events[0], "413")
    await store.dead_letter("s2", events[1], "413")
    await store.dead_letter("s1", events[0], "413 again")  # the same event again: replaced
    letters = await store.dead_letters("s1", 10)
    assert [(e.eventid, e.position, e.data, reason) for e, reason in letters] == [
        (events[0].eventid, events[0].position, events[0].data, "413 again"),
        (events[2].eventid, events[2].position, events[2].data, "413 even alone"),
    ]
    assert letters[0][0] == events[0]
    assert [e.eventid for e, _ in await store.dead_letters("s2", 10)] == [events[1].eventid]
    assert len(await store.dead_letters("s1", 1)) == 1


async def test_settings(store: Store) -> None:
    assert await store.get_setting("catalog:123-ABC-456") is None
    await store.put_setting("catalog:123-ABC-456", b'{"result":[]}')
    await store.put_setting("other", b"\x00\x01binary")
    assert await store.get_setting("catalog:123-ABC-456") == b'{"result":[]}'
    await store.put_setting("catalog:123-ABC-456", b'{"result":[1]}')
    assert await store.get_setting("catalog:123-ABC-456") == b'{"result":[1]}'
    assert await store.get_setting("other") == b"\x00\x01binary"


async def test_reopen_keeps_everything_and_positions_keep_rising(store_url: str) -> None:
    async with open_store(store_url) as store:
        first = make_events(4)
        await store.append(first)
        await store.create_subscription(sub("s1"))
        await store.save_state("s1", b'{"cursor":3}', applied=0)
        await store.record_attempt("s1", b'{"status":200}')
        await store.dead_letter("s1", first[1], "413")
        await store.put_setting("k", b"v")

    async with open_store(store_url) as store:
        assert [e.eventid for e in await read_all(store)] == [e.eventid for e in first]
        assert await store.last_position() == first[-1].position
        kept = await store.get_subscription("s1")
        assert kept is not None and kept.state == b'{"cursor":3}'
        assert await store.list_attempts("s1", 10) == [b'{"status":200}']
        assert [e.eventid for e, _ in await store.dead_letters("s1", 10)] == [first[1].eventid]
        assert await store.get_setting("k") == b"v"
        assert await store.append([make_event(guid=first[0].id)]) == [0]  # keys survive too
        second = make_events(2)
        await store.append(second)
        assert second[0].position > first[-1].position
        assert await store.purge(now_ms() + 1) == 6
        assert await read_all(store) == []

    async with open_store(store_url) as store:  # everything purged: positions still never reused
        assert await store.last_position() == second[-1].position
        assert await store.first_position() == second[-1].position + 1
        third = make_events(1)
        await store.append(third)
        assert third[0].position > second[-1].position


async def test_close_finishes_pending_appends(store_url: str) -> None:
    store = open_store(store_url)
    await store.open()
    batches = [make_events(10) for _ in range(8)]
    appending = [asyncio.create_task(store.append(batch)) for batch in batches]
    await asyncio.sleep(0)  # every append is queued, none committed yet
    await store.close()
    assert await asyncio.gather(*appending) == [[]] * 8
    with pytest.raises(Unavailable):
        await store.append(make_events(1))
    async with open_store(store_url) as reopened:
        assert len(await read_all(reopened)) == 80


# -- PostgreSQL: several nodes -------------------------------------------------------------------------


async def test_upgrade_is_idempotent_and_nodes_may_start_together(pg_url: str) -> None:
    assert await upgrade(pg_url) == SCHEMA_VERSION
    assert await upgrade(pg_url) == SCHEMA_VERSION
    nodes = [PostgresStore(pg_url, node_id=f"n{i}") for i in range(3)]
    await asyncio.gather(*(node.open() for node in nodes))
    try:
        conn = await asyncpg.connect(pg_url)
        try:
            assert [r[0] for r in await conn.fetch("SELECT version FROM schema_version ORDER BY version")] == list(
                range(1, SCHEMA_VERSION + 1)
            )
            today = await conn.fetchval("SELECT (extract(epoch FROM now()) * 1000)::bigint") // DAY_MS
            for day in (today, today + 1):  # made ahead
                assert await conn.fetchval("SELECT to_regclass($1)", partition_name(day)) is not None
        finally:
            await conn.close()
    finally:
        await asyncio.gather(*(node.close() for node in nodes))


async def test_concurrent_writers_on_three_nodes_never_let_a_reader_skip(pg_url: str) -> None:
    """Writers on three nodes (separate pools) and a reader that follows read(after=cursor): the
    reader must see every event, in position order, though appends commit concurrently."""
    node_a, node_b, node_c, reader_node = (
        PostgresStore(pg_url, node_id=n, max_pool=4) for n in ("a", "b", "c", "reader")
    )
    for node in (node_a, node_b, node_c, reader_node):
        await node.open()
    appended: list[Event] = []
    writers_done = asyncio.Event()

    async def writer(node: PostgresStore, rounds: int) -> None:
        for _ in range(rounds):
            batch = make_events(random.randint(1, 40))
            assert await node.append(batch) == []
            appended.extend(batch)
            if random.random() < 0.3:
                await asyncio.sleep(0)

    async def reader() -> list[Event]:
        seen: list[Event] = []
        cursor = 0
        while True:
            finished = writers_done.is_set()  # read once more after the writers are done
            page = await reader_node.read(cursor, 97)
            seen += page
            if page:
                cursor = page[-1].position
            elif finished:
                return seen

    try:
        reading = asyncio.create_task(reader())
        await asyncio.gather(*(writer(node, 30) for node in (node_a, node_b, node_c) for _ in range(4)))
        writers_done.set()
        seen = await asyncio.wait_for(reading, 30)
    finally:
        for node in (node_a, node_b, node_c, reader_node):
            await node.close()
    assert len(appended) > 1000
    assert [e.position for e in seen] == sorted(e.position for e in appended)
    assert [e.eventid for e in seen] == [e.eventid for e in sorted(appended, key=lambda e: e.position)]
    assert [e.ingested_at for e in seen] == sorted(e.ingested_at for e in seen)


async def test_notify_wakes_a_waiter_on_another_node(pg_url: str) -> None:
    # With a poll interval far beyond the timeout, only NOTIFY can wake the waiter in time.
    async with PostgresStore(pg_url, node_id="a", poll_interval=60) as a, PostgresStore(pg_url, node_id="b") as b:
        last = await a.last_position()
        waiting = asyncio.create_task(a.wait_for_events(last, 20))
        await asyncio.sleep(0.05)
        events = make_events(3)
        await b.append(events)
        assert await asyncio.wait_for(waiting, 10) == events[-1].position


async def test_leases_spread_across_nodes_and_move_when_one_stops(pg_url: str) -> None:
    ttl = 0.4
    async with PostgresStore(pg_url, node_id="a") as a, PostgresStore(pg_url, node_id="b") as b:
        for i in range(20):
            await a.create_subscription(sub(f"s{i:02}", created_at=i))
        everything = {f"s{i:02}" for i in range(20)}
        held = {"a": set[str](), "b": set[str]()}
        renewed = {"a": 0.0, "b": 0.0}  # when each node last started a lease call

        async def heartbeat(node: PostgresStore, node_id: str) -> None:
            renewed[node_id] = time.monotonic()
            held[node_id] = await node.lease(node_id, ttl) or set()

        deadline = time.monotonic() + 10
        while not (len(held["a"]) == len(held["b"]) == 10):
            assert time.monotonic() < deadline, f"leases never evened out: {held}"
            await heartbeat(a, "a")
            assert not held["a"] & held["b"], "one subscription leased to two nodes"
            await heartbeat(b, "b")
            assert not held["a"] & held["b"], "one subscription leased to two nodes"
            await asyncio.sleep(ttl / 8)
        assert held["a"] | held["b"] == everything

        # b stops renewing (dies): a takes b's subscriptions once their leases expire, not before.
        while held["a"] != everything:
            assert time.monotonic() < renewed["b"] + 10, f"a never took over: {held['a']}"
            await heartbeat(a, "a")
            if held["a"] & held["b"]:
                assert time.monotonic() >= renewed["b"] + ttl, "a took a lease b still held"
            await asyncio.sleep(ttl / 8)


async def test_purge_drops_whole_partitions(pg_url: str) -> None:
    """With a retention of a day or more, purge drops the partitions whose whole day has expired
    and deletes no rows from the others."""
    async with PostgresStore(pg_url, node_id="a") as store:
        conn = await asyncpg.connect(pg_url)
        try:
            today = await conn.fetchval("SELECT (extract(epoch FROM now()) * 1000)::bigint") // DAY_MS
            # Seed two past days as ingest would have left them: positions 1-6 three days ago,
            # 7-10 at the very start of yesterday.
            days = {today - 3: range(1, 7), today - 1: range(7, 11)}
            for day, positions in days.items():
                await conn.execute(partition_ddl(day))
                rows = [
                    (
                        p,
                        e.eventid,
                        e.stream,
                        e.munchkin_id,
                        e.etype,
                        e.type,
                        e.id,
                        e.time,
                        e.data,
                        e.key,
                        day * DAY_MS + 1,
                    )
                    for p, e in zip(positions, make_events(len(positions)))
                ]
                await conn.copy_records_to_table(
                    "events",
                    records=rows,
                    columns=[
                        "position",
                        "eventid",
                        "stream",
                        "munchkin_id",
                        "etype",
                        "type",
                        "id",
                        "time",
                        "data",
                        "key",
                        "ingested_at",
                    ],
                )
            # …and as the appends would have left the numbering: next position 11, the range committed.
            await conn.execute(
                "SELECT setval('event_positions', 10), setval('ingest_clock', $1)", (today - 1) * DAY_MS + 1
            )
            await conn.execute("INSERT INTO append_ranges VALUES (pg_current_xact_id()::text::bigint, 10)")
            fresh = make_events(3)
            await store.append(fresh)
            assert [e.position for e in fresh] == [11, 12, 13]

            deleted = await store.purge(now_ms() - DAY_MS - 1)
            assert deleted == 6
            assert await conn.fetchval("SELECT to_regclass($1)", partition_name(today - 3)) is None
            # Yesterday's events are older than a day too, but their partition's day is not over:
            # they stay until it is (retention granularity: one day).
            assert await conn.fetchval("SELECT to_regclass($1)", partition_name(today - 1)) is not None
            assert [e.position for e in await read_all(store)] == [7, 8, 9, 10, 11, 12, 13]
            assert await store.first_position() == 7
        finally:
            await conn.close()


async def test_an_append_that_cannot_be_stored_fails_alone(pg_url: str) -> None:
    """Appends grouped into one transaction: one that PostgreSQL refuses (text cannot hold NUL)
    fails with Invalid, and the others of its group still land."""
    async with PostgresStore(pg_url, node_id="a") as store:
        good = [make_events(3) for _ in range(5)]
        bad = [make_event(guid="nul\x00guid")]
        outcomes = await asyncio.gather(*(store.append(b) for b in [*good[:2], bad, *good[2:]]), return_exceptions=True)
        assert isinstance(outcomes[2], Invalid)
        assert [o for i, o in enumerate(outcomes) if i != 2] == [[]] * 5
        assert {e.eventid for e in await read_all(store)} == {e.eventid for batch in good for e in batch}


class Proxy:
    """A TCP relay in front of PostgreSQL that can be cut (the database "goes away") and restored."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        await self.server.wait_closed()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.transport.abort()
            return
        self.writers |= {client_writer, upstream_writer}

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except OSError:
                pass
            finally:
                writer.transport.abort()

        await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))


async def test_database_outage_raises_unavailable_then_recovers(pg_url: str) -> None:
    parts = urllib.parse.urlsplit(pg_url)
    proxy = Proxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    await proxy.start()
    via_proxy = parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}").geturl()
    async with PostgresStore(via_proxy, node_id="a", connect_timeout=1) as store:
        before = make_events(2)
        await store.append(before)
        assert await store.healthy()

        await proxy.cut()
        with pytest.raises(Unavailable):
            await store.append(make_events(1))
        assert not await store.healthy()
        with pytest.raises(Unavailable):
            await store.read(0, 10)

        await proxy.start()
        await until_async(store.healthy, what="the store to reconnect")
        after = make_events(2)
        await store.append(after)
        assert [e.eventid for e in await read_all(store)] == [e.eventid for e in before + after]
    await proxy.cut()


async def until_async(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def test_unreachable_database_is_unavailable_on_open() -> None:
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/none", connect_timeout=1)
    with pytest.raises(Unavailable):
        await store.open()
    assert not await store.healthy()


# -- upgrading what version 1 wrote ------------------------------------------------------------------

V1_CONFIG = b'{"name":"old","_control":{"rev":7,"ops":{"pause":5,"resume":7},"replayTo":0}}'
V1_STATE = b'{"cursor":3,"applied":5}'
V1_SETTINGS = {
    "apikey.k1": b'{"id":"k1","munchkinIds":["123-ABC-456"],"scopes":["read"],"hash":"00","createdAt":1}',
    "apikey.k1.used": b"99",
    "apikeys.index": b'["k1"]',
    "audit.head": b"2",
    "audit.page.0": b'[{"seq":0,"time":"t","actor":"operator","action":"key.create","target":"k1"},'
    b'{"seq":1,"time":"t","actor":"operator","action":"key.revoke","target":"k1"}]',
    "catalog.tenants": b'{"123-ABC-456":[{"id":100001,"name":"A"},{"id":100001,"name":"B"}]}',
    "subscriptions.revision": b"x",
}


async def _check_upgraded(store: Store) -> None:
    sub = await store.get_subscription("s1")
    assert sub is not None
    assert orjson.loads(sub.config) == {"name": "old"} and orjson.loads(sub.state) == {"cursor": 3}
    assert (sub.control, sub.applied) == (Control(rev=7, pause=5, resume=7), 5)
    assert [(orjson.loads(raw)["id"], used) for raw, used in await store.api_keys()] == [("k1", 99)]
    assert [(seq, orjson.loads(raw)["action"]) for seq, raw in await store.audit_entries(None, 10)] == [
        (1, "key.revoke"),
        (0, "key.create"),
    ]
    catalog = await store.settings("catalog.activity.")
    assert {name: orjson.loads(value) for name, value in catalog.items()} == {
        "catalog.activity.123-ABC-456.100001": {"id": 100001, "name": "B"}
    }  # the later load of a type wins
    assert (
        await store.get_setting("apikeys.index") is None and await store.get_setting("subscriptions.revision") is None
    )
    assert await store.append_audit(b'{"time":"t","actor":"a","action":"x","target":"y"}', keep=10) == 2


async def test_a_version_1_embedded_store_is_upgraded(tmp_path: Path) -> None:
    import sqlite3

    from leadstream.store.sqlite import MIGRATIONS

    conn = sqlite3.connect(tmp_path / "leadstream.db")
    conn.executescript(MIGRATIONS[0])  # what version 1 made (it recorded no user_version)
    conn.execute("INSERT INTO subscriptions VALUES ('s1', '123-ABC-456', ?, ?, 1)", (V1_CONFIG, V1_STATE))
    conn.executemany("INSERT INTO meta VALUES (?, ?)", [(f"setting:{k}", v) for k, v in V1_SETTINGS.items()])
    conn.commit()
    conn.close()
    async with open_store(tmp_path) as store:
        await _check_upgraded(store)


async def test_a_version_1_database_is_upgraded(pg_url: str) -> None:
    from leadstream.store.postgres import MIGRATIONS

    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(
            "CREATE TABLE schema_version (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        await conn.execute(MIGRATIONS[0])
        await conn.execute("INSERT INTO schema_version (version) VALUES (1)")
        await conn.execute("INSERT INTO subscriptions VALUES ('s1', '123-ABC-456', $1, $2, 1)", V1_CONFIG, V1_STATE)
        await conn.executemany("INSERT INTO settings VALUES ($1, $2)", list(V1_SETTINGS.items()))
    finally:
        await conn.close()
    async with open_store(pg_url) as store:
        await _check_upgraded(store)


async def test_alert_endpoints_and_their_outbox(store: Store) -> None:
    await store.put_alert("a1", b'{"v":1}')
    await store.put_alert("a2", b'{"v":2}')
    await store.put_alert("a1", b'{"v":3}')  # replaced, keeps its place
    assert await store.alerts() == [("a1", b'{"v":3}'), ("a2", b'{"v":2}')]

    await store.enqueue_alert_messages([("a1", b"m1"), ("a2", b"m1"), (None, b"m0")], now=1000, keep=100)
    assert await store.claim_alert_messages(now=999, hold_ms=500, limit=10) == []  # not due yet
    claimed = await store.claim_alert_messages(now=1000, hold_ms=500, limit=10)
    assert [(m.alert_id, m.message, m.state, m.attempts) for m in claimed] == [
        ("a1", b"m1", "pending", 0),
        ("a2", b"m1", "pending", 0),
    ]  # a recorded one (no endpoint wanted it) is never sent
    assert await store.claim_alert_messages(now=1400, hold_ms=500, limit=10) == []  # held by the first claim

    first, second = claimed
    await store.settle_alert_message(first.seq, "sent", 1, 0, None)
    await store.settle_alert_message(second.seq, "pending", 1, 3000, "HTTP 500")
    assert await store.claim_alert_messages(now=2000, hold_ms=500, limit=10) == []  # the retry is not due
    [again] = await store.claim_alert_messages(now=3000, hold_ms=500, limit=10)
    assert (again.seq, again.attempts, again.last_error) == (second.seq, 1, "HTTP 500")

    recent = await store.alert_messages(10)
    assert [(m.alert_id, m.state) for m in recent] == [(None, "recorded"), ("a2", "pending"), ("a1", "sent")]
    assert await store.delete_alert("a2") is True  # and what was pending for it
    assert await store.delete_alert("a2") is False
    assert await store.alerts() == [("a1", b'{"v":3}')]
    assert [(m.alert_id, m.state) for m in await store.alert_messages(10)] == [(None, "recorded"), ("a1", "sent")]


async def test_the_alert_outbox_keeps_every_pending_row_and_the_newest_others(store: Store) -> None:
    await store.enqueue_alert_messages([("a1", b"waiting")], now=0, keep=3)
    for n in range(10):
        await store.enqueue_alert_messages([(None, b"r%d" % n)], now=n, keep=3)
    kept = [m.message for m in await store.alert_messages(100)]
    assert b"waiting" in kept and 4 <= len(kept) <= 5 and kept[0] == b"r9"


async def test_console_sessions_are_kept_by_digest_and_end_by_id_key_or_age(store: Store) -> None:
    await store.create_console_session(b"h1", "k1", b'{"v":1}', now=100.0)
    await store.create_console_session(b"h2", "k1", b'{"v":2}', now=200.0)
    await store.create_console_session(b"h3", "k2", b'{"v":3}', now=300.0)
    assert await store.console_session(b"h1") == (b'{"v":1}', 100.0, 100.0)
    assert await store.console_session(b"nope") is None
    await store.touch_console_session(b"h1", 150.5)
    assert await store.console_session(b"h1") == (b'{"v":1}', 100.0, 150.5)

    await store.delete_console_session(b"h3")  # sign-out
    assert await store.console_session(b"h3") is None
    await store.create_console_session(b"h4", "k2", b"{}", now=400.0)
    assert await store.delete_console_sessions(key_id="k1") == 2  # the key was revoked
    assert await store.console_session(b"h1") is None and await store.console_session(b"h2") is None
    assert await store.console_session(b"h4") is not None

    await store.create_console_session(b"h5", "k3", b"{}", now=500.0)
    await store.touch_console_session(b"h5", 900.0)
    assert await store.purge_console_sessions(seen_before=450.0, created_before=0.0) == 1  # h4: idle
    assert await store.purge_console_sessions(seen_before=0.0, created_before=450.0) == 0
    assert await store.purge_console_sessions(seen_before=0.0, created_before=501.0) == 1  # h5: too old
    assert await store.console_session(b"h5") is None
