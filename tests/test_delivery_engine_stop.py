"""The delivery engine stops even when a stop comes with a wake-up of its follow loop."""

from __future__ import annotations

import asyncio

import aiohttp

from leadstream.catalog import Catalog
from leadstream.delivery.engine import DeliveryEngine, EngineOptions
from leadstream.store.sqlite import SqliteStore
from leadstream.testing import wait_until


async def test_a_stop_that_comes_with_a_wake_up_still_stops_the_follow_loop(tmp_path):
    # A change heard from another node (a wake-up) and the cancel of stop() in the same turn of the
    # loop: asyncio.wait_for on 3.11 returned the wake-up and dropped the cancel, and stop() hung.
    async with SqliteStore(tmp_path / "ls.db") as store, aiohttp.ClientSession() as session:
        engine = DeliveryEngine(store, Catalog(), session, EngineOptions(follow=True, follow_interval=3600))
        await engine.start()
        follow = next(t for t in engine._tasks if t.get_name() == "leases-and-changes")
        await wait_until(lambda: engine._wake._waiters, what="the follow loop to wait for a wake-up")
        engine._heard(None)  # the wake-up, as the store's cluster notice gives it
        async with asyncio.timeout(10):
            await engine.stop()
        assert follow.cancelled()
