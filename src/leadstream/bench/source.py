"""The ``source`` scenario: a marketo source (SPEC §10.1) reading the simulated instance (§10.2).

- Freshness: the instance produces 50 activities/s over every standard type (Marketo's own
  limits: 100 calls/20 s, 10 in flight, 50,000 calls/day, ``quotaShare`` 0.5 — the quota scaled
  by the part of the Marketo day left, so that any time of day plans like the start of one); a legacy
  subscription's endpoint (in this process) notes, for every activity, delivered-at − activityDate.
  Beside it the same figure computed from the source's plan (each group's
  ``plannedPollIntervalMs`` and its share of the traffic: ``planner.expected_freshness``).
  ``activityDate`` has whole seconds, so the measured delays carry up to 1 s (0.5 s on average)
  of that rounding.
- API calls per 1,000 activities over that run (the floor is 1,000 / 300 ≈ 3.4 per group with data).
- The largest rate one source keeps up with: a backlog read with a roomy budget (the limits of the
  instance lifted), activities stored per second.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime
from typing import Any

from aiohttp import web

from leadstream.bench.harness import Bench, Figure, Server, Sink
from leadstream.sim.marketo import Limits, MarketoInstance
from leadstream.sources.budget import next_reset
from leadstream.sources.planner import DELETE_LEAD, DELETED_LEADS, GroupPlan, Plan, expected_freshness, group_key
from leadstream.testing import free_port, wait_until

RATE = 50.0
MUNCHKIN = "135-SRC-246"


class FreshnessEndpoint:
    """A legacy endpoint that keeps delivered-at − activityDate of every activity, in seconds."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.received = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _post(self, request: web.Request) -> web.Response:
        now = time.time()
        body = await request.json()
        for activity in body.get("activities", []):
            self.received += 1
            self.delays.append(
                now - datetime.fromisoformat(activity["activityDate"].replace("Z", "+00:00")).timestamp()
            )
        return web.Response()

    async def start(self) -> FreshnessEndpoint:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/", self._post)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _source_body(sim: MarketoInstance, **fields: Any) -> dict[str, Any]:
    return {
        "type": "marketo",
        "name": "bench",
        "munchkinId": sim.munchkin_id,
        "restUrl": sim.url,
        "clientId": sim.client_id,
        "clientSecret": sim.client_secret,
        **fields,
    }


async def _create(server: Server, body: dict[str, Any]) -> str:
    status, answer = await server.call("POST", "/v1/sources", body)
    if status != 201:
        raise RuntimeError(f"POST /v1/sources answered {status}: {answer!r:.500}")
    return str(answer["id"])


async def _view(server: Server, source_id: str) -> dict[str, Any]:
    status, answer = await server.call("GET", f"/v1/sources/{source_id}")
    if status != 200:
        raise RuntimeError(f"GET /v1/sources/{source_id} answered {status}: {answer!r:.500}")
    return dict(answer)


def _planned(view: dict[str, Any], truth: list[dict[str, Any]]) -> tuple[float, float]:
    """Freshness p50/p99 the source's plan predicts for the traffic the instance had."""
    groups, of_type = [], {}
    for g in view["groups"]:
        ids = tuple(g["activityTypeIds"])
        key = DELETED_LEADS if ids == (DELETE_LEAD,) else group_key(ids)
        groups.append(GroupPlan(key, ids, g["plannedPollIntervalMs"] or 1, 0.0, 1))
        for type_id in ids:
            of_type[type_id] = key
    counts = Counter(of_type.get(r["activityTypeId"], "") for r in truth)
    seconds = max(1.0, (truth[-1]["_second"] - truth[0]["_second"])) if truth else 1.0
    rates = {key: n / seconds for key, n in counts.items() if key}
    expected = expected_freshness(Plan(tuple(groups), 0.0, 0.0, 1.0), rates)
    return expected.p50, expected.p99


