"""Runs the sources this node holds: one poller task per source, restarted when an admin changes it.

On one node every source runs here. In a cluster the sources are leased like subscriptions
(``delivery.leases.Leases`` over ``Store.lease_sources``): a node runs only those it holds, and
when its renewals fail past the lease it stops them at once, before another node may take them;
the next owner resumes from the checkpoints. A clean stop saves each source's status, releases
the leases and tells the other nodes (the store's cluster channel), so the next owner starts at
once instead of after the TTL. The runner looks at the store every ``follow_interval`` (and at
once when this node's admin API changed a source, or another node released leases), so changes
made on other nodes arrive within that.

The sources of one Munchkin ID share one ``ApiBudget`` over the store's ledger, so they spend one
budget with every other node's; its limits are the strictest any of them gives.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from leadstream.catalog import Catalog
from leadstream.delivery.leases import Leases
from leadstream.events import Validator
from leadstream.logs import log
from leadstream.security.secretbox import SecretBox
from leadstream.sources import config as rules
from leadstream.sources import metrics
from leadstream.sources.budget import ApiBudget, BudgetLimits
from leadstream.sources.ledger import StoreLedger
from leadstream.sources.marketo.client import MarketoClient
from leadstream.sources.marketo.poller import MarketoPoller, PollerOptions
from leadstream.store.base import Store, StoredSource


@dataclass(slots=True)
class _Running:
    rev: int
    poller: MarketoPoller
    task: asyncio.Task[None]


class SourceRunner:
    def __init__(
        self, store: Store, catalog: Catalog, validator: Validator, session: aiohttp.ClientSession, *,
        secretbox: SecretBox | None, node_id: str, lease_ttl: float, follow_interval: float,
        options: PollerOptions = PollerOptions(),
    ) -> None:  # fmt: skip
        self.store, self.catalog, self.validator, self.session = store, catalog, validator, session
        self.secretbox, self.options = secretbox, options
        self.follow_interval = min(follow_interval, lease_ttl / 3)
        self.leases = Leases(
            store, node_id, lease_ttl, self._lapsed,
            acquire=store.lease_sources, expiry=store.next_source_lease_expiry, release=store.release_source_leases,
        )  # fmt: skip
        self._renew = True  # ask the store for the leases at the next look (not only when due)
        self._running: dict[str, _Running] = {}
        self._budgets: dict[str, ApiBudget] = {}
        self._left: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        metrics.COLLECTOR.runners.add(self)

    # -- what the admin side asks ---------------------------------------------------------------------
    def live(self, source_id: str) -> dict[str, Any] | None:
        running = self._running.get(source_id)
        return running.poller.status() if running is not None else None

    async def changed(self, source_id: str) -> None:
        self._renew = True  # a new source is leased at once
        self._wake.set()

    def _heard(self, sub_id: str | None) -> None:
        """Another node said something on the cluster channel; None: it may have released its leases."""
        if sub_id is None:
            self._renew = True
            self._wake.set()

    def lags(self) -> Iterable[tuple[str, float]]:
        return [(source_id, r.poller.lag()) for source_id, r in self._running.items()]

    def states(self) -> Iterable[tuple[str, MarketoPoller]]:
        """Each source this node runs, with its poller (``state``, ``last_error``, ``config``): for alerts."""
        return [(source_id, r.poller) for source_id, r in self._running.items()]

    def budgets_left(self) -> Iterable[tuple[str, float]]:
        """Calls left today per Munchkin ID, as of the last look at the store."""
        return [(munchkin_id, float(calls)) for munchkin_id, calls in self._left.items()]

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        self.store.on_cluster_change(self._heard)
        self._task = asyncio.create_task(self._follow(), name="sources")

    async def stop(self) -> None:
        """Stop every poller, save its status, then give the leases up: the next owner resumes from
        the checkpoints (a page in flight is read again; its events are stored once)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._stop_all()
        self.leases.stop()
        try:
            await self.leases.release()
        except Exception as exc:  # the store is failing: the leases run out after the TTL instead
            log.warning("could not release the sources' leases", error=str(exc) or type(exc).__name__)

    async def _follow(self) -> None:
        while True:
            try:
                await self._reconcile()
            except Exception as exc:  # the store is down, say: keep what runs, look again later
                log.warning("sources: could not look at the store", error=str(exc) or type(exc).__name__)
            with contextlib.suppress(TimeoutError):  # (not wait_for: on 3.11 it can swallow the cancel of stop())
                async with asyncio.timeout(self.follow_interval):
                    await self._wake.wait()
            self._wake.clear()

    async def _reconcile(self) -> None:
        if self._renew or self.leases.due:
            self._renew = False
            try:
                await self.leases.renew()
            except Exception:
                self._renew = True  # look again at the next try
                raise
        stored = {s.id: s for s in await self.store.list_sources()}
        wanted = {i: s for i, s in stored.items() if not s.paused and self.leases.mine(i)}
        for source_id, running in list(self._running.items()):
            source = wanted.get(source_id)
            if running.task.done() and not running.task.cancelled() and running.task.exception() is not None:
                error = running.task.exception()
                log.error("source poller crashed; restarting it", source=source_id, error=repr(error))
            if source is None:
                known = stored.get(source_id)
                await self._stop(source_id, "deleted" if known is None else "paused" if known.paused else "lease moved")
            elif source.rev != running.rev:
                await self._stop(source_id, "settings changed")
            elif running.task.done():
                await self._stop(source_id, "its poller ended")
        for source_id, source in wanted.items():
            if source_id not in self._running:
                self._start(source)
        peers = Counter(r.poller.config.munchkinId for r in self._running.values())
        for running in self._running.values():
            running.poller.peers = peers[running.poller.config.munchkinId]
        self._left = {}
        for munchkin_id, budget in self._budgets.items():
            status = await budget.status()
            self._left[munchkin_id] = status.call_budget - status.calls_today

    def _start(self, source: StoredSource) -> None:
        config = rules.unseal(source.config, self.secretbox)
        budget = self._budget(config)
        client = MarketoClient(
            config.restUrl, config.clientId, config.clientSecret, budget=budget, session=self.session,
            identity_url=config.identity, observe=metrics.observe_call,
            timeout=aiohttp.ClientTimeout(total=self.options.call_timeout),
        )  # fmt: skip
        poller = MarketoPoller(
            source.id, config, store=self.store, catalog=self.catalog, validator=self.validator,
            client=client, budget=budget, options=self.options, saved=orjson.loads(source.status or b"{}"),
        )  # fmt: skip
        task = asyncio.create_task(poller.run(), name=f"source-{source.id}")
        self._running[source.id] = _Running(source.rev, poller, task)
        log.info("source started", source=source.id, munchkin=config.munchkinId)

    def _budget(self, config: rules.MarketoSourceConfig) -> ApiBudget:
        limits = BudgetLimits(
            calls_per_20s=config.callsPer20s,
            max_concurrent=config.maxConcurrent,
            daily_quota=config.dailyQuota,
            quota_share=config.quotaShare,
            window_seconds=self.options.window_seconds,
        )
        budget = self._budgets.get(config.munchkinId)
        if budget is None:
            budget = self._budgets[config.munchkinId] = ApiBudget(
                config.munchkinId, StoreLedger(self.store), limits, quota_probe=self.options.quota_probe
            )
        else:  # several sources of one instance: the strictest limits of them all
            current = budget.limits
            budget.limits = BudgetLimits(
                calls_per_20s=min(current.calls_per_20s, limits.calls_per_20s),
                max_concurrent=min(current.max_concurrent, limits.max_concurrent),
                daily_quota=min(current.daily_quota, limits.daily_quota),
                quota_share=min(current.quota_share, limits.quota_share),
                window_seconds=limits.window_seconds,
            )
            budget.max_in_flight = min(budget.max_in_flight, budget.limits.max_concurrent)
        return budget

    async def _stop(self, source_id: str, reason: str) -> None:
        running = self._running.pop(source_id)
        running.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await running.task
        if self.leases.mine(source_id):  # not once the lease lapsed: another node may run it now
            await self._save_status(source_id, running.poller)
        munchkin_id = running.poller.config.munchkinId
        if not any(r.poller.config.munchkinId == munchkin_id for r in self._running.values()):
            self._budgets.pop(munchkin_id, None)  # rebuilt from the next source's limits
        log.info("source stopped", source=source_id, reason=reason)

    async def _save_status(self, source_id: str, poller: MarketoPoller) -> None:
        try:
            await self.store.save_source_status(source_id, orjson.dumps(poller.status()))
        except Exception as exc:  # the store is failing: the status saved with the last checkpoint stands
            log.warning("source status not saved", source=source_id, error=str(exc) or type(exc).__name__)

    async def _stop_all(self) -> None:
        for source_id in list(self._running):
            await self._stop(source_id, "the server stops")

    def _lapsed(self) -> None:
        """No renewal in time: another node may take our sources now, so stop polling at once."""
        for running in self._running.values():
            running.task.cancel()
        self._wake.set()
