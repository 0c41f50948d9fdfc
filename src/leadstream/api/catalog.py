"""GET /v1/catalog/{stream}; per-tenant activity types (Get Activity Types responses, custom types)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Body, Depends, Query, Request

from leadstream.api.auth import Principal, require_key
from leadstream.errors import Invalid, NotFound
from leadstream.events import MUNCHKIN_RE, STREAMS
from leadstream.samples import sampling

router = APIRouter(prefix="/v1/catalog", tags=["catalog"])
CATALOG_SETTING = "catalog.tenants"


def _munchkin(munchkin_id: str) -> str:
    if not MUNCHKIN_RE.fullmatch(munchkin_id):
        raise Invalid(f"munchkinId: {munchkin_id!r} is not a Munchkin ID (123-ABC-456)")
    return munchkin_id


@router.get("/{stream}", summary="The event types of a stream")
async def get_catalog(
    request: Request,
    stream: str,
    munchkinId: str | None = Query(None, description="include this tenant's own activity types"),
    principal: Principal = Depends(require_key),
) -> dict[str, Any]:
    if stream not in STREAMS:
        raise NotFound(f"there is no stream {stream!r}; streams: {', '.join(STREAMS)}")
    if munchkinId is not None and not principal.sees(_munchkin(munchkinId)):
        raise NotFound(f"no tenant {munchkinId}")
    return {"stream": stream, "types": request.app.state.services.catalog.describe(stream, munchkinId),
            "samples": sampling(stream)}


async def _load(request: Request, munchkin_id: str, document: Any, custom_only: bool) -> dict[str, Any]:
    services = request.app.state.services
    loaded = services.catalog.load_activity_types(_munchkin(munchkin_id), document, custom_only=custom_only)
    await services.store.put_setting(CATALOG_SETTING, orjson.dumps(services.catalog.tenant_documents))
    return {"munchkinId": munchkin_id, "loaded": loaded}


@router.put("/activity/{munchkinId}", summary="Load a tenant's Get Activity Types response (adds or overrides types)")
async def load_activity_types(
    request: Request,
    munchkinId: str,
    document: dict[str, Any] = Body(..., examples=[{"result": [{"id": 100001, "name": "Attend Webinar", "attributes": []}]}]),
    principal: Principal = Depends(require_key),
) -> dict[str, Any]:
    if not principal.sees(munchkinId):
        raise NotFound(f"no tenant {munchkinId}")
    return await _load(request, munchkinId, document, custom_only=False)


@router.post("/activity/{munchkinId}/custom", summary="Register custom activity types (ids >= 100000)")
async def register_custom_types(
    request: Request,
    munchkinId: str,
    document: dict[str, Any] = Body(...),
    principal: Principal = Depends(require_key),
) -> dict[str, Any]:
    if not principal.sees(munchkinId):
        raise NotFound(f"no tenant {munchkinId}")
    return await _load(request, munchkinId, document, custom_only=True)


async def restore(services: Any) -> None:
    """Replay the tenants' catalog documents stored by earlier runs."""
    stored = await services.store.get_setting(CATALOG_SETTING)
    for munchkin_id, entries in (orjson.loads(stored) if stored else {}).items():
        services.catalog.load_activity_types(munchkin_id, {"result": entries})
