"""The subscription admin API (SPEC §3): create, list, get with live status, patch, deprovision,
pause, resume, replay, and the delivery-attempt log.

Bodies are decoded and checked by msgspec in ``leadstream.subscriptions`` (errors name the
field); the routes only say who may see what and hand over to the subscriptions service.
"""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from leadstream.api import openapi
from leadstream.api.audit import audit
from leadstream.api.auth import require_key
from leadstream.api.deps import Services
from leadstream.errors import Invalid, NotFound
from leadstream.security.principals import Principal
from leadstream.subscriptions.config import SubscriptionConfig
from leadstream.subscriptions.validation import decode_body

router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"])


_inline = openapi._inline  # the sources routes share it
SUBSCRIPTION_SCHEMA = openapi.struct_schema(SubscriptionConfig)
# Rules checked in subscriptions.validation, said in the schema too
SUBSCRIPTION_SCHEMA["properties"]["munchkinId"]["pattern"] = openapi.MUNCHKIN_PATTERN
SUBSCRIPTION_SCHEMA["properties"]["endpoint"]["pattern"] = openapi.URL_PATTERN
NEW_SUBSCRIPTION_SCHEMA = copy.deepcopy(SUBSCRIPTION_SCHEMA)  # a patch and a view may say "***" for the secret
openapi.signing_rules(NEW_SUBSCRIPTION_SCHEMA["properties"]["signing"]["anyOf"][0])
EXAMPLE = {
    "name": "crm-sync",
    "munchkinId": "123-ABC-456",
    "stream": "activity",
    "endpoint": "https://hooks.example.com/marketo",
    "eventTypes": [10, "Visit Webpage", 13],
    "auth": {"type": "token", "token": "s3cr3t"},
}
STATUS_FIELDS = (
    "id, createdAt, state (active|retrying|paused|deprovisioned), pausedReason (failures|manual), delivered, "
    "pending (exact for what the sender has read; estimated from its share of the log beyond that), expired, "
    "deadLettered, lagSeconds, cursor, consecutiveFailures, lastSuccessAt, lastAttemptAt, lastError, nextAttemptAt"
)
_TIME = {"type": ["string", "null"], "format": "date-time"}
_COUNT = {"type": "integer", "minimum": 0}
STATUS_PROPERTIES: dict[str, Any] = {
    "id": {"type": "string"},
    "createdAt": {"type": "string", "format": "date-time"},
    "state": {"type": "string", "enum": ["active", "retrying", "paused", "deprovisioned"]},
    "pausedReason": {"type": ["string", "null"], "enum": ["failures", "manual", None]},
    "delivered": _COUNT,
    "pending": {**_COUNT, "description": "matching events not delivered yet"},
    "expired": {**_COUNT, "description": "events that left retention before delivery"},
    "deadLettered": _COUNT,
    "lagSeconds": {"type": "number", "description": "age of the oldest pending event"},
    "cursor": {"type": "string", "description": "the position delivered up to (the journal's position format)"},
    "consecutiveFailures": _COUNT,
    "lastSuccessAt": _TIME,
    "lastAttemptAt": _TIME,
    "lastError": {"type": ["string", "null"]},
    "nextAttemptAt": _TIME,
}
VIEW_SCHEMA = openapi.with_properties(SUBSCRIPTION_SCHEMA, STATUS_PROPERTIES)
VIEW_EXAMPLE = {
    "id": "6f1c0d2e-5b7a-4d43-9c1e-2a8f6b3d9e10", **EXAMPLE, "auth": {"type": "token", "token": "***"},
    "customObjects": False, "format": "legacy", "delivery": "batch", "batchSize": 500, "maxBatchBytes": 2097152,
    "pushIntervalMs": 2000, "timeoutMs": 20000, "retryAttempts": 3, "retryIntervalMs": 180000,
    "probeIntervalMs": 180000, "startAt": "now", "challenge": False, "signing": None, "filter": None, "tls": None,
    "createdAt": "2026-11-28T10:00:00.000Z", "state": "active", "pausedReason": None, "delivered": 1200,
    "pending": 0, "expired": 0, "deadLettered": 0, "lagSeconds": 0.0, "cursor": "200000000000004b0",
    "consecutiveFailures": 0, "lastSuccessAt": "2026-11-28T10:05:00.000Z", "lastAttemptAt": "2026-11-28T10:05:00.000Z",
    "lastError": None, "nextAttemptAt": None,
}  # fmt: skip
VIEW = openapi.ok(VIEW_SCHEMA, VIEW_EXAMPLE, f"The subscription and its live status: {STATUS_FIELDS}")
ATTEMPT_EXAMPLE = {
    "time": "2026-11-28T10:05:00.000Z", "batchId": "0b6c…", "events": 200, "firstPosition": "200000000000003e9",
    "lastPosition": "200000000000004b0", "status": 200, "error": None, "durationMs": 12.4, "retryCount": 0,
    "outcome": "delivered",
}  # fmt: skip
DEAD_LETTER_SCHEMA = {
    "type": "object",
    "properties": {
        "position": {"type": "string"}, "eventid": {"type": "string"}, "type": {"type": "string"},
        "id": {"type": "string"}, "reason": {"type": "string"},
    },
}  # fmt: skip


