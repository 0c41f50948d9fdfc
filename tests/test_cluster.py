"""Several leadstream nodes on one PostgreSQL: failover by lease, admin changes on any node, the
database going away under load, retention by partitions. Nodes are `leadstream serve`
subprocesses (except the retention test, which drives one engine in-process)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

from helpers import ADMIN_KEY, MUNCHKIN, ServerProcess, activity, wait_until
from leadstream import positions
from leadstream.security.secretbox import new_master_key
from test_delivery_support import Receiver, bench, event_id, events_of, receiver
from test_store_contract import Proxy

LEASE_TTL = 1.5  # seconds: failover and lapse happen within it
HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}
FAST = {"pushIntervalMs": 20, "retryIntervalMs": 100, "probeIntervalMs": 100, "timeoutMs": 2000}


@contextlib.asynccontextmanager
async def cluster(
    tmp_path: Path, database_url: str, count: int = 2, *args: str, env: dict[str, str] | None = None,
) -> AsyncIterator[list[ServerProcess]]:  # fmt: skip
    """``count`` nodes sharing the database and the master key; started one after another."""
    env = {"LEADSTREAM_MASTER_KEY": new_master_key(), "LEADSTREAM_LEASE_TTL": str(LEASE_TTL), **(env or {})}
    nodes: list[ServerProcess] = []
    try:
        for n in range(count):
            node = ServerProcess(
                tmp_path / f"node{n}",
                "--database-url",
                database_url,
                *args,
                env={**env, "LEADSTREAM_NODE_ID": f"node{n}"},
            )
            nodes.append(await node.start())
        yield nodes
    finally:
        for node in nodes:
            node.stop()


async def call(session: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> tuple[int, Any]:
    async with session.request(method, url, json=body, headers=HEADERS) as r:
        return r.status, await r.json(content_type=None) if r.status != 204 else None


async def subscribe(session: aiohttp.ClientSession, node: ServerProcess, endpoint: str, **settings: Any) -> str:
    document = {
        "name": "c",
        "munchkinId": MUNCHKIN,
        "stream": "activity",
        "endpoint": endpoint,
        "startAt": "earliest",
        **FAST,
        **settings,
    }
    status, view = await call(session, "POST", f"{node.url}/v1/subscriptions", document)
    assert status == 201, view
    return view["id"]


async def publish(session: aiohttp.ClientSession, node: ServerProcess, numbers: range) -> int:
    body = orjson.dumps([activity(i) for i in numbers])
    async with session.post(
        f"{node.url}/v1/streams/activity/events", data=body, headers={**HEADERS, "Content-Type": "application/json"}
    ) as r:
        return r.status


def delivered_once(r: Receiver) -> list[str]:
    """Event ids in arrival order, a batch re-sent under the same delivery id counted once."""
    seen: set[str] = set()
    ids: list[str] = []
    for request in r.delivered:
        delivery = request.headers["x-leadstream-delivery"]
        if delivery not in seen:
            seen.add(delivery)
            ids.extend(event_id(e) for e in events_of(request.json()))
    return ids


def guids(numbers: range) -> list[str]:
    return [f"guid-{i}" for i in numbers]


async def test_a_killed_node_s_subscriptions_move_to_the_other_and_nothing_is_lost(tmp_path, pg_url):
    async with (
        cluster(tmp_path, pg_url) as (a, b),
        aiohttp.ClientSession() as session,
        contextlib.AsyncExitStack() as stack,
    ):
        receivers = [await stack.enter_async_context(receiver()) for _ in range(20)]
        for r in receivers:
            await subscribe(session, a, r.url, batchSize=10)
        assert await publish(session, b, range(100)) == 200
        await wait_until(
            lambda: all(len(delivered_once(r)) >= 50 for r in receivers),
            timeout=15,
            what="every subscription delivering",
        )
        published = 100
        for start in range(100, 200, 20):  # A dies while events keep coming
            assert await publish(session, b, range(start, start + 20)) == 200
            published = start + 20
            if start == 120:
                a.kill()
                killed_at = time.monotonic()
        await wait_until(
            lambda: all(len(delivered_once(r)) >= published for r in receivers),
            timeout=LEASE_TTL + 10,
            what="all 20 subscriptions delivered from node B",
        )
        assert time.monotonic() - killed_at < LEASE_TTL + 8
        for r in receivers:
            assert delivered_once(r) == guids(range(published))  # exactly once, in order


async def test_admin_changes_on_the_node_that_does_not_deliver_take_effect(tmp_path, pg_url):
    async with cluster(tmp_path, pg_url, count=1) as nodes, aiohttp.ClientSession() as session, receiver() as r:
        a = nodes[0]
        sub = await subscribe(session, a, r.url)  # A is alone: A takes its lease, and keeps it
        b = ServerProcess(
            tmp_path / "node-b", "--database-url", pg_url, env={**nodes[0].env, "LEADSTREAM_NODE_ID": "b"}
        )
        await b.start()
        try:
            on_a, on_b = f"{a.url}/v1/subscriptions/{sub}", f"{b.url}/v1/subscriptions/{sub}"
            await wait_until(lambda: _status(session, on_b), what="node B to know the subscription")
            assert await publish(session, b, range(10)) == 200
            await wait_until(lambda: len(r.ids()) == 10, what="the first 10 delivered")

            status, view = await call(session, "POST", on_b + "/pause")
            assert status == 200 and (view["state"], view["pausedReason"]) == ("paused", "manual")
            paused_at = time.monotonic()
            await wait_until(lambda: _state_is(session, on_a, "paused"), timeout=3, what="A to show the pause")
            await wait_until(lambda: _applied(pg_url, sub), timeout=3, what="the owner to pause")
            assert time.monotonic() - paused_at < 1.5
            assert await publish(session, b, range(10, 20)) == 200
            await wait_until(lambda: _field_is(session, on_b, "pending", 10), what="10 pending while paused")
            await asyncio.sleep(0.5)  # a window in which a running sender would have sent them
            assert len(r.ids()) == 10

            status, view = await call(session, "POST", on_b + "/resume")
            assert status == 200 and view["state"] == "active"
            await wait_until(lambda: len(r.ids()) == 20, what="the backlog after resume")
            assert r.ids() == guids(range(20))
            await wait_until(lambda: _field_is(session, on_b, "delivered", 20), what="node B to show the owner's count")

            status, view = await call(session, "POST", on_b + "/replay", {"from": 0})
            assert status == 200 and view["cursor"] == positions.encode(0)
            await wait_until(lambda: len(r.ids()) == 40, what="the replay")
            assert r.ids() == guids(range(20)) * 2

            status, view = await call(session, "DELETE", on_b)
            assert status == 200 and view["state"] == "deprovisioned"
            await wait_until(lambda: _state_is(session, on_a, "deprovisioned"), timeout=3, what="A to show it")
            await wait_until(lambda: _applied(pg_url, sub), timeout=3, what="the owner to deprovision")
            assert await publish(session, b, range(20, 30)) == 200
            await wait_until(lambda: _field_is(session, on_a, "state", "deprovisioned"), what="still deprovisioned")
            status, _ = await call(session, "POST", on_a + "/resume")
            assert status == 409  # for good
            await asyncio.sleep(0.5)
            assert len(r.ids()) == 40
        finally:
            b.stop()


async def _applied(database_url: str, sub_id: str) -> bool:
    """Whether the delivering node has taken every change asked (views show them at once, before)."""
    conn = await asyncpg.connect(database_url)
    try:
        return bool(await conn.fetchval("SELECT applied_rev >= control_rev FROM subscriptions WHERE id = $1", sub_id))
    finally:
        await conn.close()


async def _status(session: aiohttp.ClientSession, url: str) -> bool:
    status, _ = await call(session, "GET", url)
    return status == 200


async def _field_is(session: aiohttp.ClientSession, url: str, name: str, value: Any) -> bool:
    status, view = await call(session, "GET", url)
    return status == 200 and view[name] == value


async def _state_is(session: aiohttp.ClientSession, url: str, state: str) -> bool:
    return await _field_is(session, url, "state", state)


async def test_postgresql_going_away_under_load_is_503_then_everything_resumes(tmp_path, pg_url):
    parts = urllib.parse.urlsplit(pg_url)
    proxy = Proxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    await proxy.start()
    via_proxy = parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}").geturl()
    try:
        async with cluster(tmp_path, via_proxy) as (a, b), aiohttp.ClientSession() as session, receiver() as r:
            await subscribe(session, a, r.url)
            await outage_under_load(session, [a, b], r, proxy.cut, proxy.start)
    finally:
        await proxy.cut()


async def outage_under_load(
    session: aiohttp.ClientSession, nodes: list[ServerProcess], r: Receiver,
    take_away: Callable[[], Awaitable[None]], bring_back: Callable[[], Awaitable[None]],
) -> None:  # fmt: skip
    """Publishing to the nodes in turn (5 events a request) while the database goes away and comes
    back: ingest answers 503 meanwhile (never 500), every node says degraded, ingest comes back
    by itself, nothing acknowledged is lost, and the refused requests sent again land once."""
    accepted: list[range] = []
    refused: list[range] = []  # 503: not acknowledged (a commit cut off before its answer may have landed)
    statuses: list[int] = []
    next_id = 0

    async def produce(until: asyncio.Event) -> None:
        nonlocal next_id
        while not until.is_set():
            numbers = range(next_id, next_id + 5)
            next_id += 5
            status = await publish(session, nodes[next_id % len(nodes)], numbers)
            statuses.append(status)
            (accepted if status == 200 else refused).append(numbers)
            await asyncio.sleep(0.01)  # a producer's pace, not a wait for a condition

    stop = asyncio.Event()
    producer = asyncio.create_task(produce(stop))
    await wait_until(lambda: len(accepted) >= 5, what="ingest under load")
    await take_away()
    await wait_until(lambda: statuses[-3:] == [503] * 3, what="ingest answering 503")
    for node in nodes:
        async with session.get(node.url + "/healthz") as h:
            assert h.status == 503 and (await h.json())["status"] == "degraded"
    await bring_back()
    await wait_until(lambda: statuses[-3:] == [200] * 3, timeout=15, what="ingest back by itself")
    stop.set()
    await producer
    assert set(statuses) <= {200, 503}, statuses  # never a 500
    for node in nodes:
        await wait_until(lambda: _healthy(session, node), what="/healthz ok again")
    expected = {f"guid-{i}" for numbers in accepted for i in numbers}
    await wait_until(lambda: set(r.ids()) >= expected, timeout=15, what="every accepted event delivered")
    # Nothing acknowledged is lost; anything else delivered came from an unacknowledged request.
    maybe = {f"guid-{i}" for numbers in refused for i in numbers}
    assert set(r.ids()) - expected <= maybe
    # A 503 means "retry": records are idempotent by key, so the retry is exact either way.
    for numbers in refused:
        assert await publish(session, nodes[0], numbers) == 200
    await wait_until(lambda: set(r.ids()) >= expected | maybe, timeout=15, what="every retried event delivered")
    assert set(r.ids()) == expected | maybe


async def _healthy(session: aiohttp.ClientSession, node: ServerProcess) -> bool:
    async with session.get(node.url + "/healthz") as h:
        return h.status == 200


async def test_retention_drops_partitions_and_counts_what_a_paused_subscription_missed(pg_url, tmp_path):
    from leadstream.store.postgres import DAY_MS

    async with bench(tmp_path, database_url=pg_url, node_id="a", lease_ttl=2) as node, receiver() as r:
        store = node.store
        document = {
            "name": "p",
            "munchkinId": MUNCHKIN,
            "stream": "activity",
            "endpoint": r.url,
            "eventTypes": [10],
            "startAt": "earliest",
            **FAST,
        }
        sub = (await node.subscriptions.create(document))["id"]
        await node.subscriptions.pause(sub)
        await wait_until(lambda: node.engine.leases.mine(sub), what="the engine to take the lease")  # its owner counts
        events = [activity(i, type_id=10 if i % 3 else 1) for i in range(30)]  # 20 of them match
        await node.publish("activity", events)
        async with store._pool.acquire() as conn:  # type: ignore[attr-defined]
            partitions = await store._partitions(conn)  # type: ignore[attr-defined]
        assert partitions
        later = int(time.time() * 1000) + 2 * DAY_MS
        await node.engine.count_expired(await store.position_before(later))  # the owner counts first
        went = await store.purge(later)
        assert went == 30
        async with store._pool.acquire() as conn:  # type: ignore[attr-defined]
            assert await store._partitions(conn) == []  # dropped whole, not emptied  # type: ignore[attr-defined]
        view = await node.subscriptions.view(sub)
        assert view["expired"] == 20 and view["pending"] == 0
        assert r.ids() == []


async def test_every_node_counts_what_expires_for_the_paused_subscriptions_it_delivers(tmp_path, pg_url):
    import asyncpg

    from leadstream.store.postgres import PostgresStore

    quick = {"LEADSTREAM_PURGE_INTERVAL": "0.3"}  # events go 2 s + grace (2 × 0.3 + 1.5 s) after ingest
    async with (
        cluster(tmp_path, pg_url, 2, "--retention", "2s", env=quick) as (a, b),
        aiohttp.ClientSession() as session,
        receiver() as r,
        PostgresStore(pg_url, node_id="probe") as store,
    ):
        filters = [[10], [1], [10], [1], [10, 1], [10]]
        subs = [await subscribe(session, a, r.url, eventTypes=types) for types in filters]
        conn = await asyncpg.connect(pg_url)
        try:

            async def owners() -> dict[str, str]:
                rows = await conn.fetch(
                    "SELECT sub_id, node_id FROM leases WHERE expires_at > "
                    "(extract(epoch from clock_timestamp()) * 1000)::bigint"
                )
                return {row["sub_id"]: row["node_id"] for row in rows}

            async def split() -> bool:
                held = await owners()
                return set(held) == set(subs) and sorted(held.values()) == ["node0"] * 3 + ["node1"] * 3

            await wait_until(split, timeout=10, what="the leases shared by both nodes")
            node_of = {"node0": a, "node1": b}
            held = await owners()
            for sub in subs:
                assert (await call(session, "POST", f"{a.url}/v1/subscriptions/{sub}/pause"))[0] == 200
            for sub in subs:  # as its owner sees it: paused there before any event comes
                await wait_until(
                    lambda: _state_is(session, f"{node_of[held[sub]].url}/v1/subscriptions/{sub}", "paused"),
                    what="the owner to pause",
                )
            body = orjson.dumps([activity(i, type_id=1 if i % 3 == 0 else 10) for i in range(30)])  # 10 of type 1
            async with session.post(
                f"{b.url}/v1/streams/activity/events",
                data=body,
                headers={**HEADERS, "Content-Type": "application/json"},
            ) as answer:
                assert answer.status == 200
            last = await store.last_position()

            async def purged() -> bool:
                return await store.first_position() > last

            await wait_until(purged, timeout=15, what="the events purged")
            assert await owners() == held  # the counts below are each owner's own
            expected = {10: 20, 1: 10}
            for sub, types in zip(subs, filters):
                _, view = await call(session, "GET", f"{a.url}/v1/subscriptions/{sub}")
                assert (view["expired"], view["delivered"], view["pending"]) == (sum(expected[t] for t in types), 0, 0)
            assert r.ids() == []
        finally:
            await conn.close()


async def test_db_upgrade_creates_the_schema_once(pg_url):
    import subprocess
    import sys

    import asyncpg

    from leadstream.store.postgres import SCHEMA_VERSION

    for _ in range(2):  # idempotent
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "leadstream.cli", "db", "upgrade", "--database-url", pg_url],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        assert f"database schema at version {SCHEMA_VERSION}" in done.stdout
    conn = await asyncpg.connect(pg_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_version") == SCHEMA_VERSION
        assert await conn.fetchval("SELECT count(*) FROM append_ranges") == 1
    finally:
        await conn.close()
