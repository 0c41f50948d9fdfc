"""The retention timer (SPEC §4.5): events older than --retention leave the log, even undelivered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from leadstream.events import Event
from leadstream.logs import log
from leadstream.store.base import Store


class Retention:
    """Purges on a timer. ``on_expire`` / ``lowest_cursor`` let the delivery engine count what
    its subscriptions never received (without them, nothing is counted)."""

    def __init__(
        self,
        store: Store,
        retention: float,
        interval: float,
        on_expire: Callable[[list[Event]], None] | None = None,
        lowest_cursor: Callable[[], int] | None = None,
    ) -> None:
        self.store = store
        self.retention = retention
        self.interval = interval
        self.on_expire = on_expire or (lambda events: None)
        self.lowest_cursor = lowest_cursor
        self.purged = 0

    async def purge_once(self) -> int:
        cutoff = time.time_ns() // 1_000_000 - int(self.retention * 1000)
        count_after = self.lowest_cursor() if self.lowest_cursor else await self.store.last_position()
        deleted = await self.store.purge(cutoff, self.on_expire, count_after=count_after)
        self.purged += deleted
        if deleted:
            log.info("retention purged events", deleted=deleted)
        return deleted

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.purge_once()
            except Exception as exc:  # the next round tries again; the log must not stop the server
                log.warning("retention purge failed", error=str(exc))
