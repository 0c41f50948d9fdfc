"""Sources in the store (SPEC §10), on SQLite and PostgreSQL alike: the source rows with compare-and-set,
per-group checkpoints, and the API-call ledger every node of a Munchkin ID shares."""

from __future__ import annotations

import asyncio
import time

import pytest

from leadstream.sources.budget import ApiBudget, BudgetLimits, day_start
from leadstream.sources.ledger import CallLimits, Granted, Refused, StoreLedger
from leadstream.store import Store
from leadstream.store.base import StoredSource
from leadstream.store.postgres import PostgresStore
from leadstream.testing import wait_until

TENANT = "123-ABC-456"


def limits(now: float, **overrides: float) -> CallLimits:
    values = {"calls_per_window": 5, "window_seconds": 20.0, "max_in_flight": 3, "calls_per_day": 100}
    values.update(overrides)
    return CallLimits(
        int(values["calls_per_window"]), values["window_seconds"], int(values["max_in_flight"]),
        int(values["calls_per_day"]), day_start(now), 330.0,
    )  # fmt: skip


async def test_sources_are_stored_changed_with_compare_and_set_and_deleted_with_their_checkpoints(
    store: Store,
) -> None:
    await store.create_source(StoredSource("src_a", TENANT, b'{"name":"a"}', b"{}", 1))
    await store.create_source(StoredSource("src_b", "987-XYZ-654", b'{"name":"b"}', b"{}", 2))
    assert [s.id for s in await store.list_sources()] == ["src_a", "src_b"]
    assert [s.id for s in await store.list_sources(TENANT)] == ["src_a"]
    assert await store.update_source("src_a", b'{"name":"a2"}', True, expected_rev=0)
    assert not await store.update_source("src_a", b'{"name":"lost"}', False, expected_rev=0)  # someone came first
    found = await store.get_source("src_a")
    assert found is not None and (found.config, found.paused, found.rev) == (b'{"name":"a2"}', True, 1)
    await store.save_source_status("src_a", b'{"published":3}')
    await store.save_source_checkpoint("src_a", "1,2,3", b'{"token":"T1"}')
    await store.save_source_checkpoint("src_a", "1,2,3", b'{"token":"T2"}')
    await store.save_source_checkpoint("src_a", "deletedLeads", b'{"token":"D1"}')
    assert await store.source_checkpoints("src_a") == {"1,2,3": b'{"token":"T2"}', "deletedLeads": b'{"token":"D1"}'}
    found = await store.get_source("src_a")
    assert found is not None and found.status == b'{"published":3}'
    assert await store.delete_source("src_a")
    assert not await store.delete_source("src_a")
    assert await store.get_source("src_a") is None and await store.source_checkpoints("src_a") == {}
    await store.save_source_checkpoint("src_a", "1,2,3", b'{"token":"T3"}')  # a poller finishing its page
    assert await store.source_checkpoints("src_a") == {}  # leaves nothing behind


async def test_the_ledger_grants_within_every_limit_and_says_when_to_ask_again(store: Store) -> None:
    ledger = StoreLedger(store)
    now = time.time()
    granted = [await ledger.reserve(TENANT, now, limits(now)) for _ in range(4)]
    assert [type(g) for g in granted] == [Granted, Granted, Granted, Refused]
    assert isinstance(granted[3], Refused) and granted[3].reason == "in_flight"
    for g in granted[:3]:
        assert isinstance(g, Granted)
        await ledger.release(TENANT, g.call_id, finished_at=now + 1, counted=True)
    later = now + 2
    more = [await ledger.reserve(TENANT, later, limits(now)) for _ in range(3)]
    assert [type(g) for g in more] == [Granted, Granted, Refused]  # 5 in the window
    refused = more[2]
    assert isinstance(refused, Refused) and refused.reason == "window"
    assert refused.retry_at == pytest.approx(now + 1 + 20.0)  # the oldest finished call leaves the window then
    # a call Marketo did not count is forgotten: the window and the day have room for one more
    second = more[1]
    assert isinstance(second, Granted)
    await ledger.release(TENANT, second.call_id, finished_at=later, counted=False)
    usage = await ledger.usage(TENANT, later, limits(now))
    assert (usage.today, usage.in_window) == (4, 4)
    await ledger.block(TENANT, later + 5, "606")
    blocked = await ledger.reserve(TENANT, later + 1, limits(now))
    assert isinstance(blocked, Refused) and (blocked.reason, blocked.retry_at, blocked.detail) == (
        "blocked", later + 5, "606"
    )  # fmt: skip
    day = limits(now, calls_per_day=4)
    assert isinstance(spent := await ledger.reserve(TENANT, later + 6, day), Refused) and spent.reason == "day"


