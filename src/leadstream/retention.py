"""The retention timer (SPEC §4.5): events older than --retention leave the log, even undelivered.

Counting and deleting are separate. Each round, ``count_expired(P)`` lets the delivery engine
count, for the subscriptions this node delivers, the matching events at or below ``P`` (the last
position past retention) that they never received. Then the events ingested ``grace`` seconds
before the cutoff are deleted. One node: ``grace`` is 0 (the count runs just before, in the same
round). A cluster: every node counts for its own subscriptions, but any node may purge, so
``grace`` (2 × purge interval + lease TTL) lets every owner — or the next owner of a lapsed
lease — count before the events go. Events may outlive --retention by that much there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from leadstream.clock import now_ms
from leadstream.logs import log
from leadstream.store.base import Store


def cluster_grace(purge_interval: float, lease_ttl: float) -> float:
    """Seconds events stay past retention in a cluster, so that every owner has counted them."""
    return 2 * purge_interval + lease_ttl


class Retention:
    """Purges on a timer. ``count_expired`` (the delivery engine's) counts, per subscription,
    what expires before it was received (without it, nothing is counted)."""

    def __init__(
        self,
        store: Store,
        retention: float,
        interval: float,
        count_expired: Callable[[int], Awaitable[None]] | None = None,
        grace: float = 0.0,
    ) -> None:
        self.store = store
        self.retention = retention
        self.interval = interval
        self.count_expired = count_expired
        self.grace = grace
        self.purged = 0

    async def purge_once(self) -> int:
        cutoff = now_ms() - int(self.retention * 1000)
        if self.count_expired is not None:
            await self.count_expired(await self.store.position_before(cutoff))
        # Counted above (or by each owner, in a cluster): now the events may go.
        deleted = await self.store.purge(cutoff - int(self.grace * 1000))
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
