"""Which subscriptions this node delivers: all of them (one node), or those it holds a lease on.

A node renews every third of the TTL and also just after another node's lease runs out, so a
dead node's subscriptions move within the TTL of its last renewal (plus one follow interval). A
node stopping cleanly releases its leases, and the others, told by the store, take them at once.

A lease is valid until the start of the ``renew()`` call that granted or renewed it plus the TTL.
When renewals fail past that moment, ``on_lapse`` runs at once (the engine cancels its senders:
an attempt in flight is abandoned and sent again, under the same delivery id, by the next owner)
and no attempt starts on a lapsed lease; the store lets another node take the lease only after
the same moment (by the database clock, which starts no earlier). So the attempt timeout need
not be shorter than the TTL.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

from leadstream.logs import log
from leadstream.store.base import Store

MIN_WAIT = 0.02  # seconds: look a little after a lease runs out, never in a busy loop
Acquire = Callable[[str, float], Awaitable[set[str] | None]]  # (node id, ttl) -> what this node holds
Expiry = Callable[[str], Awaitable[float | None]]  # (node id) -> seconds until another node's lease runs out
Release = Callable[[str], Awaitable[None]]  # (node id): give this node's leases up, and tell the others


class Leases:
    """Subscription leases by default; ``acquire=store.lease_sources, expiry=store.next_source_lease_expiry,
    release=store.release_source_leases`` makes them the sources' leases."""

    def __init__(
        self, store: Store, node_id: str, ttl: float, on_lapse: Callable[[], None], *,
        acquire: Acquire | None = None, expiry: Expiry | None = None, release: Release | None = None,
    ) -> None:  # fmt: skip
        self.store = store
        self.acquire = acquire or store.lease
        self.expiry = expiry or store.next_lease_expiry
        # Other leases than the subscriptions' are given up only with their own release function.
        self.releaser = release or (store.release_leases if acquire is None else None)
        self.node_id = node_id
        self.ttl = ttl
        self.on_lapse = on_lapse
        self.owned: set[str] | None = None  # None: this node delivers every subscription
        self.valid_until = math.inf  # event-loop time: no attempt starts after it
        self.renew_at = 0.0
        self._lapse: asyncio.TimerHandle | None = None

    def mine(self, sub_id: str) -> bool:
        return self.owned is None or sub_id in self.owned

    @property
    def due(self) -> bool:
        """Time to renew (every third of the TTL)."""
        return self.owned is not None and asyncio.get_running_loop().time() >= self.renew_at

    async def renew(self) -> set[str] | None:
        """Ask the store for this node's leases; returns them (None: every subscription)."""
        loop = asyncio.get_running_loop()
        asked_at = loop.time()
        owned = await self.acquire(self.node_id, self.ttl)
        if owned is not None:
            self.valid_until = asked_at + self.ttl
            # Renew every third of the TTL, and also right when another node's lease runs out:
            # if that node died, its subscriptions move now, within the TTL of its last renewal.
            expiry = await self.expiry(self.node_id)
            next_look = self.ttl / 3 if expiry is None else min(self.ttl / 3, expiry + MIN_WAIT)
            self.renew_at = asked_at + next_look
            if self._lapse is not None:
                self._lapse.cancel()
            self._lapse = loop.call_at(self.valid_until, self._lapsed)
            before = self.owned or set()
            if owned != before:  # the operator's log tells where each subscription went
                log.info("leases moved", node=self.node_id, gained=sorted(owned - before), lost=sorted(before - owned))
        self.owned = owned
        return owned

    def _lapsed(self) -> None:
        """No renewal in time: another node may take our subscriptions now, so stop sending."""
        log.warning("leases lapsed (renewal failed); stopped on this node", node=self.node_id)
        self.owned = set()
        self.on_lapse()

    def stop(self) -> None:
        if self._lapse is not None:
            self._lapse.cancel()

    async def release(self) -> None:
        """Give the leases up (a clean stop, after the senders saved): the other nodes take them
        at once instead of after the TTL."""
        if self.owned is not None and self.releaser is not None:
            self.owned = set()
            await self.releaser(self.node_id)
