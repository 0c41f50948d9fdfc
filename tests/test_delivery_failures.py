"""Failure, pause and reactivation (SPEC §4.4), with endpoints that misbehave on purpose."""

from __future__ import annotations

import asyncio
import itertools
import time

from aiohttp import web

from helpers import activity, wait_until
from leadstream import positions
from test_delivery_support import Received, bench, never_answer, receiver, wait_ids


def padded(i: int, size: int = 500, **extra: object) -> dict:
    """An activity whose legacy element is about ``size`` + 200 bytes."""
    record = activity(i, **extra)
    record["attributes"] = [{"name": "Webpage URL", "value": "x" * size}]
    return record


async def test_outage_goes_retrying_then_paused_then_probes_and_recovers_in_order(tmp_path):
    down = True

    def answer(seen: Received) -> web.Response | None:
        return web.Response(status=500, text="upstream down") if down else None

    async with bench(tmp_path) as b, receiver(answer=answer) as r:
        sub = await b.subscribe(r.url, batchSize=20, retryAttempts=2, retryIntervalMs=100, probeIntervalMs=300)
        first = [activity(i) for i in range(30)]
        await b.publish("activity", first)
        view = await b.wait_status(sub["id"], "retrying", state="retrying")
        assert view["consecutiveFailures"] == 1 and "HTTP 500 upstream down" in view["lastError"]
        view = await b.wait_status(sub["id"], "paused after the retries", state="paused")
        assert view["pausedReason"] == "failures" and view["consecutiveFailures"] == 3  # 1 + 2 retries
        paused_at = len(r.requests)
        assert paused_at == 3
        during = [activity(i) for i in range(30, 60)]
        await b.publish("activity", during)  # events keep accumulating
        await wait_until(lambda: len(r.requests) >= paused_at + 2, what="two probes")
        view = await b.status(sub["id"])
        assert view["state"] == "paused" and view["pending"] == 60 and view["lagSeconds"] > 0
        assert view["nextAttemptAt"] is not None

        down = False
        await wait_ids(r, first + during)
        assert r.ids() == [x["marketoGUID"] for x in first + during]  # every event, in order, once

        times = [x.at for x in r.requests]
        retry_gaps = [b2 - a for a, b2 in itertools.pairwise(times[:3])]
        assert all(gap >= 0.09 for gap in retry_gaps), retry_gaps  # every retryIntervalMs
        probe_gaps = [b2 - a for a, b2 in itertools.pairwise(times[2 : paused_at + 3])]
        assert all(gap >= 0.28 for gap in probe_gaps), probe_gaps  # every probeIntervalMs

        head = [
            x
            for x in r.requests
            if x.headers["x-leadstream-delivery"] == r.requests[0].headers["x-leadstream-delivery"]
        ]
        assert len(head) >= 5 and head[-1].ok  # the same batch every time, until it went through
        assert [x.headers.get("x-leadstream-retry-count") for x in head] == [None] + [
            str(n) for n in range(1, len(head))
        ]
        assert len(head[0].json()["activities"]) == 20 and head[-1].body == head[0].body

        view = await b.wait_status(sub["id"], "active again", state="active", pending=0)
        assert view["consecutiveFailures"] == 0 and view["pausedReason"] is None and view["lastError"] is None
        assert view["delivered"] == 60 and view["lastSuccessAt"] is not None


async def test_a_100kB_body_limit_splits_batches_and_a_lone_oversize_event_is_dead_lettered(tmp_path):
    # aiohttp answers 413 by itself past client_max_size, as Express's JSON parser does past 100 kB
    async with bench(tmp_path) as b, receiver(max_body=100 * 1024) as small, receiver() as large:
        sub = await b.subscribe(small.url, batchSize=500, pushIntervalMs=50)
        records = [padded(i) for i in range(1000)]
        huge = padded(1000, size=30_000)
        huge["attributes"] *= 4  # ~120 kB: no batch can carry it
        after = [padded(i) for i in range(1001, 1011)]
        await b.publish("activity", records)
        await b.publish("activity", [huge])
        await b.publish("activity", after)
        expected = [x["marketoGUID"] for x in records + after]
        await wait_ids(small, expected)
        assert small.ids() == expected  # everything else arrived, in order
        assert all(len(x.body) <= 100 * 1024 for x in small.delivered)

        view = await b.wait_status(sub["id"], "the dead letter counted", deadLettered=1, pending=0)
        assert view["state"] == "active" and view["consecutiveFailures"] == 0  # 413 is not a failure
        dead = await b.subscriptions.dead_letters(sub["id"], 10)
        assert [d["id"] for d in dead] == ["guid-1000"] and "413" in dead[0]["reason"]
        attempts = (await b.subscriptions.attempts(sub["id"], 1000)).decode()
        assert '"outcome":"dead_lettered"' in attempts and '"outcome":"too_large"' in attempts

        # replayable: point the subscription at an endpoint that takes it, and replay from before it
        await b.subscriptions.patch(sub["id"], {"endpoint": large.url})
        await b.subscriptions.replay(sub["id"], positions.encode(positions.decode(dead[0]["position"], "position") - 1))
        await wait_ids(large, ["guid-1000", *expected[-10:]])
        assert large.ids() == ["guid-1000", *expected[-10:]]