async def source(bench: Bench, sink: Sink) -> list[Figure]:
    window = max(10.0, bench.durations.window * 12)  # 180 s in a full run: several planned intervals
    backlog = 60_000 if not bench.quick else (10_000 if bench.durations.backlog >= 100_000 else 3000)
    name = f"{RATE:g} activities/s, every standard type, quotaShare 0.5 of 50,000/day"
    p50 = Figure("source", f"freshness p50, {name}", "s", None, higher_is_better=False)
    p99 = Figure("source", f"freshness p99, {name}", "s", None, higher_is_better=False)
    calls = Figure(
        "source", "API calls per 1,000 activities (same run)", "calls", None, higher_is_better=False,
        note="floor: 1,000 / 300 ≈ 3.4 per group with data",
    )  # fmt: skip
    fastest = Figure("source", "largest activity rate one source keeps up with (backlog read)", "activities/s", None)
    figures = [p50, p99, calls, fastest]

    async with bench.span("source · freshness", sink), bench.leadstream("source") as server:
        endpoint = await FreshnessEndpoint().start()
        try:
            async with MarketoInstance(munchkin_id=MUNCHKIN, rate=RATE, seed=7) as sim:
                status, answer = await server.call("POST", "/v1/subscriptions", {
                    "name": "fresh", "munchkinId": MUNCHKIN, "stream": "activity", "endpoint": endpoint.url,
                    "format": "legacy", "pushIntervalMs": 50, "startAt": "now",
                })  # fmt: skip
                if status != 201:
                    raise RuntimeError(f"POST /v1/subscriptions answered {status}: {answer!r:.300}")
                # The planner spreads what is left of today's share over what is left of the Marketo day:
                # scale the quota by the part of the day left, so the run has a fresh day's budget rate.
                day_left = next_reset(time.time()) - time.time()
                quota = max(200, round(50_000 * day_left / 86_400))
                source_id = await _create(server, _source_body(sim, quotaShare=0.5, dailyQuota=quota))
                started = time.time()
                await wait_until(lambda: time.time() - started >= window, window + 5, interval=0.5)
                view = await _view(server, source_id)
                sim.advance()
                sim.schedule.rate = 0  # the traffic ends here; wait for what it made to arrive
                truth = [{**item.record(), "_second": item.second} for item in sim.log]
                # a quiet group is polled seldom (up to 8 × pollIntervalMs, stretched by the budget)
                slowest = max((g["plannedPollIntervalMs"] or 0) for g in view["groups"]) / 1000
                await wait_until(
                    lambda: endpoint.received >= len(truth), 2 * slowest + 60, interval=0.2, what="every activity"
                )
                counted = sim.stats.counted
                p50.leadstream, p99.leadstream = _quantile(endpoint.delays, 0.5), _quantile(endpoint.delays, 0.99)
                planned50, planned99 = _planned(view, truth)
                p50.detail = {
                    "planned_p50_s": round(planned50, 2), "activities": len(truth), "window_s": window,
                    "daily_quota_given": quota, "seconds_left_in_marketo_day": round(day_left),
                    "planned_poll_interval_ms": {g["key"]: g["plannedPollIntervalMs"] for g in view["groups"]},
                }  # fmt: skip
                p99.detail = {"planned_p99_s": round(planned99, 2)}
                p50.note = f"planned: {planned50:.1f} s"
                p99.note = f"planned: {planned99:.1f} s"
                calls.leadstream = 1000 * counted / max(1, len(truth))
                calls.detail = {
                    "calls": counted,
                    "groups": len(view["groups"]),
                    "by_outcome": dict(sim.stats.outcomes()),
                }
        finally:
            await endpoint.stop()
    bench.advance()

    async with bench.span("source · backlog", sink), bench.leadstream("source-backlog") as server:
        roomy = Limits(calls_per_window=1_000_000, max_concurrent=100, daily_quota=100_000_000)
        async with MarketoInstance(munchkin_id=MUNCHKIN, rate=0, seed=8, limits=roomy) as sim:
            sim.inject(backlog, at=time.time() - 60)
            start_at = datetime.fromtimestamp(time.time() - 120).astimezone().isoformat(timespec="seconds")
            started = time.monotonic()
            source_id = await _create(
                server,
                _source_body(
                    sim, startAt=start_at, dailyQuota=100_000_000, callsPer20s=100_000, maxConcurrent=100,
                    pollIntervalMs=10,
                ),
            )  # fmt: skip

            async def read_all() -> bool:
                return int((await _view(server, source_id))["published"]) >= backlog

            await wait_until(read_all, 300, interval=0.1, what="the backlog to be read")
            seconds = time.monotonic() - started
            fastest.leadstream = backlog / seconds
            fastest.detail = {"activities": backlog, "seconds": round(seconds, 2), "calls": sim.stats.counted}
    bench.advance()
    return figures
