"""A source survives its server: SIGKILL mid-poll on one node (SQLite), and a two-node cluster on
PostgreSQL losing the node that runs it. No gap, no stored duplicate; `leadstream serve` processes
against the simulated instance on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from helpers import ServerProcess, wait_until
from leadstream.security.secretbox import new_master_key
from leadstream.sim.marketo import Limits, MarketoInstance
from leadstream.store.sqlite import SqliteStore

FAST_ENV = {
    "LEADSTREAM_SOURCE_FOLLOW_INTERVAL": "0.05",
    "LEADSTREAM_SOURCE_BACKOFF_BASE": "0.05",
    "LEADSTREAM_SOURCE_BACKOFF_CAP": "0.5",
}
TYPES = [1, 2, 3, 6, 7, 10, 11, 12, 13, 22, 23, 24]  # two groups of ≤ 10, and deletions
ROOMY = Limits(calls_per_window=100_000, max_concurrent=50, daily_quota=10_000_000)


def source_body(sim: MarketoInstance) -> dict[str, Any]:
    return {
        "type": "marketo", "name": "sim", "munchkinId": sim.munchkin_id, "restUrl": sim.url,
        "clientId": sim.client_id, "clientSecret": sim.client_secret, "activityTypes": TYPES,
        "pollIntervalMs": 20, "dailyQuota": 10_000_000, "callsPer20s": 100_000,
    }  # fmt: skip


async def published(http: aiohttp.ClientSession, node: ServerProcess, source_id: str) -> int:
    async with http.get(f"{node.url}/v1/sources/{source_id}", headers=node.headers) as r:
        return int((await r.json())["published"])


def assert_exactly_once(stored_ids: list[str], truth: list[dict[str, Any]]) -> None:
    counts = Counter(stored_ids)
    assert not [guid for guid, n in counts.items() if n > 1]  # no stored duplicate
    assert set(counts) == {r["marketoGUID"] for r in truth}  # no gap


async def test_sigkill_mid_poll_resumes_from_the_checkpoints(tmp_path: Path) -> None:
    # 80 ms a call: the backlog takes seconds of pages, and the kill lands inside it
    async with MarketoInstance(rate=0, limits=ROOMY, latency=0.08) as sim, aiohttp.ClientSession() as http:
        node = await ServerProcess(tmp_path / "data", env=FAST_ENV).start()
        try:
            async with http.post(f"{node.url}/v1/sources", json=source_body(sim), headers=node.headers) as r:
                assert r.status == 201, await r.text()
                source_id = (await r.json())["id"]
            sim.inject(6000, [*TYPES, 37])
            await wait_until(lambda: published(http, node, source_id), 30, what="the first pages")
            node.kill()
            assert await published_in(tmp_path / "data") < 6000  # killed mid-backlog
            again = await ServerProcess(tmp_path / "data", env=FAST_ENV, key=node.key).start()
            try:
                sim.inject(300, [*TYPES, 37])  # and more while it catches up
                await wait_until(
                    lambda: published_in_at_least(tmp_path / "data", 6300), 60, what="the rest after the restart"
                )
            finally:
                again.stop()
        finally:
            node.stop()
        async with SqliteStore(tmp_path / "data" / "leadstream.db") as store:
            assert_exactly_once([e.id for e in await store.read(0, 100_000)], sim.truth())


async def published_in(data_dir: Path) -> int:
    """Events in the server's log, read-only (opening a store would checkpoint the server's WAL under it)."""
    with contextlib.closing(sqlite3.connect(f"file:{data_dir / 'leadstream.db'}?mode=ro", uri=True)) as conn:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


async def published_in_at_least(data_dir: Path, count: int) -> bool:
    return await published_in(data_dir) >= count


async def source_handover(
    tmp_path: Path, pg_url: str, *, ttl: float, stop: Callable[[ServerProcess], None], within: float
) -> float:
    """Two nodes on PostgreSQL and one source with a backlog; ``stop`` the node running it while it
    reads, and add more. Returns the seconds from the stop to the other node's first call to the
    instance (which must come ``within`` that), once every activity is stored exactly once."""
    env = {**FAST_ENV, "LEADSTREAM_MASTER_KEY": new_master_key(), "LEADSTREAM_LEASE_TTL": str(ttl)}
    async with MarketoInstance(rate=0, limits=ROOMY, latency=0.02) as sim, aiohttp.ClientSession() as http:
        nodes: list[ServerProcess] = []
        try:
            for n in range(2):
                node = ServerProcess(
                    tmp_path / f"node{n}", "--database-url", pg_url, env={**env, "LEADSTREAM_NODE_ID": f"node{n}"},
                    key=nodes[0].key if nodes else None,
                )  # fmt: skip
                nodes.append(await node.start())
            async with http.post(f"{nodes[0].url}/v1/sources", json=source_body(sim), headers=nodes[0].headers) as r:
                assert r.status == 201, await r.text()
                source_id = (await r.json())["id"]
            sim.inject(4000, [*TYPES, 37])
            conn = await asyncpg.connect(pg_url)
            try:

                async def owner() -> str | None:
                    return await conn.fetchval(
                        "SELECT node_id FROM source_leases WHERE source_id = $1 AND expires_at > "
                        "(extract(epoch FROM clock_timestamp()) * 1000)::bigint", source_id
                    )  # fmt: skip

                first = await wait_until(owner, 10, what="a node to take the source")
                await wait_until(lambda: published(http, nodes[0], source_id), 30, what="the first pages")
                victim, survivor = (nodes[0], nodes[1]) if first == "node0" else (nodes[1], nodes[0])
                await asyncio.to_thread(stop, victim)  # returns once it exited
                stopped_at, calls_then = time.monotonic(), sim.stats.counted  # a call counts as it arrives
                sim.inject(500, [*TYPES, 37])
                await wait_until(lambda: sim.stats.counted > calls_then, within, what="the other node's first call")
                first_call = time.monotonic() - stopped_at
                assert await owner() == ("node1" if first == "node0" else "node0")

                async def stored() -> list[str] | None:
                    rows = await conn.fetch("SELECT id FROM events")
                    return [row[0] for row in rows] if len(rows) >= 4500 else None

                await wait_until(stored, 60, what="every activity in the log")
                await asyncio.sleep(0.2)  # a duplicate stored late would show
                ids = [row[0] for row in await conn.fetch("SELECT id FROM events")]
                assert_exactly_once(ids, sim.truth())
                assert await published(http, survivor, source_id) > 0
                return first_call
            finally:
                await conn.close()
        finally:
            for node in nodes:
                node.stop()


async def test_a_two_node_cluster_losing_the_sources_node_moves_it_with_no_gap(tmp_path: Path, pg_url: str) -> None:
    # SPEC §12: within the lease TTL + 2 s (the deadline is generous: a loaded machine is slow)
    waited = await source_handover(tmp_path, pg_url, ttl=1.5, stop=ServerProcess.kill, within=15)
    print(f"after SIGKILL (TTL 1.5 s): the other node's first call after {waited:.2f} s")


async def test_sigterm_releases_the_source_and_the_other_node_runs_it_at_once(tmp_path: Path, pg_url: str) -> None:
    # A TTL of 30 s and a deadline of 10: only a released lease moves in time (no timed assertion).
    waited = await source_handover(tmp_path, pg_url, ttl=30, stop=ServerProcess.stop, within=10)
    print(f"after SIGTERM (TTL 30 s): the other node's first call after {waited:.2f} s")