async def test_429_and_503_with_retry_after_wait_without_using_a_retry(tmp_path):
    answers = 0

    def throttle(seen: Received) -> web.Response | None:
        nonlocal answers
        answers += 1
        if answers <= 3:
            return web.Response(status=(429, 503)[answers % 2], headers={"Retry-After": "0"})
        return None

    async with bench(tmp_path) as b, receiver(answer=throttle) as r:
        sub = await b.subscribe(r.url, retryIntervalMs=5000)
        await b.publish("activity", [activity(i) for i in range(5)])
        await wait_ids(r, list(range(5)))
        view = await b.status(sub["id"])
        assert (view["state"], view["consecutiveFailures"], view["lastError"]) == ("active", 0, None)
        gaps = [b2.at - a.at for a, b2 in zip(r.requests, r.requests[1:])]
        assert all(0.015 <= gap < 1 for gap in gaps), gaps  # Retry-After 0 → at least pushIntervalMs


async def test_ten_throttling_answers_in_a_row_count_as_one_failure(tmp_path):
    async def throttle(seen: Received) -> web.Response:
        return web.Response(status=503, headers={"Retry-After": "1"})

    async with bench(tmp_path) as b, receiver(answer=throttle) as r:
        # Retry-After 1 s is bounded to retryIntervalMs (30 ms here)
        sub = await b.subscribe(r.url, retryIntervalMs=30, probeIntervalMs=60_000, retryAttempts=1)
        await b.publish("activity", [activity(0)])
        view = await b.wait_status(sub["id"], "one failure", consecutiveFailures=1)
        assert len(r.requests) == 10 and view["state"] == "retrying"
        view = await b.wait_status(sub["id"], "paused", state="paused")
        assert len(r.requests) == 20 and view["consecutiveFailures"] == 2


async def test_410_pauses_at_once(tmp_path):
    async with bench(tmp_path) as b, receiver(answer=lambda seen: web.Response(status=410, text="no such hook")) as r:
        sub = await b.subscribe(r.url, probeIntervalMs=60_000)
        await b.publish("activity", [activity(0)])
        view = await b.wait_status(sub["id"], "paused", state="paused")
        assert view["pausedReason"] == "failures" and view["consecutiveFailures"] == 1
        assert "gone" in view["lastError"] and "410" in view["lastError"]
        assert len(r.requests) == 1


async def test_a_hung_endpoint_does_not_delay_another_subscription(tmp_path):
    async with bench(tmp_path) as b, receiver(answer=never_answer) as hung, receiver() as fast:
        await b.subscribe(hung.url, timeoutMs=30_000, batchSize=1)
        await b.subscribe(fast.url)
        for wave in range(3):
            published = time.monotonic()
            records = [activity(i) for i in range(wave * 10, wave * 10 + 10)]
            await b.publish("activity", records)
            await wait_ids(fast, list(range(wave * 10 + 10)), timeout=5)
            assert fast.requests[-1].at - published < 1.0
        assert len(hung.requests) == 1  # still waiting on its first batch


async def test_a_timeout_is_a_failed_attempt(tmp_path):
    async with bench(tmp_path) as b, receiver(answer=never_answer) as r:
        sub = await b.subscribe(r.url, timeoutMs=100, retryIntervalMs=60_000)
        await b.publish("activity", [activity(0)])
        view = await b.wait_status(sub["id"], "a timeout", state="retrying")
        assert view["lastError"] == "timed out after 100 ms"


async def test_a_refused_connection_is_a_failed_attempt(tmp_path):
    async with bench(tmp_path) as b:
        async with receiver() as r:
            url = r.url  # closed at once: nothing listens there any more
        sub = await b.subscribe(url, retryIntervalMs=60_000, format="legacy")
        await b.publish("activity", [activity(0)])
        view = await b.wait_status(sub["id"], "a connection failure", state="retrying")
        assert "cannot connect" in view["lastError"]


