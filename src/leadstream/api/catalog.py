"""GET /v1/catalog/{stream}; per-tenant activity types (Get Activity Types responses, custom types)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Path, Query

from leadstream.api import openapi
from leadstream.api.auth import require_key
from leadstream.api.deps import Services
from leadstream.catalog import persistence
from leadstream.catalog.model import CUSTOM_ACTIVITY_MIN_ID
from leadstream.errors import NotFound
from leadstream.events import STREAMS
from leadstream.samples import sampling
from leadstream.security.principals import Principal
from leadstream.tenants import check_munchkin_id

router = APIRouter(prefix="/v1/catalog", tags=["catalog"])


CATALOG = openapi.ok(
    {
        "type": "object",
        "properties": {
            "stream": {"type": "string", "enum": ["activity", "audit", "notification"]},
            "types": {"type": "array", "items": {"type": "object", "description": "one event type"}},
            "samples": {"type": "object", "description": "how sample events of this stream are made"},
        },
    },
    {"stream": "activity", "types": [{"id": 7, "name": "Open Email", "type": "standard"}], "samples": {}},
)
_ATTRIBUTE = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string", "pattern": r"\S"}, "dataType": {"type": ["string", "null"]}},
}


def activity_types(lowest_id: int) -> dict[str, Any]:
    """The body of a catalog load: types with ids from ``lowest_id`` (custom types start at 100000)."""
    return openapi.body(
        {
            "type": "object",
            "required": ["result"],
            "description": "a Get Activity Types response (GET /rest/v1/activities/types.json)",
            "properties": {
                "result": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["id", "name"],
                        "properties": {
                            "id": {"type": "integer", "minimum": lowest_id, "maximum": 2**63 - 1},
                            "name": {"type": "string", "pattern": r"\S", "description": "not blank"},
                            "description": {"description": "a string; anything else is ignored"},
                            "primaryAttribute": {"anyOf": [_ATTRIBUTE, {"type": "null"}]},
                            "attributes": {"type": ["array", "null"], "items": _ATTRIBUTE},
                        },
                    },
                }
            },
        },
        {
            "result": [
                {"id": 100001, "name": "Attend Webinar", "attributes": [{"name": "Webinar", "dataType": "string"}]}
            ]
        },
    )


LOADED = openapi.ok(
    {"type": "object", "properties": {"munchkinId": {"type": "string"}, "loaded": {"type": "integer"}}},
    {"munchkinId": "123-ABC-456", "loaded": 12},
    "How many types were loaded",
)


@router.get("/{stream}", summary="The event types of a stream", responses={200: CATALOG})
async def get_catalog(
    services: Services,
    stream: str,
    munchkinId: str | None = Query(None, description="include this tenant's own activity types"),
    principal: Principal = Depends(require_key),
) -> dict[str, Any]:
    if stream not in STREAMS:
        raise NotFound(f"there is no stream {stream!r}; streams: {', '.join(STREAMS)}")
    if munchkinId is not None and not principal.sees(check_munchkin_id(munchkinId)):
        raise NotFound(f"no tenant {munchkinId}")
    if munchkinId is not None:
        await services.reload_catalog()  # the tenant's types as loaded on any node (SPEC §12)
    return {"stream": stream, "types": services.catalog.describe(stream, munchkinId), "samples": sampling(stream)}


async def _load(services: Services, munchkin_id: str, document: Any, custom_only: bool) -> dict[str, Any]:
    munchkin_id = check_munchkin_id(munchkin_id)
    loaded = await persistence.load_activity_types(
        services.catalog, services.store, munchkin_id, document, custom_only=custom_only
    )
    return {"munchkinId": munchkin_id, "loaded": loaded}


@router.put(
    "/activity/{munchkinId}",
    summary="Load a tenant's Get Activity Types response (adds or overrides types)",
    responses={200: LOADED},
    openapi_extra=activity_types(1),
)
async def load_activity_types(
    services: Services,
    munchkinId: str = Path(json_schema_extra={"pattern": openapi.MUNCHKIN_PATTERN}),  # checked in _load
    document: dict[str, Any] = Body(
        ..., examples=[{"result": [{"id": 100001, "name": "Attend Webinar", "attributes": []}]}]
    ),
    principal: Principal = Depends(require_key),
) -> dict[str, Any]:
    if not principal.sees(munchkinId):
        raise NotFound(f"no tenant {munchkinId}")
    return await _load(services, munchkinId, document, custom_only=False)


@router.post(
    "/activity/{munchkinId}/custom",
    summary="Register custom activity types (ids >= 100000)",
    responses={200: LOADED},
    openapi_extra=activity_types(CUSTOM_ACTIVITY_MIN_ID),
)
async def register_custom_types(
    services: Services,
    munchkinId: str = Path(json_schema_extra={"pattern": openapi.MUNCHKIN_PATTERN}),  # checked in _load
    document: dict[str, Any] = Body(
        ..., examples=[{"result": [{"id": 100001, "name": "Attend Webinar", "attributes": []}]}]
    ),
    principal: Principal = Depends(require_key),
) -> dict[str, Any]:
    if not principal.sees(munchkinId):
        raise NotFound(f"no tenant {munchkinId}")
    return await _load(services, munchkinId, document, custom_only=True)
