"""The subscription admin API (SPEC §3): create, list, get with live status, patch, deprovision,
pause, resume, replay, and the delivery-attempt log.

Bodies are decoded and checked by msgspec in ``leadstream.subscriptions`` (errors name the
field); the routes only say who may see what and hand over to the subscriptions service.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import msgspec
import orjson
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from leadstream.api.audit import audit
from leadstream.api.auth import require_key
from leadstream.api.deps import Services
from leadstream.errors import Invalid, NotFound
from leadstream.security.principals import Principal
from leadstream.subscriptions.config import SubscriptionConfig
from leadstream.subscriptions.validation import decode_body

router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"])


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    """msgspec's JSON schema with every ``$ref`` replaced by its definition (OpenAPI resolves
    refs against the whole document, not the schema)."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _inline(defs[schema["$ref"].rsplit("/", 1)[1]], defs)
        return {k: _inline(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inline(v, defs) for v in schema]
    return schema


_config_schema = msgspec.json.schema(SubscriptionConfig)
SUBSCRIPTION_SCHEMA = _inline(_config_schema, _config_schema.get("$defs", {}))
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


def _body(schema: dict[str, Any], example: Any, description: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": schema, "example": example}},
        }
    }


def _json(document: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(document), status_code=status, media_type="application/json")


@router.post(
    "",
    status_code=201,
    summary="Create a subscription",
    description="Every field but name, munchkinId, stream and endpoint has the platform's default. Secrets are "
    'stored and answered as "***". cloudevents and adobe_io endpoints must pass the challenge first. '
    f"The answer is the subscription with its live status: {STATUS_FIELDS}.",
    openapi_extra=_body(SUBSCRIPTION_SCHEMA, EXAMPLE, "The subscription (SPEC §3)"),
    responses={201: {"description": "Created"}, 422: {"description": "A field is not valid (problem+json naming it)"}},
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


@router.get("", summary="List subscriptions, with live status")
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


@router.get("/{sub_id}", summary="A subscription and its live status", description=STATUS_FIELDS)
async def get_subscription(services: Services, sub_id: str, principal: Principal = Depends(require_key)) -> Response:
    return _json(await services.subscriptions.view(sub_id, principal.sees))


@router.patch(
    "/{sub_id}",
    summary="Change a subscription's settings",
    description="Fields given replace the stored ones (munchkinId and stream cannot change; startAt applies at "
    'creation only). Secrets sent back as "***" are kept. The batch in flight keeps its id.',
    openapi_extra=_body(
        {"type": "object", "description": "any fields of the subscription"}, {"batchSize": 200}, "Fields to change"
    ),
)
async def patch_subscription(
    request: Request, services: Services, sub_id: str, principal: Principal = Depends(require_key)
) -> Response:
    await services.subscriptions.get(sub_id, principal.sees)
    document = decode_body(await request.body())
    view = await services.subscriptions.patch(sub_id, document, principal.sees)
    await audit(services, principal, "subscription.update", sub_id, document, [view["munchkinId"]])
    return _json(view)


@router.delete("/{sub_id}", summary="Deprovision: delivery stops for good (state deprovisioned)")
async def delete_subscription(services: Services, sub_id: str, principal: Principal = Depends(require_key)) -> Response:
    return await _act(services, principal, sub_id, "delete")


@router.post("/{sub_id}/pause", summary="Pause delivery by hand (no probes) until resumed")
async def pause_subscription(services: Services, sub_id: str, principal: Principal = Depends(require_key)) -> Response:
    return await _act(services, principal, sub_id, "pause")


@router.post("/{sub_id}/resume", summary="Resume delivery now (also ends a pause after failures)")
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
    openapi_extra=_body(
        {
            "type": "object",
            "required": ["from"],
            "properties": {
                "from": {
                    "oneOf": [
                        {"type": "string", "format": "date-time"},
                        {"type": "string", "description": "a position token (journal, status cursor, attempts)"},
                        {"type": "integer", "minimum": 0, "deprecated": True},
                    ]
                }
            },
        },
        {"from": "2026-11-28T10:00:00Z"},
        "Where to start again",
    ),
    responses={410: {"description": "The position has expired"}},
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
        "firstPosition": {"type": "integer"},
        "lastPosition": {"type": "integer"},
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
                "schema": {"type": "object", "properties": {"attempts": {"type": "array", "items": ATTEMPT_SCHEMA}}}
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


@router.get("/{sub_id}/dead-letters", summary="Events the endpoint refused for good (413 on a single event)")
async def list_dead_letters(
    services: Services,
    sub_id: str,
    limit: int = Query(100, ge=1, le=1000),
    principal: Principal = Depends(require_key),
) -> Response:
    return _json({"deadLetters": await services.subscriptions.dead_letters(sub_id, limit, principal.sees)})
