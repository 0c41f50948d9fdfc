"""The Marketo REST client against the simulated instance, over real HTTP on loopback, with a real budget."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from leadstream.sim.marketo import Limits, MarketoInstance
from leadstream.sources.budget import ApiBudget, BudgetLimits, ShareSpent
from leadstream.sources.ledger import MemoryLedger
from leadstream.sources.marketo.client import MarketoClient, Page
from leadstream.sources.marketo.errors import (
    AuthFailed,
    MarketoError,
    QuotaExhausted,
    RateLimited,
    RequestRejected,
    TooManyConcurrent,
    Transient,
)
from leadstream.sources.planner import type_groups
from leadstream.testing import free_port, wait_until

SECRET = "client-test-secret"
LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)
Connect = Callable[..., Awaitable[tuple[MarketoInstance, MarketoClient]]]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def connect(session: aiohttp.ClientSession) -> AsyncIterator[Connect]:
    """connect(budget=…, client=…, **instance options) -> (a running instance, a client of it)."""
    running: list[MarketoInstance] = []

    async def connector(
        *, budget: BudgetLimits | None = None, client: dict[str, Any] | None = None, **options: Any
    ) -> tuple[MarketoInstance, MarketoClient]:
        options.setdefault("rate", 0)
        sim = await MarketoInstance(client_secret=SECRET, **options).start()
        running.append(sim)
        api_budget = ApiBudget(sim.munchkin_id, MemoryLedger(), budget or BudgetLimits(), retry_interval=0.01)
        return sim, MarketoClient(sim.url, sim.client_id, SECRET, budget=api_budget, session=session, **(client or {}))

    yield connector
    for sim in running:
        await sim.stop()


def budget_of(client: MarketoClient) -> ApiBudget:
    assert isinstance(client.budget, ApiBudget)
    return client.budget


async def read_group(
    client: MarketoClient,
    token: str,
    type_ids: tuple[int, ...] | None,
) -> tuple[list[dict[str, Any]], Page]:
    """Page while more_result, as the source does; type_ids None: deleted leads."""
    records: list[dict[str, Any]] = []
    while True:
        page = await (client.get_deleted_leads(token) if type_ids is None else client.get_activities(token, type_ids))
        records.extend(page.records)
        token = page.next_page_token
        if not page.more_result:
            return records, page


def guids(records: list[dict[str, Any]]) -> list[str]:
    return [r["marketoGUID"] for r in records]


# -- reading -----------------------------------------------------------------------------------------
async def test_reads_20000_activities_over_30_types_and_the_deleted_leads_exactly(connect: Connect):
    sim, client = await connect(
        limits=Limits(calls_per_window=60, window_seconds=1),
        short_page_rate=0.3,
        budget=BudgetLimits(calls_per_20s=60, window_seconds=1),
    )
    types = await client.get_activity_types()
    chosen = sorted(t["id"] for t in types if t["id"] != 37)[:30]
    sim.inject(20_000, [*chosen, 37])
    token = await client.get_paging_token(LONG_AGO)
    groups = type_groups(chosen)
    assert [len(g) for g in groups] == [10, 10, 10]
    read = await asyncio.gather(*(read_group(client, token, group) for group in groups))
    for group, (records, _) in zip(groups, read):
        assert guids(records) == guids(sim.truth(group))  # every one, once, in order
    deleted, _ = await read_group(client, token, None)
    assert guids(deleted) == guids(sim.truth([37])) and deleted
    assert sum(len(records) for records, _ in read) + len(deleted) == 20_000

    stats = sim.stats
    assert stats.outcomes()["606"] == stats.outcomes()["615"] == 0  # the budget kept the client inside the limits
    assert stats.max_in_window <= 60 and stats.max_in_flight <= 10
    assert stats.token_in_query == 0 and client.tokens_fetched == 1  # one cached token, sent as Bearer only


async def test_the_last_token_is_a_cursor_a_new_client_resumes_from(connect: Connect, session: aiohttp.ClientSession):
    sim, client = await connect()
    sim.inject(500, [1, 10])
    _, last = await read_group(client, await client.get_paging_token(LONG_AGO), (1, 10))
    later = sim.inject(120, [10, 1])
    restarted = MarketoClient(sim.url, sim.client_id, SECRET, budget=client.budget, session=session)
    records, _ = await read_group(restarted, last.next_page_token, (1, 10))
    assert guids(records) == guids(later)


async def test_bad_arguments_are_refused_before_any_call(connect: Connect):
    sim, client = await connect()
    with pytest.raises(ValueError, match="between 1 and 10"):
        await client.get_activities("token", list(range(1, 12)))
    with pytest.raises(ValueError, match="timezone-aware"):
        await client.get_paging_token(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="batch_size"):
        await client.get_deleted_leads("token", batch_size=301)
    assert sim.stats.counted == 0


async def test_a_request_marketo_rejects_carries_its_code_and_message(connect: Connect):
    _sim, client = await connect()
    with pytest.raises(RequestRejected) as rejected:
        await client.get_activities("garbage", [1])
    assert rejected.value.code == "1003" and str(rejected.value).startswith("1003 Invalid nextPageToken")


# -- tokens --------------------------------------------------------------------------------------------
async def test_tokens_expiring_every_second_cause_no_failure(connect: Connect):
    sim, client = await connect(
        token_ttl=3.0,
        client={"token_refresh_margin": 0},
        limits=Limits(calls_per_window=10_000),
        budget=BudgetLimits(calls_per_20s=10_000),
    )
    sim.inject(50, [1])
    token = await client.get_paging_token(LONG_AGO)
    stop = asyncio.Event()

    async def expire_now_and_then() -> None:  # besides the 1 s lifetime: expiries between two calls, for sure
        while not stop.is_set():
            await asyncio.sleep(0.15)
            sim.expire_tokens()

    expirer = asyncio.create_task(expire_now_and_then())
    reads = 0

    async def keep_reading() -> bool:
        nonlocal reads
        records, _ = await read_group(client, token, (1,))  # raises on any failure
        assert len(records) == 50
        reads += 1
        return sim.tokens.issued >= 4 and sim.stats.outcomes()["602"] >= 2

    await wait_until(keep_reading, timeout=10, interval=0.01, what="tokens to expire a few times under load")
    stop.set()
    await expirer
    assert reads > 0 and sim.stats.outcomes()["601"] == 0


async def test_a_revoked_token_is_replaced_and_the_call_repeated(connect: Connect):
    sim, client = await connect()
    await client.get_activity_types()
    sim.revoke_tokens()
    assert len(await client.get_activity_types()) == 74
    assert client.tokens_fetched == 2 and sim.stats.outcomes("types") == Counter({"ok": 2, "601": 1})
    assert sim.limits.quota_used == 2  # the 601 was not charged
    assert (await budget_of(client).status()).calls_today == 2  # nor by the budget


async def test_a_token_refused_again_and_again_is_an_auth_failure(connect: Connect):
    sim, client = await connect()
    sim.faults.queue("601", "602", "601")
    with pytest.raises(AuthFailed) as failed:
        await client.get_activity_types()
    assert failed.value.code == "601"


async def test_refused_credentials_and_603_are_auth_failures_without_the_secret(connect: Connect, session):
    sim, _ = await connect()
    wrong = MarketoClient(
        sim.url, sim.client_id, "not-the-secret", budget=ApiBudget(sim.munchkin_id, MemoryLedger()), session=session
    )
    with pytest.raises(AuthFailed) as failed:
        await wrong.get_activity_types()
    assert failed.value.code == "HTTP 401" and "Bad client credentials" in str(failed.value)
    assert "not-the-secret" not in str(failed.value)
    sim.access_denied = True
    _, client = sim, MarketoClient(sim.url, sim.client_id, SECRET, budget=wrong.budget, session=session)
    with pytest.raises(AuthFailed) as denied:
        await client.get_activity_types()
    assert str(denied.value) == "603 Access denied"


# -- limits and faults -------------------------------------------------------------------------------------
async def test_606_is_rate_limited_with_the_window_and_blocks_the_budget(connect: Connect):
    sim, client = await connect()
    sim.faults.queue("606")
    with pytest.raises(RateLimited) as limited:
        await client.get_activity_types()
    assert limited.value.retry_after == 20.0
    assert str(limited.value) == "606 Max rate limit '100' exceeded with in '20' secs"
    status = await budget_of(client).status()
    assert status.blocked_reason == "606"


async def test_607_is_quota_exhausted_and_no_call_goes_out_until_the_reset(connect: Connect):
    sim, client = await connect()
    sim.faults.queue("607")
    with pytest.raises(QuotaExhausted):
        await client.get_activity_types()
    with pytest.raises(ShareSpent):
        await client.get_activity_types()
    assert sim.stats.outcomes("types") == Counter({"607": 1})  # the second never reached the instance


async def test_615_is_too_many_concurrent_and_halves_the_calls_in_flight(connect: Connect):
    sim, client = await connect()
    sim.faults.queue("615")
    with pytest.raises(TooManyConcurrent):
        await client.get_activity_types()
    assert budget_of(client).max_in_flight == 5


@pytest.mark.parametrize("code", ["604", "608", "611", "713"])
async def test_transient_codes(connect: Connect, code: str):
    sim, client = await connect()
    sim.faults.queue(code)
    with pytest.raises(Transient) as transient:
        await client.get_activity_types()
    assert transient.value.code == code and transient.value.counted == (code == "713")
    assert (await budget_of(client).status()).calls_today == int(code == "713")
    assert len(await client.get_activity_types()) == 74  # the client decides no retry; the next call works


async def test_5xx_timeouts_and_connection_failures_are_transient(connect: Connect, session):
    sim, client = await connect(hang_seconds=1.0, client={"timeout": aiohttp.ClientTimeout(total=0.3)})
    sim.faults.queue("5xx", "timeout")
    with pytest.raises(Transient) as server_error:
        await client.get_activity_types()
    assert server_error.value.code == "HTTP 503"
    with pytest.raises(Transient) as timed_out:
        await client.get_activity_types()
    assert timed_out.value.code == "timeout"
    assert (await budget_of(client).status()).in_flight == 1  # held: the instance may still work on it

    nowhere = MarketoClient(f"http://127.0.0.1:{free_port()}", "id", "secret", budget=client.budget, session=session)
    with pytest.raises(Transient) as refused:
        await nowhere.get_activity_types()
    assert refused.value.code == "connection" and "secret" not in str(refused.value)


async def test_414_is_repeated_as_post_with_method_get(connect: Connect):
    sim, client = await connect(max_uri_length=90)  # the paging token call (~75 characters) still fits
    sim.inject(30, [1, 2, 3])
    token = await client.get_paging_token(LONG_AGO)
    page = await client.get_activities(token, (1, 2, 3, 6, 7, 8, 9, 10, 11, 12))
    assert len(page.records) == 30
    assert sim.stats.outcomes("activities") == Counter({"http414": 1, "ok": 1})
    assert (await budget_of(client).status()).calls_today == 2  # the 414 was refunded


async def test_the_budget_keeps_many_concurrent_callers_inside_the_instance_limits(connect: Connect):
    sim, client = await connect(
        limits=Limits(calls_per_window=15, window_seconds=0.5, max_concurrent=3),
        latency=0.02,
        budget=BudgetLimits(calls_per_20s=15, window_seconds=0.5, max_concurrent=3),
    )
    sim.inject(10, [1])
    token = await client.get_paging_token(LONG_AGO)
    pages = await asyncio.gather(*(client.get_activities(token, [1]) for _ in range(40)))
    assert all(len(p.records) == 10 for p in pages)
    outcomes = sim.stats.outcomes("activities")
    assert outcomes == Counter({"ok": 40})  # no 606, no 615
    assert sim.stats.max_in_flight <= 3 and sim.stats.max_in_window <= 15


def test_errors_say_marketo_code_and_message():
    error = MarketoError("611", "System error")
    assert str(error) == "611 System error" and error.status == 502 and error.counted is False
