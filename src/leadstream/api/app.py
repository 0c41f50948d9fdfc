"""The app factory. The lifespan runs the service (``leadstream.runtime``) for as long as the app serves."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import leadstream
from leadstream import metrics_export, runtime
from leadstream.api import admin_keys, docs
from leadstream.api import alerts as alert_routes
from leadstream.api import audit as audit_routes
from leadstream.api import catalog as catalog_routes
from leadstream.api import journal as journal_routes
from leadstream.api import keys as key_routes
from leadstream.api import openapi as openapi_doc
from leadstream.api import sources as source_routes
from leadstream.api import subscriptions as subscription_routes
from leadstream.api.ingest import OPENAPI_PATH, IngestGuard, ingest
from leadstream.api.problems import HANDLERS
from leadstream.console import Sampler
from leadstream.console.pages import console_app, readings
from leadstream.settings import Settings


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    async with runtime.running(settings, runtime.Role.of_server(settings)) as running:
        app.state.runtime = running
        sampler: Sampler = app.state.console_sampler  # the console's charts: a few counters per interval
        running.tasks.append(asyncio.create_task(sampler.run(lambda: readings(running)), name="console-sampler"))
        try:
            yield
        finally:
            app.state.runtime = None


async def healthz(request: Request) -> Response:
    running = getattr(request.app.state, "runtime", None)
    problem = "the service is starting or stopping" if running is None else await running.store.health_problem()
    body: dict[str, str] = {"status": "ok" if problem is None else "degraded", "version": leadstream.__version__}
    if problem is not None:
        body["reason"] = problem
    return JSONResponse(body, status_code=200 if problem is None else 503)


async def metrics(request: Request) -> Response:
    running = getattr(request.app.state, "runtime", None)
    if running is not None and running.role is runtime.Role.API:  # with the delivery process's
        body = await asyncio.to_thread(metrics_export.served, running.settings.data_dir)
        return Response(body, media_type=CONTENT_TYPE_LATEST)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


HEALTH = {
    "type": "object",
    "properties": {"status": {"type": "string", "enum": ["ok", "degraded"]}, "version": {"type": "string"}},
}


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(
        title="leadstream",
        version=leadstream.__version__,
        description="Data Streams: a durable event log pushed to subscriber endpoints, and a journal to pull it.",
        lifespan=lifespan,
        exception_handlers=HANDLERS,  # type: ignore[arg-type]
        docs_url=None,  # served by docs.add_docs, from packaged assets (no CDN)
        redoc_url=None,
    )
    docs.add_docs(app)
    app.state.settings = settings or Settings()
    app.router.routes.append(Route("/v1/streams/{stream}/events", ingest, methods=["POST"]))
    app.router.routes.append(Route("/healthz", healthz, methods=["GET"]))
    app.router.routes.append(Route("/metrics", metrics, methods=["GET"]))
    app.include_router(catalog_routes.router)
    app.include_router(key_routes.router)  # public signing keys, no auth
    app.include_router(subscription_routes.router)  # /v1/subscriptions admin API
    app.include_router(source_routes.router)  # /v1/sources admin API
    app.include_router(journal_routes.router)  # journal (pull) and sample events
    app.include_router(admin_keys.router)  # /v1/keys (tenant API keys)
    app.include_router(audit_routes.router)  # /v1/audit
    app.include_router(alert_routes.router)  # /v1/alerts (operator alerts)
    app.state.console_sampler = Sampler(interval=app.state.settings.console_sample_interval)
    app.mount(
        "/ui",
        console_app(
            lambda: getattr(app.state, "runtime", None),
            app.state.console_sampler,
            session_idle=app.state.settings.console_session_idle,
            session_cache=app.state.settings.console_session_cache,
        ),
    )
    app.add_middleware(IngestGuard)  # ingest scope and per-key rate limit

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schema["paths"]["/v1/streams/{stream}/events"] = copy.deepcopy(OPENAPI_PATH)
            ingest_operation = schema["paths"]["/v1/streams/{stream}/events"]["post"]
            ingest_operation["requestBody"] = openapi_doc.ingest_body()
            ingest_operation["responses"]["200"]["content"]["application/json"]["example"] = {
                "accepted": 1, "duplicates": 0, "rejected": []
            }  # fmt: skip
            ingest_operation["responses"]["422"]["content"]["application/json"]["example"] = {
                "accepted": 0, "duplicates": 0,
                "rejected": [{"index": 0, "errors": ["leadId: expected an integer, got 'x'"]}],
            }  # fmt: skip
            ingest_operation["responses"].setdefault("429", {})
            schema.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            schema["security"] = [{"bearer": []}]
            schema["paths"]["/healthz"] = {
                "get": {
                    "summary": "Liveness and store health (no auth)",
                    "operationId": "healthz",
                    "security": [],
                    "responses": {
                        "200": openapi_doc.ok(HEALTH, {"status": "ok", "version": leadstream.__version__}),
                        "503": openapi_doc.ok(
                            HEALTH,
                            {"status": "degraded", "version": leadstream.__version__},
                            "degraded: the store cannot be reached",
                        ),
                    },
                }
            }
            schema["paths"]["/metrics"] = {
                "get": {
                    "summary": "Prometheus metrics (no auth)",
                    "operationId": "metrics",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "Prometheus text exposition format",
                            "content": {
                                "text/plain": {
                                    "schema": {"type": "string"},
                                    "example": "leadstream_ingest_records_total 1200.0\n",
                                }
                            },
                        }
                    },
                }
            }
            app.openapi_schema = openapi_doc.finish(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
