"""``/v1/alerts``: the operator's alert endpoints (SPEC §11), and the recent alerts. Operator key only."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from leadstream.alerts.model import EVENT_TYPES
from leadstream.api import openapi
from leadstream.api.audit import audit
from leadstream.api.auth import require_operator
from leadstream.api.deps import Services
from leadstream.security.principals import Principal
from leadstream.subscriptions.validation import decode_body

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])

ALERT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["endpoint"],
    "additionalProperties": False,
    "properties": {
        "endpoint": {
            "type": "string",
            "pattern": openapi.URL_PATTERN,
            "description": "where the alerts are POSTed (http or https)",
        },
        "events": {
            "type": "array",
            "minItems": 1,
            "items": {"enum": ["*", *EVENT_TYPES]},
            "default": ["*"],
            "description": "the alert types this endpoint wants",
        },
        "signing": {
            "type": "object",
            "description": 'Standard Webhooks HMAC: {"hmacSecret": "whsec_…"}, or {"hmac": true} (the default) to '
            "have a secret generated and shown once, in the answer",
            "properties": {"hmacSecret": {"type": "string"}, "hmac": {"type": "boolean"}},
            "additionalProperties": False,
        },
        "name": {"type": "string", "maxLength": 200},
    },
}
openapi.signing_rules(ALERT_SCHEMA["properties"]["signing"])

ALERT_VIEW_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "endpoint": {"type": "string"},
        "events": {"type": "array", "items": {"type": "string"}},
        "signing": {"type": "object", "properties": {"hmacSecret": {"type": "string", "description": '"***"'}}},
        "createdAt": {"type": "string", "format": "date-time"},
        "name": {"type": "string"},
    },
}
ALERT_VIEW_EXAMPLE = {
    "id": "a1b2c3", "endpoint": "https://ops.example.com/hook", "events": ["*"], "signing": {"hmacSecret": "***"},
    "createdAt": "2026-11-28T10:00:00.000Z", "name": "on-call",
}  # fmt: skip
ALERT_VIEW = openapi.ok(ALERT_VIEW_SCHEMA, ALERT_VIEW_EXAMPLE, "The alert endpoint")
RECENT_SCHEMA = openapi.list_of(
    "alerts",
    {
        "type": "object",
        "description": "the alert's CloudEvent, and how its sending goes to each endpoint",
        "properties": {
            "id": {"type": "string"},
            "type": {"type": "string", "enum": list(EVENT_TYPES)},
            "time": {"type": "string", "format": "date-time"},
            "data": {"type": "object"},
            "deliveries": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "alert": {"type": "string"},
                        "state": {"type": "string", "enum": ["pending", "sent", "failed"]},
                        "attempts": {"type": "integer"},
                        "lastError": {"type": ["string", "null"]},
                        "nextAttemptAt": {"type": ["string", "null"], "format": "date-time"},
                    },
                },
            },
        },
    },
    paged=False,
)
RECENT_EXAMPLE = {
    "alerts": [
        {"id": "e1", "type": EVENT_TYPES[0], "time": "2026-11-28T10:00:00.000Z", "data": {},
         "deliveries": [{"alert": "a1b2c3", "state": "sent", "attempts": 1, "lastError": None, "nextAttemptAt": None}]}
    ]
}  # fmt: skip


@router.post(
    "",
    status_code=201,
    summary="Register an alert endpoint",
    description="Each alert is one POST of a CloudEvent (application/cloudevents+json) signed with Standard "
    f"Webhooks HMAC (webhook-id, webhook-timestamp, webhook-signature), retried with backoff. Types: "
    f"{', '.join(EVENT_TYPES)}.",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": ALERT_SCHEMA,
                    "example": {"endpoint": "https://ops.example.com/hook", "events": ["*"], "signing": {"hmac": True}},
                }
            },
        }
    },
    responses={
        201: openapi.ok(
            ALERT_VIEW_SCHEMA,
            {**ALERT_VIEW_EXAMPLE, "signing": {"hmacSecret": "whsec_…"}},
            'The endpoint; its secret is "***" unless it was generated just now',
        )
    },
)
async def create_alert(
    request: Request, services: Services, principal: Principal = Depends(require_operator)
) -> JSONResponse:
    document = decode_body(await request.body())
    view = await services.alerts.create(document)
    await audit(services, principal, "alert.create", view["id"], document)
    return JSONResponse(view, status_code=201, headers={"Cache-Control": "no-store"})


@router.get(
    "",
    summary="The alert endpoints (secrets shown as ***)",
    responses={
        200: openapi.ok(openapi.list_of("alerts", ALERT_VIEW_SCHEMA, paged=False), {"alerts": [ALERT_VIEW_EXAMPLE]})
    },
)
async def list_alerts(services: Services, principal: Principal = Depends(require_operator)) -> dict[str, Any]:
    return {"alerts": [alert.view() for alert in await services.alerts.all()]}


@router.get(
    "/recent",
    summary="The recent alerts, newest first, and how their sending goes",
    description="Each CloudEvent once, with `deliveries`: per endpoint, state (pending | sent | failed), "
    "attempts, lastError and nextAttemptAt. An alert no endpoint wanted has none.",
    responses={200: openapi.ok(RECENT_SCHEMA, RECENT_EXAMPLE)},
)
async def recent_alerts(
    services: Services, limit: int = Query(50, ge=1, le=500), principal: Principal = Depends(require_operator)
) -> dict[str, Any]:
    return {"alerts": await services.alerts.recent(limit)}


@router.get("/{alert_id}", summary="One alert endpoint", responses={200: ALERT_VIEW})
async def get_alert(services: Services, alert_id: str, principal: Principal = Depends(require_operator)) -> Any:
    return (await services.alerts.get(alert_id)).view()


@router.delete(
    "/{alert_id}",
    summary="Delete an alert endpoint (what is still pending for it is dropped)",
    responses={200: ALERT_VIEW},
)
async def delete_alert(services: Services, alert_id: str, principal: Principal = Depends(require_operator)) -> Any:
    view = await services.alerts.delete(alert_id)
    await audit(services, principal, "alert.delete", alert_id)
    return view
