"""The delivery engine: a sender for each subscription this node delivers, kept in step with the store.

The engine holds one ``Sender`` (and one asyncio task) per subscription it delivers, one shared
reader of the log tail and the state log. It owns no admin logic: admin commands
(``subscriptions.service``) record what they ask in the subscription's control record and call
``changed``; the engine then stops the sender, lets it take the change (``Sender.apply``), saves
and starts it again. Changes asked on other nodes, or in the API process when delivery runs in a
process of its own, are picked up by following the store (``options.follow``): every
``follow_interval`` the engine reads one number, the highest control revision, and when it moved
(or the leases are due) it renews its leases (``leases.Leases``) and reconciles: it adopts the
subscriptions that became its own — from what their last owner saved, with the changes it had
not applied — drops those it lost, and applies what was asked since.

Retention hook: ``count_expired`` (for ``leadstream.retention.Retention``). The subscriptions
service reads live state through ``live`` (the ``Delivery`` port).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from leadstream.catalog import Catalog
from leadstream.clock import now_ms
from leadstream.delivery import metrics
from leadstream.delivery.endpoint import Endpoint, send_sample
from leadstream.delivery.http import Answer
from leadstream.delivery.leases import Leases
from leadstream.delivery.sender import Sender, Shared
from leadstream.delivery.statelog import StateLog
from leadstream.delivery.tail import LogTail
from leadstream.events import Event
from leadstream.logs import log
from leadstream.security.secretbox import SecretBox
from leadstream.security.signing import KeyRing
from leadstream.store.base import Store, StoredSubscription
from leadstream.subscriptions import state as rules
from leadstream.subscriptions.config import SubscriptionConfig, unseal
from leadstream.subscriptions.matching import Matcher, compile_leniently
from leadstream.subscriptions.service import Live
from leadstream.subscriptions.state import Transition


@dataclass(frozen=True)
class Expiry:
    """Retention counted events a subscription will never receive (for ``on_expired`` listeners)."""

    subscription: str
    munchkin_id: str
    newly: int  # counted this time
    total: int  # its ``expired`` now


@dataclass(frozen=True)
class EngineOptions:
    node_id: str = "local"
    tail_events: int = 100_000  # the shared window of recent events…
    tail_bytes: int = 24 * 1024 * 1024  # …bounded both ways (what they hold in memory, elements included)
    lease_ttl: float = 15.0  # a cluster: seconds a lease lasts unless renewed
    follow: bool = False  # pick up changes made elsewhere (a cluster, or the delivery process)
    follow_interval: float = 0.25
    attempts_kept: int = 1000  # per subscription
    state_log: Path | None = None  # a directory: save states there, checkpoint to the store (one node only)
    checkpoint_interval: float = 1.0  # seconds between state-log checkpoints


class DeliveryEngine:
    def __init__(
        self, store: Store, catalog: Catalog, session: aiohttp.ClientSession, options: EngineOptions | None = None,
        *, keyring: KeyRing | None = None, secretbox: SecretBox | None = None,
        before_follow: Callable[[], Awaitable[None]] | None = None,
    ) -> None:  # fmt: skip
        self.store = store
        self.catalog = catalog
        self.session = session
        self.options = options or EngineOptions()
        self.keyring = keyring
        self.secretbox = secretbox
        self.before_follow = before_follow  # before changes made elsewhere are picked up (reload the catalog)
        self.leases = Leases(store, self.options.node_id, self.options.lease_ttl, self._lapsed)
        self.senders: dict[str, Sender] = {}
        self.on_transition: list[Callable[[Transition], None]] = []  # listeners of state transitions (log, alerts)
        self.on_expired: list[Callable[[Expiry], None]] = []  # listeners of events lost to retention (alerts)
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self.started = False

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        options = self.options
        self._wake = asyncio.Event()
        self.tail = LogTail(self.store, options.tail_events, options.tail_bytes)
        await self.tail.prime()
        state_log = None
        if options.state_log is not None:
            state_log = StateLog(options.state_log)
            await state_log.adopt(self.store, state_log.recover())  # what the last run saved last
            state_log.open()
        self.shared = Shared(
            self.store, self.tail, self.session, self.keyring, state_log, options.attempts_kept, self.leases,
            on_transition=self.on_transition,
        )  # fmt: skip
        self.store.on_cluster_change(self._heard)
        await self.leases.renew()
        for stored in await self.store.list_subscriptions():
            if self.leases.mine(stored.id):
                await self._adopt(stored)
        self._tasks.append(asyncio.create_task(self.tail.run(), name="log-tail"))
        if options.follow or self.leases.owned is not None:
            self._tasks.append(asyncio.create_task(self._follow(), name="leases-and-changes"))
        if state_log is not None:
            self._tasks.append(asyncio.create_task(self._checkpoints(state_log), name="state-checkpoints"))
        self._start_senders()
        metrics.LAG.sources.add(self)
        self.started = True
        log.info("delivery engine started", subscriptions=len(self.senders))

    async def stop(self) -> None:
        """Stop every sender and save where each one is (a batch in flight is sent again later)."""
        if not self.started:
            return
        self.started = False
        metrics.LAG.sources.discard(self)
        self.leases.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        senders = [s for s in self.senders.values() if s.running]
        await asyncio.gather(*(s.stop() for s in senders))
        try:
            await asyncio.gather(*(s.save() for s in senders))
            await asyncio.wait_for(asyncio.gather(*self.shared.background, return_exceptions=True), 5)
            if self.shared.state_log is not None:
                await self.shared.state_log.close(self.store)
            await self.leases.release()  # after the saves: the next owner starts where we stopped
        except Exception as exc:  # the store may already be failing: the states saved earlier stand
            log.warning("could not save delivery state at shutdown", error=str(exc))

    def _heard(self, sub_id: str | None) -> None:
        """Another node asked a change of ``sub_id`` (apply it now, if it is ours), or created a
        subscription or stopped (None: the leases may move now)."""
        if sub_id is None or self.leases.mine(sub_id):
            self._wake.set()

    def _lapsed(self) -> None:
        """The leases lapsed: another node may be sending now. Nothing is saved: the next owner
        starts from the last saved state."""
        for sender in self.senders.values():
            sender.abandon()
        self.senders.clear()

    async def _checkpoints(self, state_log: StateLog) -> None:
        while True:
            await asyncio.sleep(self.options.checkpoint_interval)
            try:
                await state_log.checkpoint(self.store)
            except Exception as exc:  # the states stay in the log files; the next round tries again
                log.warning("delivery state checkpoint failed", error=str(exc))

    # -- senders ------------------------------------------------------------------------------------

    def _matcher(self, config: SubscriptionConfig, sub_id: str, state: rules.DeliveryState) -> Matcher:
        matcher, problem = compile_leniently(config, self.catalog, sub_id)
        if problem is not None:
            log.warning("subscription filter does not compile; it takes nothing", subscription=sub_id, error=problem)
            state.lastError = problem
        return matcher

    async def _adopt(self, stored: StoredSubscription) -> Sender:
        """Deliver a subscription from what was last saved, with the admin changes not applied yet."""
        config = unseal(stored.config, self.secretbox)
        state = rules.decode(stored.state)
        sender = Sender(
            self.shared, stored.id, config, state, self._matcher(config, stored.id, state), applied=stored.applied
        )
        self.senders[stored.id] = sender
        await self._apply(sender, stored)
        return sender

    async def _apply(self, sender: Sender, stored: StoredSubscription) -> None:
        config = unseal(stored.config, self.secretbox)
        if sender.apply(stored.control, config, lambda: self._matcher(config, sender.id, sender.state)):
            await sender.save(to_store=True)

    def _start_senders(self) -> None:
        for sender in self.senders.values():
            if sender.should_run and self.leases.mine(sender.id) and not sender.running:
                sender.start()

    @contextlib.asynccontextmanager
    async def _lock(self, sub_id: str) -> AsyncIterator[None]:
        async with self._locks.setdefault(sub_id, asyncio.Lock()):
            yield

    # -- what the subscriptions service asks (the Delivery port) ---------------------------------------

    def live(self, sub_id: str) -> Live | None:
        sender = self.senders.get(sub_id)
        return sender.live() if sender is not None and self.leases.mine(sub_id) else None

    def chart_readings(self) -> dict[str, tuple[float, float]]:
        """(events delivered, lag in seconds) of each subscription this node delivers, for the
        console's charts: from what the senders hold, nothing read from the store."""
        now = now_ms()
        readings: dict[str, tuple[float, float]] = {}
        for sub_id, sender in list(self.senders.items()):
            if self.leases.mine(sub_id):
                oldest = sender.oldest_held()
                lag = max(0.0, (now - oldest) / 1000) if oldest is not None else 0.0
                readings[sub_id] = (float(sender.state.delivered), lag)
        return readings

    async def changed(self, sub_id: str) -> None:
        """Apply what was just asked of ``sub_id``, if this node delivers it; else look now
        whether it should (a new subscription may get its lease here)."""
        if not self.started:
            return
        if not self.leases.mine(sub_id):
            self._wake.set()
            return
        stored = await self.store.get_subscription(sub_id)
        if stored is None:
            return
        async with self._lock(sub_id):
            sender = self.senders.get(sub_id)
            if sender is None:
                sender = await self._adopt(stored)
            else:
                await sender.stop()
                await self._apply(sender, stored)
            if sender.should_run:
                sender.start()

    async def send_sample(self, sub_id: str, config: SubscriptionConfig, event: Event) -> Answer:
        """Through the subscription's own endpoint (its OAuth2 token cache) where it is delivered here."""
        sender = self.senders.get(sub_id)
        endpoint = sender.endpoint if sender is not None and sender.config == config else None
        return await send_sample(endpoint or Endpoint(sub_id, config, self.session, self.keyring), event)

    # -- following changes made elsewhere -------------------------------------------------------------

    async def _follow(self) -> None:
        seen = await self.store.subscriptions_revision()
        while True:
            # (asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that comes with the
            # wake-up, and stop() would wait for this task for ever)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.follow_interval):
                    await self._wake.wait()
            woken = self._wake.is_set()
            self._wake.clear()
            try:
                revision = await self.store.subscriptions_revision()  # read before the subscriptions: no change missed
                if revision == seen and not woken and not self.leases.due:
                    continue
                if self.before_follow is not None:
                    await self.before_follow()
                await self.leases.renew()
                await self._reconcile(await self.store.list_subscriptions())
                seen = revision
            except Exception as exc:  # the store is down: try again next round (the lease timer stops us in time)
                log.warning("lease renewal failed", error=str(exc))

    async def _reconcile(self, known: list[StoredSubscription]) -> None:
        for stored in known:
            sender = self.senders.get(stored.id)
            if not self.leases.mine(stored.id):
                if sender is not None:  # not saved: the new owner's saves are the truth now
                    await sender.stop()
                    del self.senders[stored.id]
                continue
            if sender is None or stored.control.rev > sender.applied:
                async with self._lock(stored.id):
                    if sender is None:
                        await self._adopt(stored)
                    else:
                        await sender.stop()
                        await self._apply(sender, stored)
        self._start_senders()

    # -- retention and metrics --------------------------------------------------------------------

    async def count_expired(self, through: int) -> None:
        """Retention: events at or below ``through`` are past it. Each subscription this node
        delivers counts those it takes and has not received (``Sender.count_expired``)."""
        self.tail.forget_through(through)  # no sender is served those from memory any more
        for sender in list(self.senders.values()):
            if sender.state.state != rules.DEPROVISIONED and sender.received_through() < through:
                async with self._lock(sender.id):
                    before = sender.state.expired
                    if await sender.count_expired(through) and self.leases.mine(sender.id):
                        await sender.save()
                    if sender.state.expired > before:
                        expiry = Expiry(
                            sender.id, sender.config.munchkinId, sender.state.expired - before, sender.state.expired
                        )
                        for listener in self.on_expired:
                            listener(expiry)

    def lags(self) -> Iterator[tuple[str, float]]:
        """For the lag gauge: what each sender holds, without touching the store."""
        now = now_ms()
        for sender in self.senders.values():
            if sender.state.state != rules.DEPROVISIONED:
                oldest = sender.oldest_held()
                yield sender.id, max(0.0, (now - oldest) / 1000) if oldest is not None else 0.0
