"""The console for a running service: sign-in against its API keys, its pages, the sampler's readings."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

from prometheus_client import REGISTRY
from starlette.applications import Starlette

from leadstream import metrics_export
from leadstream.console.app import ConsoleOptions, create_console
from leadstream.console.pages import catalog, events, operator, overview, sources, subscriptions
from leadstream.console.pages.deps import RuntimeOf, json_text, when, when_text
from leadstream.console.pages.sessions import StoreSessionStore
from leadstream.console.series import Sampler
from leadstream.console.session import IDLE_TIMEOUT, Identity
from leadstream.console.templating import Templates
from leadstream.events import STREAMS
from leadstream.runtime import Role, Runtime
from leadstream.security.principals import Principal, identify_fresh
from leadstream.store.base import Store


def console_app(
    runtime_of: RuntimeOf,
    sampler: Sampler,
    options: ConsoleOptions = ConsoleOptions(),
    *,
    session_idle: float = IDLE_TIMEOUT,
    session_cache: float = 1.0,
) -> Starlette:
    """The ASGI app to mount at ``options.prefix``; ``runtime_of`` gives the running service (None
    while it starts or stops: sign-in then refuses, pages answer 503). Sessions live in the
    service's store (any node answers them); ``session_cache``: seconds a session read is reused."""

    def store_of() -> Store | None:
        runtime = runtime_of()
        return runtime.store if runtime is not None else None

    async def verify(key: str) -> Identity | None:
        runtime = runtime_of()
        if runtime is None:
            return None
        return await identify_fresh(key, runtime.admin_key, runtime.api_keys)

    async def recheck(identity: Identity) -> Identity | None:
        """The key as it is now: a revoked key's sessions end at the next request."""
        runtime = runtime_of()
        if runtime is None or identity.munchkin_ids is None:
            return identity
        # A key this node does not know yet was made on another node moments ago: ask the store.
        record = runtime.api_keys.get(identity.key_id) or await runtime.api_keys.fresh(identity.key_id)
        if record is None or record.revokedAt is not None:
            return None
        return Principal(record.id, frozenset(record.munchkinIds), frozenset(record.scopes))

    templates = Templates(prefix=options.prefix, product=options.product)
    templates.env.globals.update(when=when, when_text=when_text, json_text=json_text)
    pages = [
        *overview.routes(),
        *subscriptions.routes(),
        *events.routes(),
        *sources.routes(),
        *catalog.routes(),
        *operator.routes(),
    ]

    def operator_key() -> str:
        runtime = runtime_of()
        return runtime.admin_key if runtime is not None else ""

    sessions = StoreSessionStore(store_of, operator_key, idle=session_idle, cache_seconds=session_cache)
    app = create_console(verify, recheck=recheck, sessions=sessions, pages=pages, options=options, templates=templates)
    app.state.runtime_of = runtime_of
    app.state.sampler = sampler
    return app


def _ingested(stream: str) -> float:
    return REGISTRY.get_sample_value("leadstream_ingested_events_total", {"stream": stream}) or 0.0


async def readings(runtime: Runtime) -> dict[Hashable, float]:
    """One sample for the charts: events ingested per stream (this node's counter), and per
    subscription this node delivers, events delivered and lag. A few numbers per subscription
    every sampler interval, read from what the senders hold already: no store query, nothing per event."""
    values: dict[Hashable, float] = {("ingested", stream): _ingested(stream) for stream in STREAMS}
    if runtime.role is Role.API:  # delivery runs in the delivery process: it answers when asked
        per_subscription = await asyncio.to_thread(metrics_export.chart_readings, runtime.settings.data_dir)
    else:
        per_subscription = runtime.delivery.chart_readings() if runtime.delivery is not None else {}
    for sub_id, (delivered, lag) in per_subscription.items():
        values[("delivered", sub_id)] = delivered
        values[("lag", sub_id)] = lag
    return values