async def test_manual_pause_sends_nothing_resume_catches_up_delete_stops_for_good(tmp_path):
    async with bench(tmp_path) as b, receiver() as r:
        sub = await b.subscribe(r.url)
        await b.publish("activity", [activity(i) for i in range(10)])
        await wait_ids(r, list(range(10)))

        view = await b.subscriptions.pause(sub["id"])
        assert (view["state"], view["pausedReason"]) == ("paused", "manual")
        await b.publish("activity", [activity(i) for i in range(10, 30)])
        view = await b.wait_status(sub["id"], "pending while paused", pending=20)
        assert view["lagSeconds"] >= 0 and view["nextAttemptAt"] is None
        await asyncio.sleep(0.2)  # ten push intervals: nothing may go out
        assert len(r.ids()) == 10

        view = await b.subscriptions.resume(sub["id"])
        assert view["state"] == "active"
        await wait_ids(r, list(range(30)))
        assert r.ids() == [f"guid-{i}" for i in range(30)]

        view = await b.subscriptions.delete(sub["id"])
        assert view["state"] == "deprovisioned" and view["pending"] == 0
        await b.publish("activity", [activity(i) for i in range(30, 40)])
        await asyncio.sleep(0.2)
        assert len(r.ids()) == 30
        assert (await b.status(sub["id"]))["state"] == "deprovisioned"
        await b.restart()  # still deprovisioned after a restart, still silent
        await b.publish("activity", [activity(i) for i in range(40, 45)])
        await asyncio.sleep(0.2)
        assert len(r.ids()) == 30 and (await b.status(sub["id"]))["state"] == "deprovisioned"


async def test_retention_counts_events_that_expire_undelivered(tmp_path):
    from leadstream.retention import Retention

    async with bench(tmp_path) as b, receiver() as r:
        sub = await b.subscribe(r.url, eventTypes=[10])
        other = await b.subscribe(r.url, eventTypes=[1])
        await b.subscriptions.pause(sub["id"])
        await b.subscriptions.pause(other["id"])
        retention = Retention(b.store, 0.3, 0.05, count_expired=b.engine.count_expired)
        purging = asyncio.create_task(retention.run())
        try:
            await b.publish("activity", [activity(i) for i in range(15)] + [activity(15, type_id=1)])
            view = await b.wait_status(sub["id"], "expired events counted", expired=15, timeout=5)
            assert view["delivered"] == 0 and view["pending"] == 0
            assert (await b.status(other["id"]))["expired"] == 1  # only what it matched
            await b.subscriptions.resume(sub["id"])
            await b.publish("activity", [activity(i) for i in range(100, 105)])
            await wait_ids(r, list(range(5)))
            assert r.ids() == [f"guid-{i}" for i in range(100, 105)]
            await b.restart()  # the counts were saved
            assert (await b.status(sub["id"]))["expired"] == 15
        finally:
            purging.cancel()


async def test_a_patch_while_retrying_keeps_the_batch_and_its_id(tmp_path):
    down = True

    def answer(seen: Received) -> web.Response | None:
        return web.Response(status=500) if down else None

    async with bench(tmp_path) as b, receiver(answer=answer) as r, receiver() as other:
        sub = await b.subscribe(r.url, retryIntervalMs=60_000, format="cloudevents")
        await b.publish("activity", [activity(i) for i in range(5)])
        await b.wait_status(sub["id"], "retrying", state="retrying")
        view = await b.subscriptions.patch(sub["id"], {"endpoint": other.url, "retryIntervalMs": 20})
        assert view["endpoint"] == other.url and view["state"] == "retrying"
        await wait_ids(other, list(range(5)))
        assert other.requests[0].headers["x-leadstream-delivery"] == r.requests[0].headers["x-leadstream-delivery"]
        assert other.requests[0].headers["x-leadstream-retry-count"] == "1"
        assert other.ids() == [f"guid-{i}" for i in range(5)]


async def test_each_state_transition_is_told_once_not_once_per_attempt(tmp_path):
    down = True

    def answer(seen: Received) -> web.Response | None:
        return web.Response(status=500, text="down") if down else None

    async with bench(tmp_path) as b, receiver(answer=answer) as r:
        moves: list[tuple[str, str, str | None]] = []
        b.engine.on_transition.append(lambda t: moves.append((t.before.state, t.after.state, t.after.pausedReason)))
        sub = await b.subscribe(r.url, retryAttempts=2, retryIntervalMs=50, probeIntervalMs=100)
        await b.publish("activity", [activity(i) for i in range(5)])
        await b.wait_status(sub["id"], "paused after the retries", state="paused")
        await wait_until(lambda: len(r.requests) >= 5, what="probes while paused")  # failures go on, no new move
        down = False
        await wait_ids(r, [f"guid-{i}" for i in range(5)])
        await b.subscriptions.pause(sub["id"])
        assert moves == [
            ("active", "retrying", None),
            ("retrying", "paused", "failures"),
            ("paused", "active", None),
            ("active", "paused", "manual"),
        ]
