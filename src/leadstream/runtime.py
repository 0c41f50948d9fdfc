"""The one place that builds the service from ``Settings``, for the role a process plays.

- ``Role.NODE``: ingest, admin, journal and delivery in one process (the default; every node of
  a cluster too);
- ``Role.API``: everything but delivery, which runs in a process of its own on the same data
  directory (``leadstream serve --delivery-process``);
- ``Role.DELIVERY``: that process: the delivery engine and retention, following the admin
  changes and the appends the API process writes to the store.

``running`` opens the resources in order (store, secrets, catalog, keys, the delivery engine,
timers) and closes them in reverse; the app's lifespan, the delivery process and the tests all
go through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from leadstream.alerts.dispatch import AlertDispatcher, DispatchOptions
from leadstream.alerts.service import Alerts
from leadstream.catalog import Catalog
from leadstream.catalog import persistence as catalogs
from leadstream.delivery.endpoint import sample_sender
from leadstream.delivery.engine import DeliveryEngine, EngineOptions
from leadstream.delivery.statelog import StateLog
from leadstream.events import Validator
from leadstream.logs import log
from leadstream.retention import Retention, cluster_grace
from leadstream.security.apikeys import ApiKeys
from leadstream.security.audit import AuditLog
from leadstream.security.guard import GuardPolicy, make_session
from leadstream.security.ratelimit import RateLimiter
from leadstream.security.secretbox import KEY_FILE, SecretBox, load_secretbox
from leadstream.security.signing import KeyRing
from leadstream.settings import Settings
from leadstream.sources.marketo.poller import PollerOptions
from leadstream.sources.runner import SourceRunner
from leadstream.sources.service import Sources
from leadstream.store import Store, open_store
from leadstream.subscriptions.service import Subscriptions
from leadstream.subscriptions.state import Transition

# The delivery process's own writes (attempt logs, state checkpoints) need no haste: gathered for
# this long, they take the SQLite write lock it shares with ingest once.
DELIVERY_PROCESS_COMMIT_INTERVAL = 0.05
CLUSTER_SHUTDOWN_SECONDS = 1.0  # a cluster node's stop, once the server has stopped (SPEC §12: out within 2 s)


class Role(enum.Enum):
    NODE = "node"
    API = "api"
    DELIVERY = "delivery"

    @classmethod
    def of_server(cls, settings: Settings) -> Role:
        return cls.API if settings.delivery_process else cls.NODE


@dataclass
class Runtime:
    settings: Settings
    role: Role
    admin_key: str  # "" in the delivery process, which serves no API
    store: Store
    catalog: Catalog
    validator: Validator
    secretbox: SecretBox
    keyring: KeyRing
    api_keys: ApiKeys
    audit: AuditLog
    rate_limiter: RateLimiter
    session: aiohttp.ClientSession  # every outbound call: deliveries, challenges, samples
    subscriptions: Subscriptions
    sources: Sources
    source_runner: SourceRunner | None  # None: this process runs no source (the API process)
    delivery: DeliveryEngine | None  # None: this process delivers nothing
    retention: Retention | None  # None: another process purges
    alerts: Alerts
    alert_dispatcher: AlertDispatcher | None  # None: the process that delivers raises and sends them
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    async def reload_catalog(self) -> None:
        await catalogs.restore(self.catalog, self.store)


def prepare(settings: Settings) -> None:
    """Make the files two processes of one data directory must share (the master key, the signing
    keys) before the second one starts, so that they cannot each make their own."""
    load_secretbox(settings.data_dir, _secret(settings, "master_key"))
    KeyRing(settings.data_dir / "keys")


def log_transition(moved: Transition) -> None:
    """One log line per state move of a subscription, with the reason (not one per attempt)."""
    after = moved.after
    failing = after.state == "retrying" or after.pausedReason == "failures"
    (log.warning if failing else log.info)(
        "subscription state changed",
        subscription=moved.subscription,
        munchkin_id=moved.munchkin_id,
        state=after.state,
        was=moved.before.state,
        reason=after.pausedReason,
        failures=after.consecutiveFailures or None,
        error=after.lastError if failing else None,
    )


def _secret(settings: Settings, name: str) -> str | None:
    value = getattr(settings, name)
    return value.get_secret_value() if value is not None else None


@contextlib.asynccontextmanager
async def running(settings: Settings, role: Role) -> AsyncIterator[Runtime]:
    clustered = settings.database_url is not None
    master_key = _secret(settings, "master_key")
    if clustered and master_key is None and not (settings.data_dir / KEY_FILE).exists():
        # Each node would make its own key and could not open what the others sealed.
        log.warning("cluster node without LEADSTREAM_MASTER_KEY: set the same master key on every node")
    admin_key = settings.resolve_admin_key()[0] if role is not Role.DELIVERY else ""
    target = settings.database_url or settings.data_dir
    store = open_store(
        # The two processes of one data directory both append (ingest; the sources in the
        # delivery process): each follows the other's commits.
        target, node_id=settings.node_id, follow_appends=role is not Role.NODE,
        commit_interval=DELIVERY_PROCESS_COMMIT_INTERVAL if role is Role.DELIVERY else 0.0,
    )  # fmt: skip
    await store.open()
    session = make_session(GuardPolicy.from_settings(settings))
    keyring = KeyRing(settings.data_dir / "keys")
    secretbox = load_secretbox(settings.data_dir, master_key)
    catalog = Catalog()
    validator = Validator(catalog)
    delivery = None
    source_runner = None
    if role is not Role.API:
        options = EngineOptions(
            node_id=settings.node_id,
            lease_ttl=settings.lease_ttl,
            attempts_kept=settings.attempts_kept,
            follow=clustered or role is Role.DELIVERY,
            state_log=None if clustered else settings.data_dir,
        )
        delivery = DeliveryEngine(
            store, catalog, session, options, keyring=keyring, secretbox=secretbox,
            before_follow=lambda: catalogs.restore(catalog, store),
        )  # fmt: skip
        delivery.on_transition.append(log_transition)
        source_runner = SourceRunner(
            store, catalog, validator, session, secretbox=secretbox, node_id=settings.node_id,
            lease_ttl=settings.lease_ttl, follow_interval=settings.source_follow_interval,
            options=PollerOptions(
                window_seconds=settings.source_rate_window, backoff_base=settings.source_backoff_base,
                backoff_cap=settings.source_backoff_cap, auth_retry=settings.source_auth_retry,
                quota_probe=settings.source_quota_probe, catalog_refresh=settings.source_catalog_refresh,
                call_timeout=settings.source_call_timeout,
            ),
        )  # fmt: skip
    runtime = Runtime(
        settings=settings,
        role=role,
        admin_key=admin_key,
        store=store,
        catalog=catalog,
        validator=validator,
        secretbox=secretbox,
        keyring=keyring,
        api_keys=ApiKeys(store, refresh=settings.key_refresh_interval),
        audit=AuditLog(store),
        rate_limiter=RateLimiter(settings.ingest_rate_limit, settings.ingest_burst),
        session=session,
        subscriptions=Subscriptions(
            store,
            catalog,
            secretbox=secretbox,
            policy=GuardPolicy.from_settings(settings),
            session=session,
            send_sample=delivery.send_sample if delivery is not None else sample_sender(session, keyring),
            delivery=delivery,
            saved_elsewhere=StateLog(settings.data_dir).recover if role is Role.API else None,
        ),
        sources=Sources(
            store,
            catalog,
            secretbox=secretbox,
            policy=GuardPolicy.from_settings(settings),
            retention_ms=int(settings.retention * 1000),
            rate_window=settings.source_rate_window,
            runner=source_runner,
        ),
        source_runner=source_runner,
        delivery=delivery,
        retention=None,
        alerts=Alerts(store, secretbox, GuardPolicy.from_settings(settings)),
        alert_dispatcher=None,
    )
    if delivery is not None:  # alerts are raised where delivery runs (and sent from there)
        runtime.alert_dispatcher = dispatcher = AlertDispatcher(
            store, runtime.alerts, session, DispatchOptions.from_settings(settings), delivery, source_runner
        )
        delivery.on_transition.append(dispatcher.on_transition)
        delivery.on_expired.append(dispatcher.on_expired)
    try:
        await runtime.reload_catalog()
        if role is not Role.DELIVERY:
            await runtime.api_keys.load()
            runtime.tasks.append(asyncio.create_task(runtime.api_keys.run(), name="api-keys"))
        if runtime.alert_dispatcher is not None:
            await runtime.alert_dispatcher.start()
        if delivery is not None:
            await delivery.start()
            # Retention counts, per subscription, the events that expire before delivery; in a
            # cluster it deletes them only once every owner has had time to count them.
            grace = cluster_grace(settings.purge_interval, settings.lease_ttl) if clustered else 0.0
            runtime.retention = Retention(
                store, settings.retention, settings.purge_interval, delivery.count_expired, grace
            )
            runtime.tasks.append(asyncio.create_task(runtime.retention.run(), name="retention"))
        if source_runner is not None:
            await source_runner.start()
        yield runtime
    finally:

        async def stop() -> None:
            for task in runtime.tasks:  # the key loop writes pending last-used times as it stops
                task.cancel()
            await asyncio.gather(*runtime.tasks, return_exceptions=True)
            if source_runner is not None:
                await source_runner.stop()
            if delivery is not None:
                await delivery.stop()
            if runtime.alert_dispatcher is not None:  # after delivery: the alerts it raised are written
                await runtime.alert_dispatcher.stop()
            await session.close()
            await store.close()

        if not clustered:
            await stop()
        else:
            # A database that stopped answering (a network cut) must not hold the node up: what
            # is not saved by then is done again by the next owner (at least once).
            try:
                await asyncio.wait_for(stop(), CLUSTER_SHUTDOWN_SECONDS)
            except TimeoutError:
                log.warning("the database did not answer while stopping; stopped without the last saves")
                store.abort()
