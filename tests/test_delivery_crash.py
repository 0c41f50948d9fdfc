"""At-least-once across a crash (SPEC §4.1): `leadstream serve` is SIGKILLed while it delivers to a
slow receiver; after a restart on the same data directory everything arrives, and the only
duplicates are the events of the one batch that was in flight, sent again under the same id."""

from __future__ import annotations

import asyncio

import aiohttp

from helpers import ServerProcess, activity, wait_until
from test_delivery_support import Received, assert_only_the_batch_in_flight_came_twice, receiver

TOTAL = 20_000


async def slow(seen: Received) -> None:
    await asyncio.sleep(0.02)


async def test_sigkill_while_delivering_loses_nothing_and_resends_only_the_batch_in_flight(tmp_path):
    data = tmp_path / "data"
    server = await ServerProcess(data).start()
    try:
        async with aiohttp.ClientSession() as http, receiver(answer=slow) as r:
            headers = {"Authorization": "Bearer test-admin-key"}
            document = {
                "name": "crash",
                "munchkinId": "123-ABC-456",
                "stream": "activity",
                "endpoint": r.url,
                "batchSize": 200,
                "pushIntervalMs": 10,
                "retryIntervalMs": 50,
                "probeIntervalMs": 100,
            }
            async with http.post(f"{server.url}/v1/subscriptions", json=document, headers=headers) as answer:
                assert answer.status == 201
                sub_id = (await answer.json())["id"]
            for start in range(0, TOTAL, 5000):
                records = [activity(i) for i in range(start, start + 5000)]
                async with http.post(
                    f"{server.url}/v1/streams/activity/events", json=records, headers=headers
                ) as answer:
                    assert answer.status == 200 and (await answer.json())["accepted"] == 5000

            await wait_until(lambda: len(r.ids()) >= 4000, timeout=20, what="delivery under way")
            server.kill()
            received_before_kill = len(r.requests)
            assert len(r.ids()) < TOTAL  # killed mid-delivery

            server = await ServerProcess(data, port=server.port).start()
            await wait_until(lambda: len(set(r.ids())) >= TOTAL, timeout=30, what="every event after the restart")
            async with http.get(f"{server.url}/v1/subscriptions/{sub_id}", headers=headers) as answer:
                view = await answer.json()

        ids = r.ids()
        assert set(ids) == {f"guid-{i}" for i in range(TOTAL)}
        first_seen = list(dict.fromkeys(ids))
        assert first_seen == [f"guid-{i}" for i in range(TOTAL)]  # in order

        assert_only_the_batch_in_flight_came_twice(r)
        assert received_before_kill < len(r.requests)
        assert view["pending"] == 0 and view["state"] == "active"
    finally:
        server.stop()
