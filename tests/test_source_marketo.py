"""The marketo source against the simulated instance over real HTTP on loopback (SPEC §10.1):
everything read exactly once in order, the budget kept, tokens renewed, faults met as documented."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from helpers import ADMIN_KEY, running_server, wait_until
from leadstream.sim.marketo import Limits, MarketoInstance
from leadstream.sources.planner import type_groups
from test_delivery_support import receiver

H = {"Authorization": f"Bearer {ADMIN_KEY}"}
FAST = {  # the server's source intervals, shrunk
    "source_follow_interval": 0.05,
    "source_backoff_base": 0.02,
    "source_backoff_cap": 0.2,
    "source_auth_retry": 0.3,
    "source_quota_probe": 0.3,
}
THIRTY_TYPES = [
    1,
    2,
    3,
    6,
    7,
    9,
    10,
    11,
    12,
    13,
    21,
    22,
    23,
    24,
    25,
    26,
    27,
    32,
    34,
    35,
    36,
    38,
    39,
    40,
    41,
    42,
    43,
    46,
    47,
    48,
]
ROOMY = Limits(calls_per_window=100_000, max_concurrent=50, daily_quota=10_000_000)


def source_body(sim: MarketoInstance, **fields: Any) -> dict[str, Any]:
    body = {
        "type": "marketo",
        "name": "sim",
        "munchkinId": sim.munchkin_id,
        "restUrl": sim.url,
        "clientId": sim.client_id,
        "clientSecret": sim.client_secret,
        "pollIntervalMs": 20,
        "dailyQuota": 10_000_000,
        "callsPer20s": 100_000,
        "maxConcurrent": 10,
    }
    body.update(fields)
    return body


@contextlib.asynccontextmanager
async def instance(**options: Any) -> AsyncIterator[MarketoInstance]:
    options.setdefault("rate", 0)
    options.setdefault("limits", ROOMY)
    async with MarketoInstance(**options) as sim:
        yield sim


async def create(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with http.post(f"{url}/v1/sources", json=body, headers=H) as r:
        assert r.status == 201, await r.text()
        return await r.json()


async def status(http: aiohttp.ClientSession, url: str, source_id: str) -> dict[str, Any]:
    async with http.get(f"{url}/v1/sources/{source_id}", headers=H) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def test_20000_activities_and_deletions_land_once_in_order_per_group_and_reach_a_subscription(tmp_path) -> None:
    types = [*THIRTY_TYPES, 37]  # 37: Delete Lead, read by Get Deleted Leads
    async with (
        instance(activity_type_ids=types, short_page_rate=0.2) as sim,
        running_server(data_dir=tmp_path / "data", **FAST) as server,
        receiver() as endpoint,
        aiohttp.ClientSession() as http,
    ):
        async with http.post(
            f"{server.url}/v1/subscriptions",
            headers=H,
            json={"name": "all", "munchkinId": sim.munchkin_id, "stream": "activity", "endpoint": endpoint.url,
                  "pushIntervalMs": 20},
        ) as r:  # fmt: skip
            assert r.status == 201
        source = await create(http, server.url, source_body(sim, activityTypes=THIRTY_TYPES))
        for _ in range(20):  # a steady rate: 1,000 every 50 ms while the source polls
            sim.inject(1000, types)
            await asyncio.sleep(0.05)
        truth = sim.truth()
        assert len(truth) == 20_000 and Counter(r["activityTypeId"] for r in truth)[37] > 0

        async def all_stored() -> list[Any] | None:
            events = await server.services.store.read(0, 100_000)
            return events if len(events) >= len(truth) else None

        events = await wait_until(all_stored, 60, what="every activity in the log")
        assert Counter(e.id for e in events) == Counter(r["marketoGUID"] for r in truth)  # each exactly once
        groups = [set(g) for g in type_groups(THIRTY_TYPES)] + [{37}]
        for group in groups:  # the instance's order (id order), per group
            assert [e.id for e in events if int(e.etype) in group] == [
                r["marketoGUID"] for r in truth if r["activityTypeId"] in group
            ]
        await wait_until(lambda: len(set(endpoint.ids())) >= len(truth), 60, what="every activity delivered")
        assert set(endpoint.ids()) == {r["marketoGUID"] for r in truth}
        shown = await status(http, server.url, source["id"])
        assert shown["published"] == 20_000 and shown["duplicates"] == 0 and shown["state"] == "running"
        assert [g["activityTypeIds"] for g in shown["groups"]] == [*map(list, type_groups(THIRTY_TYPES)), [37]]
        assert all(g["plannedPollIntervalMs"] and g["checkpointAt"] for g in shown["groups"])
        async with http.post(f"{server.url}/v1/sources/{source['id']}/pause", headers=H) as r:
            paused = await r.json()
        await asyncio.sleep(0.1)
        # every call the instance counted went through the budget (a call cut short by the pause may not have arrived)
        assert 0 <= (await status(http, server.url, source["id"]))["callsToday"] - sim.stats.counted <= 1
        assert paused["state"] == "paused" and sim.stats.outcomes("activities")["ok"] >= 20_000 / 300


async def test_the_budget_is_never_exceeded_and_a_spent_share_shows_quota_exhausted(tmp_path) -> None:
    limits = Limits(calls_per_window=6, window_seconds=1.0, max_concurrent=2, daily_quota=1000)
    async with (
        instance(limits=limits) as sim,
        running_server(data_dir=tmp_path / "data", source_rate_window=1.0, **FAST) as server,
        aiohttp.ClientSession() as http,
    ):
        body = source_body(sim, activityTypes=[1, 2, 12, 13], callsPer20s=6, maxConcurrent=2, dailyQuota=40)
        source = await create(http, server.url, {**body, "quotaShare": 0.5})
        # a second source of the same instance spends the same budget
        other = await create(
            http, server.url, {**body, "name": "other", "activityTypes": [6, 7], "deletedLeads": False}
        )
        sim.inject(9000, [1, 2, 12, 13, 37, 6, 7])  # a backlog of 30+ pages: more than today's share can read

        async def exhausted() -> dict[str, Any] | None:
            shown = await status(http, server.url, source["id"])
            return shown if shown["state"] == "quota_exhausted" else None

        shown = await wait_until(exhausted, 30, what="the share to be spent")
        assert shown["callBudget"] == 20 and shown["callsToday"] == 20
        assert "share of the API quota (20 calls) is spent" in shown["lastError"]
        await asyncio.sleep(0.3)  # nothing more is spent
        assert sim.stats.counted == 20  # never more than the share…
        assert sim.stats.max_in_window <= 6 and sim.stats.max_in_flight <= 2  # …nor the limits
        assert not {"606", "607", "615"} & set(sim.stats.outcomes())  # the instance never had to refuse
        other_shown = await status(http, server.url, other["id"])
        assert other_shown["callsToday"] == 20  # one budget for the Munchkin ID
        assert 0 < shown["published"] + other_shown["published"] < 9000


async def test_the_instance_quota_607_waits_for_the_reset_then_resumes(tmp_path) -> None:
    async with (
        instance(limits=Limits(calls_per_window=1000, daily_quota=12)) as sim,
        running_server(data_dir=tmp_path / "data", **FAST) as server,
        aiohttp.ClientSession() as http,
    ):
        source = await create(http, server.url, source_body(sim, activityTypes=[1, 2]))
        sim.inject(100, [1, 2])

        async def state(name: str) -> dict[str, Any] | None:
            shown = await status(http, server.url, source["id"])
            return shown if shown["state"] == name else None

        shown = await wait_until(lambda: state("quota_exhausted"), 20, what="607")
        assert shown["lastError"] == "607 Daily quota reached"
        counted = sim.stats.counted
        await asyncio.sleep(0.5)
        assert sim.stats.counted == counted  # probes refused with 607 are not counted
        sim.inject(50, [1, 2])
        sim.reset_day()  # 00:00 America/Chicago, simulated
        shown = await wait_until(lambda: state("running"), 20, what="the source to resume")

        async def everything() -> dict[str, Any] | None:
            shown = await status(http, server.url, source["id"])
            return shown if shown["published"] == 150 else None

        shown = await wait_until(everything, 20, what="the rest after the reset")
        assert shown["duplicates"] == 0 and shown["lastError"] is None


async def test_tokens_expiring_every_few_seconds_lose_nothing_and_count_no_failure(tmp_path) -> None:
    async with (
        instance(token_ttl=2.5) as sim,
        running_server(data_dir=tmp_path / "data", **FAST) as server,
        aiohttp.ClientSession() as http,
    ):
        source = await create(http, server.url, source_body(sim, activityTypes=[1, 2, 3]))
        for i in range(20):
            sim.inject(150, [1, 2, 3])
            if i % 3 == 0:
                sim.expire_tokens()  # and sooner than the client expects, now and then
            await asyncio.sleep(0.1)

        async def everything() -> dict[str, Any] | None:
            shown = await status(http, server.url, source["id"])
            return shown if shown["published"] == 3000 else None

        shown = await wait_until(everything, 30, what="every activity")
        refused = sim.stats.outcomes()
        assert refused["602"] + refused["601"] >= 1  # the token did expire under a call
        assert sim.stats.outcomes("identity")["ok"] >= 3
        assert shown["state"] == "running" and shown["lastError"] is None and shown["duplicates"] == 0
        stored = await server.services.store.get_source(source["id"])
        assert b'"failures":0' in stored.status


FAULTS = [  # kind injected, the state meanwhile, how lastError starts (SPEC §10.1)
    ("604", "running", "604 Request timed out"),
    ("608", "running", "608 API Temporarily Unavailable"),
    ("611", "running", "611 System error"),
    ("713", "running", "713 Transient Error"),
    ("5xx", "running", "HTTP 503"),
    ("timeout", "running", "timeout no answer within 0.4 s"),
    ("615", "throttled", "615 Concurrent access limit reached"),
    ("606", "throttled", "606 Max rate limit"),
]


async def test_each_injected_fault_gets_its_documented_reaction_and_loses_nothing(tmp_path) -> None:
    settings = {**FAST, "source_backoff_base": 1.0, "source_call_timeout": 0.4, "source_rate_window": 1.0}
    limits = Limits(calls_per_window=100_000, window_seconds=1.0, max_concurrent=50, daily_quota=10_000_000)
    async with (
        instance(limits=limits, hang_seconds=1.0, max_uri_length=76) as sim,
        running_server(data_dir=tmp_path / "data", **settings) as server,
        aiohttp.ClientSession() as http,
    ):
        source = await create(http, server.url, source_body(sim, activityTypes=[1, 2], pollIntervalMs=50))
        published = 0
        for kind, state, error in FAULTS:
            await wait_until(lambda: sim.stats.counted > 3, what="the source to be polling")
            sim.faults.queue(kind)
            sim.inject(7, [1, 2])
            published += 7

            async def reacting(state: str = state, error: str = error) -> dict[str, Any] | None:
                shown = await status(http, server.url, source["id"])
                return shown if (shown["lastError"] or "").startswith(error) and shown["state"] == state else None

            await wait_until(reacting, 10, interval=0.01, what=f"the reaction to {kind}")

            async def recovered(total: int = published) -> dict[str, Any] | None:
                shown = await status(http, server.url, source["id"])
                return shown if shown["published"] == total and shown["lastError"] is None else None

            await wait_until(recovered, 10, what=f"the source to recover from {kind}")
        assert sim.stats.outcomes()["http414"] >= 1  # a long URI went again as POST with _method=GET
        async with http.get(f"{server.url}/metrics") as r:
            exposition = await r.text()
        assert re.search(r'leadstream_source_calls_total\{endpoint="\w+",outcome="611"\} [1-9]', exposition)
        assert re.search(r'leadstream_source_calls_total\{endpoint="activities",outcome="ok"\} [1-9]', exposition)
        assert f'leadstream_source_published_events_total{{source="{source["id"]}"}} {float(published)}' in exposition
        assert f'leadstream_source_lag_seconds{{source="{source["id"]}"}}' in exposition
        assert 'leadstream_source_budget_left{munchkin_id="123-ABC-456"}' in exposition


async def test_wrong_credentials_show_failing_and_a_corrected_secret_recovers(tmp_path) -> None:
    async with (
        instance() as sim,
        running_server(data_dir=tmp_path / "data", **FAST) as server,
        aiohttp.ClientSession() as http,
    ):
        source = await create(http, server.url, source_body(sim, clientSecret="not-the-secret", activityTypes=[1]))
        sim.inject(5, [1])

        async def failing() -> dict[str, Any] | None:
            shown = await status(http, server.url, source["id"])
            return shown if shown["state"] == "failing" else None

        shown = await wait_until(failing, 10, what="state failing")
        assert "identity refused the client credentials" in shown["lastError"]
        assert "not-the-secret" not in str(shown) and sim.client_secret not in str(shown)
        async with http.patch(
            f"{server.url}/v1/sources/{source['id']}", json={"clientSecret": sim.client_secret}, headers=H
        ) as r:
            assert r.status == 200

        async def recovered() -> dict[str, Any] | None:
            shown = await status(http, server.url, source["id"])
            return shown if shown["published"] == 5 and shown["state"] == "running" else None

        await wait_until(recovered, 10, what="the source to recover")


async def test_a_patch_restarts_the_source_its_counts_go_on_and_a_regrouped_group_starts_again(tmp_path) -> None:
    async with (
        instance() as sim,
        running_server(data_dir=tmp_path / "data", **FAST) as server,
        aiohttp.ClientSession() as http,
    ):
        source = await create(http, server.url, source_body(sim, activityTypes=[1, 2], deletedLeads=False))
        sim.inject(400, [1, 2, 6])  # type 6 is not read yet

        async def published(count: int) -> dict[str, Any] | None:
            shown = await status(http, server.url, source["id"])
            return shown if shown["published"] == count else None

        await wait_until(lambda: published(267), 10, what="types 1 and 2")  # 134 + 133 of the 400, in turn
        async with http.patch(
            f"{server.url}/v1/sources/{source['id']}", json={"activityTypes": [1, 2, 6]}, headers=H
        ) as r:
            assert r.status == 200
        # one new group of 1, 2 and 6: read from startAt, types 1 and 2 again (duplicates, not stored twice)
        shown = await wait_until(lambda: published(400), 10, what="type 6 too")
        assert shown["duplicates"] == 267 and [g["activityTypeIds"] for g in shown["groups"]] == [[1, 2, 6]]
        events = await server.services.store.read(0, 10_000)
        assert sorted(e.id for e in events) == sorted(r["marketoGUID"] for r in sim.truth())
