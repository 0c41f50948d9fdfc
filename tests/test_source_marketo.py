"""The marketo source against the simulated instance over real HTTP on loopback (SPEC §10.1):
everything read exactly once in order, the budget kept, tokens renewed, faults met as documented."""

from __future__ import annotations

import asyncio
import contextlib
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
