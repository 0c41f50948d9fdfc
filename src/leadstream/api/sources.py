"""The source admin API (SPEC §10): create, list, get with status, patch, delete, pause, resume.

Bodies are checked in ``leadstream.sources.config`` (errors name the field); the routes only say
who may see what and hand over to the sources service.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import msgspec
import orjson
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from leadstream.api import openapi
from leadstream.api.audit import audit
from leadstream.api.auth import require_key
from leadstream.api.deps import Services
from leadstream.api.subscriptions import _inline
from leadstream.errors import NotFound
from leadstream.security.principals import Principal
from leadstream.sources.config import MarketoSourceConfig
from leadstream.subscriptions.validation import decode_body

router = APIRouter(prefix="/v1/sources", tags=["sources"])

_config_schema = msgspec.json.schema(MarketoSourceConfig)
SOURCE_SCHEMA = _inline(_config_schema, _config_schema.get("$defs", {}))
# Rules checked in sources.config beyond the struct's types, said in the schema too
SOURCE_SCHEMA["properties"]["munchkinId"]["pattern"] = openapi.MUNCHKIN_PATTERN
SOURCE_SCHEMA["properties"]["quotaShare"].update(exclusiveMinimum=0, maximum=1)
SOURCE_SCHEMA["properties"]["restUrl"]["pattern"] = openapi.URL_PATTERN
SOURCE_SCHEMA["properties"]["identityUrl"]["anyOf"][0]["pattern"] = openapi.URL_PATTERN
EXAMPLE = {
    "type": "marketo",
    "name": "acme-prod",
    "munchkinId": "123-ABC-456",
    "restUrl": "https://123-ABC-456.mktorest.com",
    "clientId": "0f3c…",
    "clientSecret": "…",
    "activityTypes": ["*"],
    "quotaShare": 0.5,
}
SOURCE_VIEW = openapi.ok(
    openapi.with_properties(
        SOURCE_SCHEMA,
        {
            "id": {"type": "string"}, "createdAt": {"type": "string", "format": "date-time"},
            "state": {
                "type": "string", "enum": ["running", "throttled", "quota_exhausted", "failing", "paused", "deleted"],
                "description": "deleted: in the answer to DELETE only",
            },
            "published": {"type": "integer"}, "duplicates": {"type": "integer"}, "rejected": {"type": "integer"},
            "callsToday": {"type": "integer"}, "callBudget": {"type": "integer"},
            "quotaResetsAt": {"type": "string", "format": "date-time"}, "lagSeconds": {"type": "number"},
            "lastPollAt": {"type": ["string", "null"], "format": "date-time"},
            "lastError": {"type": ["string", "null"], "description": "Marketo's code and message"},
            "groups": {"type": "array", "items": {
                "type": "object",
                "description": "the activity types polled together, with their own checkpoint",
                "properties": {
                    "key": {"type": "string"},
                    "activityTypeIds": {"type": "array", "items": {"type": "integer"}},
                    "checkpointAt": {"type": ["string", "null"]},
                    "plannedPollIntervalMs": {"type": ["integer", "null"]},
                    "lastPollAt": {"type": ["string", "null"], "format": "date-time"},
                },
            }},
        },
    ),
    {"id": "c2d1…", **EXAMPLE, "clientSecret": "***", "state": "running", "published": 1200, "callsToday": 40},
    "The source and its status",
)  # fmt: skip
STATUS_FIELDS = (
    "id, createdAt, state (running|throttled|quota_exhausted|failing|paused), published, duplicates, rejected, "
    "callsToday, callBudget, quotaResetsAt, lastPollAt, lagSeconds, lastError (Marketo's code and message), and "
    "groups [{activityTypeIds, checkpointAt, plannedPollIntervalMs, lastPollAt}]"
)


def _json(document: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(document), status_code=status, media_type="application/json")


@router.post(
    "",
    status_code=201,
    summary="Create a source",
    description='The client secret is sealed at rest and answered as "***". restUrl must be https unless the '
    f"server allows private endpoints. The answer is the source with its status: {STATUS_FIELDS}.",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": SOURCE_SCHEMA, "example": EXAMPLE}},
        }
    },
    responses={201: SOURCE_VIEW},
)
async def create_source(request: Request, services: Services, principal: Principal = Depends(require_key)) -> Response:
    document = decode_body(await request.body())
    munchkin = document.get("munchkinId")
    if isinstance(munchkin, str) and not principal.sees(munchkin):
        raise NotFound(f"no tenant {munchkin}")
    view = await services.sources.create(document)
    await audit(services, principal, "source.create", view["id"], document, [view["munchkinId"]])
    return _json(view, 201)


@router.get(
    "",
    summary="List sources, with status",
    responses={
        200: openapi.ok(
            openapi.list_of("sources", SOURCE_VIEW["content"]["application/json"]["schema"]),
            {"sources": [SOURCE_VIEW["content"]["application/json"]["example"]]},
        )
    },
)
async def list_sources(
    services: Services,
    munchkinId: str | None = Query(None, description="only this tenant's sources"),
    limit: int = Query(100, ge=1, le=1000, description="at most this many per page"),
    after: str | None = Query(None, description="the page after this source id (see `next`)"),
    principal: Principal = Depends(require_key),
) -> Response:
    views, more = await services.sources.views(munchkinId, principal.sees, after=after, limit=limit)
    body: dict[str, Any] = {"sources": views}
    if more:
        query = {"limit": limit, "after": views[-1]["id"], **({"munchkinId": munchkinId} if munchkinId else {})}
        body["next"] = f"/v1/sources?{urlencode(query)}"
    return _json(body)


@router.get("/{source_id}", summary="A source and its status", description=STATUS_FIELDS, responses={200: SOURCE_VIEW})
async def get_source(services: Services, source_id: str, principal: Principal = Depends(require_key)) -> Response:
    return _json(await services.sources.view(source_id, principal.sees))


@router.patch(
    "/{source_id}",
    summary="Change a source's settings",
    description='Fields given replace the stored ones (type, munchkinId and startAt cannot change). "***" for the '
    "client secret keeps it. The source restarts from its checkpoints.",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": openapi.with_properties(SOURCE_SCHEMA, {}),
                    "example": {"quotaShare": 0.3},
                }
            },
        }
    },
    responses={200: SOURCE_VIEW},
)
async def patch_source(
    request: Request, services: Services, source_id: str, principal: Principal = Depends(require_key)
) -> Response:
    await services.sources.get(source_id, principal.sees)
    document = decode_body(await request.body())
    view = await services.sources.patch(source_id, document, principal.sees)
    await audit(services, principal, "source.update", source_id, document, [view["munchkinId"]])
    return _json(view)


@router.delete(
    "/{source_id}",
    summary="Delete a source: it stops for good (what it published stays in the log)",
    responses={200: SOURCE_VIEW},
)
async def delete_source(services: Services, source_id: str, principal: Principal = Depends(require_key)) -> Response:
    return await _act(services, principal, source_id, "delete")


@router.post(
    "/{source_id}/pause",
    summary="Pause a source: no more calls to the instance until resumed",
    responses={200: SOURCE_VIEW},
)
async def pause_source(services: Services, source_id: str, principal: Principal = Depends(require_key)) -> Response:
    return await _act(services, principal, source_id, "pause")


@router.post("/{source_id}/resume", summary="Resume a source from its checkpoints", responses={200: SOURCE_VIEW})
async def resume_source(services: Services, source_id: str, principal: Principal = Depends(require_key)) -> Response:
    return await _act(services, principal, source_id, "resume")


async def _act(services: Services, principal: Principal, source_id: str, action: str) -> Response:
    view = await getattr(services.sources, action)(source_id, principal.sees)
    await audit(services, principal, f"source.{action}", source_id, None, [view["munchkinId"]])
    return _json(view)
