"""``GET /v1/audit``: the audit trail of admin actions (``security.audit``), and the helper routes
call to record one."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import msgspec
from fastapi import APIRouter, Depends, Query

from leadstream.api import openapi
from leadstream.api.auth import require_key
from leadstream.api.deps import Services
from leadstream.errors import NotFound
from leadstream.logs import log
from leadstream.runtime import Runtime
from leadstream.security.principals import Principal


async def audit(
    services: Runtime, principal: Principal, action: str, target: str, changes: Any = None,
    munchkin_ids: list[str] | None = None,
) -> None:  # fmt: skip
    """Record an admin action from a route: ``await audit(services, principal, "subscription.pause", sub_id,
    munchkin_ids=[sub.munchkin_id])``. ``changes`` is redacted there; pass the request body as is."""
    await services.audit.record(principal.key_id, action, target, changes, munchkin_ids)
    log.info("admin action", action=action, target=target, actor=principal.key_id)  # what changed: GET /v1/audit


router = APIRouter(prefix="/v1/audit", tags=["audit"])


AUDIT_ENTRY = {
    "type": "object",
    "properties": {
        "time": {"type": "string", "format": "date-time"},
        "actor": {"type": "string", "description": "the key id: operator, or a tenant key's id"},
        "action": {"type": "string", "example": "subscription.pause"},
        "target": {"type": "string"},
        "munchkinIds": {"type": "array", "items": {"type": "string"}},
        "changes": {"description": "the request body, secrets redacted"},
        "seq": {"type": "integer"},
    },
}


@router.get(
    "",
    summary="The audit trail of admin actions, newest first",
    responses={
        200: openapi.ok(
            openapi.list_of("entries", AUDIT_ENTRY),
            {
                "entries": [
                    {
                        "time": "2026-11-28T10:00:00.000Z",
                        "actor": "operator",
                        "action": "subscription.pause",
                        "target": "6f1c…",
                        "munchkinIds": ["123-ABC-456"],
                        "changes": None,
                        "seq": 42,
                    }
                ],
                "next": "/v1/audit?limit=100&before=42",
            },
        )
    },
)
async def list_audit(
    services: Services,
    limit: int = Query(100, ge=1, le=1000),
    before: int | None = Query(
        None, ge=0, le=2**63 - 1, description="continue below this sequence number (the previous page's next)"
    ),
    munchkinId: str | None = Query(None, description="only entries about this tenant"),
    action: str | None = Query(None, description='an action ("subscription.pause") or a family ("subscription")'),
    principal: Principal = Depends(require_key),
) -> dict[str, Any]:
    if munchkinId is not None and not principal.sees(munchkinId):
        raise NotFound(f"no tenant {munchkinId}")
    found, next_before = await services.audit.entries(
        limit=limit, before=before, tenants=principal.munchkin_ids, munchkin_id=munchkinId, action=action
    )
    following = None
    if next_before is not None:
        query = {"limit": limit, "before": next_before, "munchkinId": munchkinId, "action": action}
        following = "/v1/audit?" + urlencode({k: v for k, v in query.items() if v is not None})
    return {"entries": msgspec.to_builtins(found), "next": following}
