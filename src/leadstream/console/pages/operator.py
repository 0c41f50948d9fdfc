"""For the operator only: the tenant API keys (never the keys themselves) and the audit trail."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from leadstream.console.forms import form_of
from leadstream.console.pages.deps import audit, query, redirect, render, runtime_of, viewer
from leadstream.security.principals import Forbidden, Principal

AUDIT_PAGE = 100


def operator(request: Request, what: str) -> Principal:
    principal = viewer(request)
    if not principal.is_operator:
        raise Forbidden(f"Only the operator key may see {what}.")
    return principal


async def keys_page(request: Request) -> Response:
    operator(request, "API keys")
    keys = [k.public() for k in await runtime_of(request).api_keys.listed(None, True)]
    revoked = query(request, "revoked")
    values = {"title": "API keys", "active": "keys", "keys": keys, "revoked": revoked}
    return render(request, "pages/keys.html", values)


async def revoke_key(request: Request) -> Response:
    """Revoke a tenant key, as ``DELETE /v1/keys/{id}``: its sessions here end at their next request."""
    principal = operator(request, "API keys")
    if (await form_of(request)).get("confirm") != "yes":
        return redirect(request, "/keys")
    record = await runtime_of(request).api_keys.revoke(request.path_params["id"])
    await audit(request, principal, "key.revoke", record.id, None, record.munchkinIds)
    return redirect(request, f"/keys?revoked={record.id}")


async def audit_page(request: Request) -> Response:
    operator(request, "the audit trail")
    before_text, action, tenant = query(request, "before"), query(request, "action"), query(request, "tenant")
    found, next_before = await runtime_of(request).audit.entries(
        limit=AUDIT_PAGE, before=int(before_text) if before_text.isdigit() else None, tenants=None,
        munchkin_id=tenant or None, action=action or None,
    )  # fmt: skip
    entries: list[dict[str, Any]] = msgspec.to_builtins(found)
    following = None
    if next_before is not None:
        following = f"/ui/audit?before={next_before}&action={action}&tenant={tenant}"
    fields = [
        {"name": "action", "label": "Action", "placeholder": "subscription.pause or subscription"},
        {"name": "tenant", "label": "Tenant", "placeholder": "123-ABC-456"},
    ]
    values = {"title": "Audit trail", "active": "audit", "entries": entries, "next": following, "fields": fields}
    return render(request, "pages/audit.html", values)


def routes() -> list[BaseRoute]:
    return [
        Route("/keys", keys_page, methods=["GET"]),
        Route("/keys/{id}/revoke", revoke_key, methods=["POST"]),
        Route("/audit", audit_page, methods=["GET"]),
    ]