def _json(document: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(document), status_code=status, media_type="application/json")


@router.post(
    "",
    status_code=201,
    summary="Create a subscription",
    description="Every field but name, munchkinId, stream and endpoint has the platform's default. Secrets are "
    'stored and answered as "***". cloudevents and adobe_io endpoints must pass the challenge first. '
    f"The answer is the subscription with its live status: {STATUS_FIELDS}.",
    openapi_extra=openapi.body(NEW_SUBSCRIPTION_SCHEMA, EXAMPLE, "The subscription"),
    responses={201: VIEW},
)
async def create_subscription(
    request: Request, services: Services, principal: Principal = Depends(require_key)
) -> Response:
    document = decode_body(await request.body())
    munchkin = document.get("munchkinId")
    if isinstance(munchkin, str) and not principal.sees(munchkin):
        raise NotFound(f"no tenant {munchkin}")
    view = await services.subscriptions.create(document)
    await audit(services, principal, "subscription.create", view["id"], document, [view["munchkinId"]])
    return _json(view, 201)


@router.get(
    "",
    summary="List subscriptions, with live status",
    responses={200: openapi.ok(openapi.list_of("subscriptions", VIEW_SCHEMA), {"subscriptions": [VIEW_EXAMPLE]})},
)
async def list_subscriptions(
    services: Services,
    munchkinId: str | None = Query(None, description="only this tenant's subscriptions"),
    limit: int = Query(100, ge=1, le=1000, description="at most this many per page"),
    after: str | None = Query(None, description="the page after this subscription id (see `next`)"),
    principal: Principal = Depends(require_key),
) -> Response:
    views, more = await services.subscriptions.views(munchkinId, principal.sees, after=after, limit=limit)
    body: dict[str, Any] = {"subscriptions": views}
    if more:
        query = {"limit": limit, "after": views[-1]["id"], **({"munchkinId": munchkinId} if munchkinId else {})}
        body["next"] = f"/v1/subscriptions?{urlencode(query)}"
    return _json(body)


@router.get("/{sub_id}", summary="A subscription and its live status", description=STATUS_FIELDS, responses={200: VIEW})
async def get_subscription(services: Services, sub_id: str, principal: Principal = Depends(require_key)) -> Response:
    return _json(await services.subscriptions.view(sub_id, principal.sees))


@router.patch(
    "/{sub_id}",
    summary="Change a subscription's settings",
    description="Fields given replace the stored ones (munchkinId and stream cannot change; startAt applies at "
    'creation only). Secrets sent back as "***" are kept. The batch in flight keeps its id.',
    openapi_extra=openapi.body(
        {**openapi.with_properties(SUBSCRIPTION_SCHEMA, {}), "description": "any fields of the subscription"},
        {"batchSize": 200},
        "Fields to change",
    ),
    responses={200: VIEW},
)
async def patch_subscription(
    request: Request, services: Services, sub_id: str, principal: Principal = Depends(require_key)
) -> Response:
    await services.subscriptions.get(sub_id, principal.sees)
    document = decode_body(await request.body())
    view = await services.subscriptions.patch(sub_id, document, principal.sees)
    await audit(services, principal, "subscription.update", sub_id, document, [view["munchkinId"]])
    return _json(view)


@router.delete("/{sub_id}", summary="Deprovision: delivery stops for good (state deprovisioned)", responses={200: VIEW})
async def delete_subscription(services: Services, sub_id: str, principal: Principal = Depends(require_key)) -> Response:
    return await _act(services, principal, sub_id, "delete")


@router.post("/{sub_id}/pause", summary="Pause delivery by hand (no probes) until resumed", responses={200: VIEW})
async def pause_subscription(services: Services, sub_id: str, principal: Principal = Depends(require_key)) -> Response:
    return await _act(services, principal, sub_id, "pause")


@router.post(
    "/{sub_id}/resume", summary="Resume delivery now (also ends a pause after failures)", responses={200: VIEW}
)
async def resume_subscription(services: Services, sub_id: str, principal: Principal = Depends(require_key)) -> Response:
    return await _act(services, principal, sub_id, "resume")


async def _act(services: Services, principal: Principal, sub_id: str, action: str) -> Response:
    """An admin action without a body (delete, pause, resume), recorded in the audit trail."""
    view = await getattr(services.subscriptions, action)(sub_id, principal.sees)
    await audit(services, principal, f"subscription.{action}", sub_id, None, [view["munchkinId"]])
    return _json(view)


