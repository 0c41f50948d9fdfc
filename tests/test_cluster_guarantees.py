"""SPEC §12 on real PostgreSQL with `leadstream serve` nodes: read-your-writes on every node,
failover within the lease TTL plus 2 s, SIGTERM behaviour, appends from several nodes that no
reader skips, and a real PostgreSQL restart (a throwaway server of the test's own)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from leadstream import journal
from leadstream.store.postgres import NOW_MS
from leadstream.testing import ServerProcess, wait_until
from test_cluster import HEADERS, call, cluster, delivered_once, guids, outage_under_load, publish, subscribe
from test_delivery_support import Receiver, receiver
from throwaway_pg import ThrowawayPostgres, throwaway_pg  # noqa: F401  (a fixture)

ROUNDS = 200


async def test_what_one_node_writes_every_node_answers_at_once(tmp_path, pg_url):
    async with cluster(tmp_path, pg_url) as (a, b), aiohttp.ClientSession() as session, receiver() as r:
        for n in range(ROUNDS):
            munchkin = f"{n:03d}-RYW-{n:03d}"
            document = {"name": f"s{n}", "munchkinId": munchkin, "stream": "activity", "endpoint": r.url}
            status, created = await call(session, "POST", f"{a.url}/v1/subscriptions", document)
            assert status == 201, created
            sub = created["id"]
            on_a, on_b = f"{a.url}/v1/subscriptions/{sub}", f"{b.url}/v1/subscriptions/{sub}"

            status, view = await call(session, "GET", on_b)
            assert (status, view["id"], view["name"]) == (200, sub, f"s{n}"), (n, view)
            status, page = await call(session, "GET", f"{b.url}/v1/subscriptions?munchkinId={munchkin}")
            assert status == 200 and [s["id"] for s in page["subscriptions"]] == [sub], (n, page)
            status, view = await call(session, "PATCH", on_b, {"name": f"renamed{n}"})
            assert status == 200 and view["name"] == f"renamed{n}", (n, view)
            status, view = await call(session, "GET", on_a)
            assert view["name"] == f"renamed{n}", (n, view)

            status, view = await call(session, "POST", on_b + "/pause")
            assert status == 200 and (view["state"], view["pausedReason"]) == ("paused", "manual"), (n, view)
            for node_url in (on_a, on_b):  # whichever node delivers it answers with the pause
                status, view = await call(session, "GET", node_url)
                assert (view["state"], view["pausedReason"]) == ("paused", "manual"), (n, node_url, view)

            if n % 10:
                continue  # (the rest every tenth round: the subscriptions stay paused, costing nothing)
            status, page = await call(session, "GET", on_b + "/journal?latest=true")
            assert status in (200, 204), (n, page)
            status, view = await call(session, "POST", on_a + "/resume")
            assert status == 200 and view["state"] == "active", (n, view)
            status, view = await call(session, "GET", on_b)
            assert view["state"] == "active", (n, view)

            status, view = await call(session, "DELETE", on_b)
            assert status == 200 and view["state"] == "deprovisioned", (n, view)
            status, view = await call(session, "GET", on_a)
            assert view["state"] == "deprovisioned", (n, view)


async def test_an_api_key_made_on_one_node_works_and_shows_on_every_node_at_once(tmp_path, pg_url):
    async with cluster(tmp_path, pg_url) as (a, b), aiohttp.ClientSession() as session:
        for n in range(20):
            munchkin = f"{n:03d}-KEY-{n:03d}"
            body = {"name": f"k{n}", "munchkinIds": [munchkin], "scopes": ["read", "ingest"]}
            status, made = await call(session, "POST", f"{a.url}/v1/keys", body)
            assert status == 201, made
            status, shown = await call(session, "GET", f"{b.url}/v1/keys/{made['id']}")
            assert status == 200 and shown["name"] == f"k{n}", shown
            status, listed = await call(session, "GET", f"{b.url}/v1/keys?munchkinId={munchkin}")
            assert [k["id"] for k in listed["keys"]] == [made["id"]], listed
            tenant = {"Authorization": f"Bearer {made['key']}"}
            async with session.get(f"{b.url}/v1/subscriptions", headers=tenant) as answer:
                assert answer.status == 200, await answer.text()

            status, revoked = await call(session, "DELETE", f"{b.url}/v1/keys/{made['id']}")
            assert status == 200 and revoked["revokedAt"], revoked
            status, shown = await call(session, "GET", f"{a.url}/v1/keys/{made['id']}")
            assert shown["revokedAt"] == revoked["revokedAt"], shown
        async with session.get(f"{b.url}/v1/keys/000000000000", headers=HEADERS) as answer:
            assert answer.status == 404  # a key nobody made is still not found


async def test_an_activity_type_loaded_on_one_node_is_known_on_the_other_at_once(tmp_path, pg_url):
    async with cluster(tmp_path, pg_url) as (a, b), aiohttp.ClientSession() as session, receiver() as r:
        for n in range(5):
            munchkin, name = f"{n:03d}-CAT-{n:03d}", f"Attend Webinar {n}"
            types = {"result": [{"id": 100001 + n, "name": name, "attributes": []}]}
            status, loaded = await call(session, "PUT", f"{a.url}/v1/catalog/activity/{munchkin}", types)
            assert status == 200 and loaded["loaded"] == 1, loaded
            status, catalog = await call(session, "GET", f"{b.url}/v1/catalog/activity?munchkinId={munchkin}")
            assert status == 200 and name in str(catalog["types"]), catalog
            document = {
                "name": "c", "munchkinId": munchkin, "stream": "activity", "endpoint": r.url, "eventTypes": [name],
            }  # fmt: skip
            status, view = await call(session, "POST", f"{b.url}/v1/subscriptions", document)
            assert status == 201, view  # B took the type A just loaded (else: 422, unknown event type)


async def leases_by_node(database_url: str) -> dict[str, set[str]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(f"SELECT node_id, sub_id FROM leases WHERE expires_at > {NOW_MS}")
    finally:
        await conn.close()
    owned: dict[str, set[str]] = {}
    for node_id, sub_id in rows:
        owned.setdefault(node_id, set()).add(sub_id)
    return owned


async def two_nodes_with_20_subscriptions_each(
    session: aiohttp.ClientSession, nodes: list[ServerProcess], receivers: list[Receiver], database_url: str
) -> dict[str, Receiver]:
    """40 subscriptions created on the first node; returns the first node's 20, once the leases
    are split 20/20."""
    by_sub = {}
    for r in receivers:
        by_sub[await subscribe(session, nodes[0], r.url, batchSize=10)] = r

    async def split() -> bool:
        owned = await leases_by_node(database_url)
        return sorted(len(s) for s in owned.values()) == [20, 20] and set().union(*owned.values()) == set(by_sub)

    await wait_until(split, timeout=15, what="the leases split 20/20")
    first = (await leases_by_node(database_url))["node0"]
    return {sub: by_sub[sub] for sub in first}


class Producer:
    """Publishes one event every 20 ms through a node, numbered from 0, until stopped."""

    def __init__(self, session: aiohttp.ClientSession, node: ServerProcess) -> None:
        self.session, self.node, self.published = session, node, 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            assert await publish(self.session, self.node, range(self.published, self.published + 1)) == 200
            self.published += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.02)

    async def __aenter__(self) -> Producer:
        self._task = asyncio.create_task(self.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await self._task


def first_request_after(r: Receiver, moment: float) -> float | None:
    return next((q.at for q in r.requests if q.at > moment), None)


async def handover(tmp_path: Path, database_url: str, ttl: float, stop: Callable[[ServerProcess], None]) -> list[float]:
    """Two nodes with 20 subscriptions each under steady traffic; ``stop`` the first node. Returns,
    for each of its subscriptions, the seconds from the stop to the new owner's first attempt,
    once every event published has arrived exactly once, in order (a batch in flight re-sent under
    its delivery id counts once)."""
    async with (
        cluster(tmp_path, database_url, env={"LEADSTREAM_LEASE_TTL": str(ttl)}) as nodes,
        aiohttp.ClientSession() as session,
        contextlib.AsyncExitStack() as stack,
    ):
        receivers = [await stack.enter_async_context(receiver()) for _ in range(40)]
        moving = await two_nodes_with_20_subscriptions_each(session, nodes, receivers, database_url)
        async with Producer(session, nodes[1]) as producer:
            await wait_until(lambda: all(delivered_once(r) for r in receivers), timeout=15, what="all delivering")
            await asyncio.to_thread(stop, nodes[0])
            stopped_at = time.monotonic()
            await wait_until(
                lambda: all(first_request_after(r, stopped_at) for r in moving.values()),
                timeout=ttl + 10,
                what="every stopped node's subscription attempted by the other",
            )
        published = producer.published
        await wait_until(
            lambda: all(len(delivered_once(r)) >= published for r in receivers), timeout=15, what="everything"
        )
        for r in receivers:  # none lost; none twice, but for the batch in flight (same delivery id)
            assert delivered_once(r) == guids(range(published))
        return [first_request_after(r, stopped_at) - stopped_at for r in moving.values()]  # type: ignore[operator]


async def test_a_killed_owner_s_subscriptions_resume_within_the_ttl_plus_2_s(tmp_path, pg_url):
    ttl = 2.0
    waits = await handover(tmp_path, pg_url, ttl, ServerProcess.kill)
    print(f"failover with a {ttl} s TTL: first attempt by the new owner after {min(waits):.2f}–{max(waits):.2f} s")
    assert max(waits) <= ttl + 2, waits


async def test_sigterm_gives_the_leases_up_and_the_other_node_starts_at_once(tmp_path, pg_url):
    # The default TTL: without the release the other node would wait up to 15 s.
    waits = await handover(tmp_path, pg_url, 15.0, ServerProcess.stop)  # SIGTERM; returns once it exited
    print(f"after SIGTERM: the next node's first attempt after {min(waits):.2f}–{max(waits):.2f} s")
    assert max(waits) < 1.0, waits


def freeze(server: ThrowawayPostgres) -> list[int]:
    """Stop every process of the server (SIGSTOP): connections stay open and nothing answers, as
    behind a network cut. Returns the pids, for ``thaw``."""
    master = int((server.data / "postmaster.pid").read_text().split()[0])
    children = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
    pids = [master, *map(int, children)]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    return pids


def thaw(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGCONT)


@pytest.mark.parametrize("loss", ["stopped", "frozen"])
async def test_a_node_that_lost_the_database_stops_within_2_s_of_sigterm(
    tmp_path,
    throwaway_pg,  # noqa: F811
    loss,
):
    async with cluster(tmp_path, throwaway_pg.url, 1) as (node,), aiohttp.ClientSession() as session:
        async with receiver() as r:
            await subscribe(session, node, r.url)
            assert await publish(session, node, range(10)) == 200
            await wait_until(lambda: len(r.ids()) == 10, what="delivering")
            frozen: list[int] = []
            if loss == "stopped":
                throwaway_pg.stop("immediate")
                await wait_until(lambda: _degraded(session, node), what="the node to see the database gone")
            else:  # no answer at all: the node's connections hang
                frozen = freeze(throwaway_pg)
            try:
                asked = time.monotonic()
                assert node.proc is not None
                node.proc.terminate()
                code = await asyncio.to_thread(node.proc.wait, 20)
                took = time.monotonic() - asked
            finally:
                thaw(frozen)
            print(f"SIGTERM with the database {loss}: exited after {took:.2f} s with {code}")
            assert took < 2.0, node.tail()


async def _degraded(session: aiohttp.ClientSession, node: ServerProcess) -> bool:
    async with session.get(node.url + "/healthz") as answer:
        return answer.status == 503


async def test_a_real_postgresql_restart_is_503_while_down_and_nothing_acknowledged_is_lost(
    tmp_path,
    throwaway_pg,  # noqa: F811
):
    async with cluster(tmp_path, throwaway_pg.url) as (a, b), aiohttp.ClientSession() as session, receiver() as r:
        await subscribe(session, a, r.url)
        await outage_under_load(
            session,
            [a, b],
            r,
            lambda: asyncio.to_thread(throwaway_pg.stop, "fast"),
            lambda: asyncio.to_thread(throwaway_pg.start),
        )


async def test_three_nodes_appending_at_full_speed_a_journal_reader_sees_each_event_once_in_order(tmp_path, pg_url):
    producers, per_producer, batch = 6, 3000, 100  # two producers per node
    total = producers * per_producer
    async with cluster(tmp_path, pg_url, 3) as nodes, aiohttp.ClientSession() as session, receiver() as r:
        sub = await subscribe(session, nodes[0], r.url)

        async def produce(n: int) -> None:
            node = nodes[n % 3]
            for start in range(n * per_producer, (n + 1) * per_producer, batch):
                assert await publish(session, node, range(start, start + batch)) == 200

        async def follow() -> tuple[list[int], list[int]]:
            """The journal's next links on one node, while the others append too."""
            numbers: list[int] = []
            positions: list[int] = []
            url = f"{nodes[2].url}/v1/subscriptions/{sub}/journal?limit={journal.MAX_LIMIT}"  # short pages: it keeps up
            deadline = time.monotonic() + 120  # a bound on a loaded machine, not a pace
            while len(numbers) < total and time.monotonic() < deadline:
                async with session.get(url, headers=HEADERS) as answer:
                    assert answer.status in (200, 204), await answer.text()
                    url = nodes[2].url + answer.links["next"]["url"].path_qs
                    if answer.status == 204:
                        await asyncio.sleep(0.01)  # the pace of a polling consumer
                        continue
                    page = await answer.json()
                numbers += [int(entry["event"]["id"].removeprefix("guid-")) for entry in page["events"]]
                positions += [journal.decode_position(entry["position"]) for entry in page["events"]]
            return numbers, positions

        reading = asyncio.create_task(follow())
        started = time.monotonic()
        await asyncio.gather(*(produce(n) for n in range(producers)))
        published = time.monotonic() - started
        numbers, positions = await reading
        missing = sorted(set(range(total)) - set(numbers))
        assert not missing, (
            f"{len(missing)} events never read (the first: {missing[:5]}); all published after {published:.1f} s, "
            f"the reader gave up after {time.monotonic() - started:.1f} s"
        )
        assert len(numbers) == len(set(numbers)) == total  # every event, exactly once
        assert positions == sorted(set(positions))  # in position order
        for n in range(producers):  # and each producer's events in the order it published them
            mine = [i for i in numbers if n * per_producer <= i < (n + 1) * per_producer]
            assert mine == list(range(n * per_producer, (n + 1) * per_producer))
