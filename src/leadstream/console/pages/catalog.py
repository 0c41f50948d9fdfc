"""The catalog per tenant: the event types of each stream, with a tenant's own activity types."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from leadstream.console.pages.deps import query, render, runtime_of, viewer
from leadstream.errors import NotFound
from leadstream.events import STREAMS
from leadstream.tenants import check_munchkin_id


async def catalog_page(request: Request) -> Response:
    principal = viewer(request)
    stream = query(request, "stream") or "activity"
    if stream not in STREAMS:
        raise NotFound(f"There is no stream {stream!r}; the streams are {', '.join(STREAMS)}.")
    tenant = query(request, "tenant")
    if not tenant and principal.munchkin_ids is not None and len(principal.munchkin_ids) == 1:
        tenant = next(iter(principal.munchkin_ids))
    if tenant:
        check_munchkin_id(tenant)
        if not principal.sees(tenant):
            raise NotFound(f"no tenant {tenant}")
    types = runtime_of(request).catalog.describe(stream, tenant or None)
    values = {
        "title": "Catalog",
        "active": "catalog",
        "stream": stream,
        "streams": STREAMS,
        "tenant": tenant,
        "tenants": sorted(principal.munchkin_ids) if principal.munchkin_ids is not None else None,
        "types": types,
        "custom": sum(1 for t in types if t.get("custom")),
    }
    return render(request, "pages/catalog.html", values)


def routes() -> list[BaseRoute]:
    return [Route("/catalog", catalog_page, methods=["GET"])]
