"""The app factory. The lifespan owns the resources: store, catalog, delivery engine, timers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import leadstream
from leadstream.api import admin_keys
from leadstream.api import audit as audit_routes
from leadstream.api import catalog as catalog_routes
from leadstream.api import journal as journal_routes
from leadstream.api import keys as key_routes
from leadstream.api import subscriptions as subscription_routes
from leadstream.api.ingest import OPENAPI_PATH, ingest
from leadstream.api.problems import HANDLERS
from leadstream.api.ratelimit import IngestGuard
from leadstream.api.security import Security
from leadstream.catalog import Catalog
from leadstream.delivery.engine import DeliveryEngine, EngineOptions
from leadstream.delivery.signing import KeyRing
from leadstream.events import Validator
from leadstream.retention import Retention, cluster_grace
from leadstream.settings import Settings
from leadstream.store import Store, open_store


@dataclass
class Services:
    """What request handlers reach through ``request.app.state.services``."""

    settings: Settings
    admin_key: str
    store: Store
    catalog: Catalog
    validator: Validator
    retention: Retention
    delivery: DeliveryEngine | None = None  # set by the lifespan once started
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    admin_key, _ = settings.resolve_admin_key()
    app.state.keyring = KeyRing(settings.data_dir / "keys")
    store = open_store(settings.database_url or settings.data_dir, node_id=settings.node_id)
    await store.open()
    catalog = Catalog()
    services = Services(
        settings=settings,
        admin_key=admin_key,
        store=store,
        catalog=catalog,
        validator=Validator(catalog),
        retention=Retention(store, settings.retention, settings.purge_interval),
    )
    app.state.services = services
    app.state.security = await Security.start(settings, store)  # API keys, secret box, audit, rate limits
    await catalog_routes.restore(services)
    options = EngineOptions(
        allow_private_endpoints=settings.allow_private_endpoints,
        allowed_cidrs=tuple(settings.allowed_cidrs),
        node_id=settings.node_id,
        lease_ttl=settings.lease_ttl,
        state_log=None if settings.database_url or settings.delivery_process else settings.data_dir,
        deliver=not settings.delivery_process,  # else the delivery process delivers (leadstream.delivery.worker)
    )
    services.delivery = DeliveryEngine(
        store, catalog, options, keyring=app.state.keyring, secretbox=app.state.security.secretbox
    )
    await services.delivery.start()
    if not settings.delivery_process:  # else the delivery process purges, and counts what expires
        # Retention counts, per subscription, the events that expire before delivery; in a
        # cluster it deletes them only once every owner has had time to count them.
        services.retention.count_expired = services.delivery.count_expired
        if settings.database_url:
            services.retention.grace = cluster_grace(settings.purge_interval, settings.lease_ttl)
        services.tasks.append(asyncio.create_task(services.retention.run(), name="retention"))
    try:
        yield
    finally:
        for task in services.tasks:
            task.cancel()
        await asyncio.gather(*services.tasks, return_exceptions=True)
        if services.delivery is not None:
            await services.delivery.stop()
        await app.state.security.close()  # writes pending key last-used times
        await store.close()


async def healthz(request: Request) -> Response:
    services = getattr(request.app.state, "services", None)
    healthy = services is not None and await services.store.healthy()
    body = {"status": "ok" if healthy else "degraded", "version": leadstream.__version__}
    return JSONResponse(body, status_code=200 if healthy else 503)


async def metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(
        title="leadstream",
        version=leadstream.__version__,
        description="Data Streams: a durable event log pushed to subscriber endpoints, and a journal to pull it.",
        lifespan=lifespan,
        exception_handlers=HANDLERS,  # type: ignore[arg-type]
    )
    app.state.settings = settings or Settings()
    app.router.routes.append(Route("/v1/streams/{stream}/events", ingest, methods=["POST"]))
    app.router.routes.append(Route("/healthz", healthz, methods=["GET"]))
    app.router.routes.append(Route("/metrics", metrics, methods=["GET"]))
    app.include_router(catalog_routes.router)
    app.include_router(key_routes.router)  # public signing keys, no auth
    app.include_router(subscription_routes.router)  # /v1/subscriptions admin API
    app.include_router(journal_routes.router)  # journal (pull) and sample events
    app.include_router(admin_keys.router)  # /v1/keys (tenant API keys)
    app.include_router(audit_routes.router)  # /v1/audit
    app.add_middleware(IngestGuard)  # ingest scope and per-key rate limit

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schema["paths"]["/v1/streams/{stream}/events"] = OPENAPI_PATH
            schema.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            schema["security"] = [{"bearer": []}]
            schema["paths"]["/healthz"] = {
                "get": {"summary": "Liveness and store health (no auth)", "operationId": "healthz", "security": [],
                        "responses": {"200": {"description": "ok"}, "503": {"description": "degraded"}}}
            }
            schema["paths"]["/metrics"] = {
                "get": {"summary": "Prometheus metrics (no auth)", "operationId": "metrics", "security": [],
                        "responses": {"200": {"description": "text exposition format"}}}
            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
