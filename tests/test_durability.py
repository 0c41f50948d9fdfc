"""A 200 from ingest means fsync'd: SIGKILL right after it loses nothing (SPEC §2)."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson

from helpers import ServerProcess, activity
from leadstream.store.sqlite import SqliteStore


async def test_sigkill_after_200_loses_no_accepted_record(tmp_path):
    data_dir = tmp_path / "data"
    server = await ServerProcess(data_dir).start()
    accepted: list[str] = []
    killed = asyncio.Event()
    headers = {"Authorization": "Bearer test-admin-key", "Content-Type": "application/json"}

    async def producer(session: aiohttp.ClientSession, worker: int) -> None:
        batch = 0
        while not killed.is_set():
            records = [activity(worker * 1_000_000 + batch * 200 + i) for i in range(200)]
            batch += 1
            try:
                async with session.post(
                    f"{server.url}/v1/streams/activity/events", data=orjson.dumps(records), headers=headers
                ) as r:
                    body = await r.json()
            except (TimeoutError, aiohttp.ClientError):
                return  # the server died under this request: not acknowledged, nothing promised
            assert r.status == 200 and body["accepted"] == 200
            accepted.extend(rec["marketoGUID"] for rec in records)
            if len(accepted) >= 6000 and not killed.is_set():
                killed.set()
                server.kill()  # right after a 200, with other requests in flight

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(producer(session, w) for w in range(4)))
    assert len(accepted) >= 6000

    # The log on disk holds every acknowledged record…
    store = SqliteStore(data_dir / "leadstream.db")
    await store.open()
    stored = {e.id for e in await store.read(0, 10_000_000)}
    await store.close()
    assert set(accepted) <= stored

    # …and the restarted server knows them: publishing them again gives only duplicates.
    server = await ServerProcess(data_dir, port=server.port).start()
    try:
        async with aiohttp.ClientSession() as session:
            guids = sorted(accepted)
            for start in range(0, len(guids), 5000):
                chunk = guids[start : start + 5000]
                records = [activity(0, marketoGUID=g) for g in chunk]
                async with session.post(
                    f"{server.url}/v1/streams/activity/events", data=orjson.dumps(records), headers=headers
                ) as r:
                    body = await r.json()
                assert body == {"accepted": 0, "duplicates": len(chunk), "rejected": []}
    finally:
        server.stop()