@router.post(
    "/{sub_id}/replay",
    summary="Move the cursor back, to a time or a position",
    description="A time before the oldest retained event replays everything retained; a position older than "
    "the oldest retained one is 410 Gone. The batch in flight is dropped.",
    openapi_extra=openapi.body(
        {
            "type": "object",
            "required": ["from"],
            "properties": {
                "from": {
                    "oneOf": [
                        {"type": "string", "format": "date-time"},
                        {
                            "type": "string",
                            "pattern": "^(2[0-9a-f]{16}|1[A-Za-z0-9_-]{11})$",
                            "description": "a position token (journal, status cursor, attempts)",
                        },
                        {"type": "integer", "minimum": 0, "deprecated": True},
                    ]
                }
            },
        },
        {"from": "2026-11-28T10:00:00Z"},
        "Where to start again",
    ),
    responses={200: VIEW, 410: {"description": "The position has expired"}},
)
async def replay_subscription(
    request: Request, services: Services, sub_id: str, principal: Principal = Depends(require_key)
) -> Response:
    await services.subscriptions.get(sub_id, principal.sees)
    start = decode_body(await request.body()).get("from")
    if isinstance(start, bool) or not isinstance(start, int | str) or (isinstance(start, int) and start < 0):
        raise Invalid(f"from: expected an RFC 3339 time or a position token, got {start!r}", field="from")
    view = await services.subscriptions.replay(sub_id, start, principal.sees)
    await audit(services, principal, "subscription.replay", sub_id, {"from": start}, [view["munchkinId"]])
    return _json(view)


_headers_schema = {"type": "object", "additionalProperties": {"type": "string"}}
ATTEMPT_SCHEMA = {
    "type": "object",
    "properties": {
        "time": {"type": "string", "format": "date-time"},
        "batchId": {"type": "string"},
        "events": {"type": "integer"},
        "firstPosition": {"type": "string", "description": "a position, as the journal shows them"},
        "lastPosition": {"type": "string"},
        "status": {"type": ["integer", "null"], "description": "null: no HTTP answer (see error)"},
        "error": {"type": ["string", "null"]},
        "durationMs": {"type": "number"},
        "retryCount": {"type": "integer"},
        "outcome": {"enum": ["delivered", "failed", "too_large", "dead_lettered", "renewed_token"]},
        "note": {"type": "string"},
        "trace": {
            "type": "object",
            "description": "Debug tracing: what was sent and what came back (absent on entries older than it)",
            "properties": {
                "request": {
                    "type": "object",
                    "properties": {"headers": {**_headers_schema, "description": 'auth and signatures shown as "***"'}},
                },
                "response": {
                    "type": ["object", "null"],
                    "description": "null: no HTTP answer (connection refused, timeout, …)",
                    "properties": {
                        "status": {"type": "integer"},
                        "headers": _headers_schema,
                        "body": {"type": "string", "description": "the first 64 kB of the body, as UTF-8 text"},
                        "bodyTruncated": {"type": "boolean", "description": "the body went on past 64 kB"},
                    },
                },
            },
        },
    },
}
ATTEMPTS_RESPONSE = {
    200: {
        "description": "The attempts, newest first",
        "content": {
            "application/json": {
                "schema": {"type": "object", "properties": {"attempts": {"type": "array", "items": ATTEMPT_SCHEMA}}},
                "example": {"attempts": [ATTEMPT_EXAMPLE]},
            }
        },
    }
}


@router.get(
    "/{sub_id}/attempts",
    summary="The delivery-attempt log, newest first, with debug tracing",
    description="Each attempt: time, batchId, events, firstPosition, lastPosition, status (or null), error, "
    "durationMs, retryCount, outcome (delivered | failed | too_large | dead_lettered | renewed_token), and its "
    "trace: the request headers (auth and signatures masked), the response status, headers and first 64 kB "
    "of the body. The newest 1000 attempts of each subscription are kept.",
    responses=ATTEMPTS_RESPONSE,  # type: ignore[arg-type]
)
async def list_attempts(
    services: Services,
    sub_id: str,
    limit: int = Query(100, ge=1, le=1000),
    principal: Principal = Depends(require_key),
) -> Response:
    return Response(await services.subscriptions.attempts(sub_id, limit, principal.sees), media_type="application/json")


@router.get(
    "/{sub_id}/dead-letters",
    summary="Events the endpoint refused for good (413 on a single event)",
    responses={
        200: openapi.ok(
            openapi.list_of("deadLetters", DEAD_LETTER_SCHEMA, paged=False),
            {
                "deadLetters": [
                    {
                        "position": "200000000000004b0",
                        "eventid": "…",
                        "type": "Open Email",
                        "id": "3b2f…",
                        "reason": "413 even when sent alone",
                    }
                ]
            },
        )
    },
)
async def list_dead_letters(
    services: Services,
    sub_id: str,
    limit: int = Query(100, ge=1, le=1000),
    principal: Principal = Depends(require_key),
) -> Response:
    return _json({"deadLetters": await services.subscriptions.dead_letters(sub_id, limit, principal.sees)})