async def test_budgets_of_one_munchkin_on_two_postgres_nodes_never_exceed_the_limits(pg_url: str) -> None:
    async with PostgresStore(pg_url, node_id="n1") as one, PostgresStore(pg_url, node_id="n2") as two:
        budget_limits = BudgetLimits(calls_per_20s=12, max_concurrent=3, daily_quota=1000, quota_share=1.0)
        budgets = [ApiBudget("555-PGX-555", StoreLedger(s), budget_limits, retry_interval=0.005) for s in (one, two)]
        in_flight = peak = 0
        calls = 0

        async def call(budget: ApiBudget) -> None:
            nonlocal in_flight, peak, calls
            async with budget.call():
                in_flight += 1
                peak = max(peak, in_flight)
                calls += 1
                await asyncio.sleep(0.01)
                in_flight -= 1

        tasks = [asyncio.create_task(call(budgets[i % 2])) for i in range(30)]
        await wait_until(lambda: calls >= 12, 20, what="the window's 12 calls")
        await asyncio.sleep(0.3)
        assert calls == 12  # the window is full for 20 s: the rest wait
        assert peak <= 3
        status = await budgets[0].status()
        assert (status.calls_today, status.in_window) == (12, 12)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_source_leases_spread_over_live_nodes(pg_url: str) -> None:
    async with PostgresStore(pg_url, node_id="n1") as one, PostgresStore(pg_url, node_id="n2") as two:
        for i in range(4):
            await one.create_source(StoredSource(f"src_lease{i}", TENANT, b"{}", b"{}", i))
        first = await one.lease_sources("n1", 3.0)
        assert first == {f"src_lease{i}" for i in range(4)}  # alone so far
        assert await two.lease_sources("n2", 3.0) == set()  # n1 holds them until they expire
        assert first is not None and len(await one.lease_sources("n1", 3.0) or ()) == 2  # now it keeps its share

        async def taken_by_two() -> set[str] | None:  # n1 renews nothing: once its leases run out
            taken = await two.lease_sources("n2", 3.0)
            return taken if taken and len(taken) >= 2 else None

        await wait_until(taken_by_two, 10, what="n2 to take n1's expired leases")


async def test_released_source_leases_are_taken_at_once_and_the_other_nodes_are_told(pg_url: str) -> None:
    async with PostgresStore(pg_url, node_id="n1") as one, PostgresStore(pg_url, node_id="n2") as two:
        heard: list[str | None] = []
        two.on_cluster_change(heard.append)
        for i in range(2):
            await one.create_source(StoredSource(f"src_release{i}", TENANT, b"{}", b"{}", i))
        assert await one.lease_sources("n1", 60.0) == {"src_release0", "src_release1"}
        assert await two.lease_sources("n2", 60.0) == set()  # held for a minute
        await one.release_source_leases("n1")
        await wait_until(lambda: None in heard, 5, what="n2 told of the release")
        assert await two.lease_sources("n2", 60.0) == {"src_release0", "src_release1"}  # long before the TTL
        assert await one.lease_sources("n1", 60.0) == set()  # n2 holds them now
