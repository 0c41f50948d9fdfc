"""``/v1/keys``: tenant API keys, managed with the operator key (not ``/keys/{name}``: those are the
public signing keys)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from leadstream.api import openapi
from leadstream.api.audit import audit
from leadstream.api.auth import require_operator
from leadstream.api.deps import Services
from leadstream.errors import NotFound
from leadstream.security.principals import Principal

router = APIRouter(prefix="/v1/keys", tags=["api keys"])


class NewKeyBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "producer", "munchkinIds": ["123-ABC-456"], "scopes": ["ingest"]}]},
    )

    munchkinIds: list[str] = Field(
        min_length=1,
        description="the tenants the key may act for",
        json_schema_extra={"items": {"type": "string", "pattern": openapi.MUNCHKIN_PATTERN}},  # checked by the service
    )
    scopes: list[Literal["ingest", "subscriptions", "read"]] = Field(
        min_length=1,
        description="ingest: publish only; read: GET its tenants' things; subscriptions: read and change them",
    )
    name: str = Field("", max_length=200, description="a name for people")


KEY_RECORD = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "munchkinIds": {"type": "array", "items": {"type": "string"}},
        "scopes": {"type": "array", "items": {"type": "string", "enum": ["ingest", "subscriptions", "read"]}},
        "createdAt": {"type": "string", "format": "date-time"},
        "createdBy": {"type": "string"},
        "lastUsedAt": {"type": ["string", "null"], "format": "date-time"},
        "revokedAt": {"type": ["string", "null"], "format": "date-time"},
    },
}
KEY_EXAMPLE = {
    "id": "k7Qm2x", "name": "producer", "munchkinIds": ["123-ABC-456"], "scopes": ["ingest"],
    "createdAt": "2026-11-28T10:00:00.000Z", "createdBy": "operator", "lastUsedAt": None, "revokedAt": None,
}  # fmt: skip
KEY = openapi.ok(KEY_RECORD, KEY_EXAMPLE, "The key's record (never the key)")


@router.post(
    "",
    status_code=201,
    summary="Create a tenant API key (the key is in this answer only)",
    responses={
        201: openapi.ok(
            openapi.with_properties(KEY_RECORD, {"key": {"type": "string", "description": "shown this once"}}),
            {**KEY_EXAMPLE, "key": "lst_k7Qm2x.…"},
            "the key record, with `key` — shown once, stored only as a hash",
        )
    },
)
async def create_key(
    services: Services, body: NewKeyBody, principal: Principal = Depends(require_operator)
) -> JSONResponse:
    record, secret = await services.api_keys.create(
        body.munchkinIds, list(body.scopes), name=body.name, created_by=principal.key_id
    )
    await audit(
        services,
        principal,
        "key.create",
        record.id,
        {"name": record.name, "munchkinIds": record.munchkinIds, "scopes": record.scopes},
        record.munchkinIds,
    )
    return JSONResponse({**record.public(), "key": secret}, status_code=201, headers={"Cache-Control": "no-store"})


@router.get(
    "",
    summary="List tenant API keys, newest first (never the keys themselves)",
    responses={
        200: openapi.ok(
            {
                **openapi.list_of("keys", KEY_RECORD, paged=False),
                "properties": {"keys": {"type": "array", "items": KEY_RECORD}, "total": {"type": "integer"}},
            },
            {"keys": [KEY_EXAMPLE], "total": 1},
        )
    },
)
async def list_keys(
    services: Services,
    munchkinId: str | None = Query(None, description="only the keys of this tenant"),
    includeRevoked: bool = Query(True),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    principal: Principal = Depends(require_operator),
) -> dict[str, Any]:
    found = await services.api_keys.listed(munchkinId, includeRevoked)
    return {"keys": [k.public() for k in found[offset : offset + limit]], "total": len(found)}


@router.get("/{key_id}", summary="One tenant API key", responses={200: KEY})
async def get_key(services: Services, key_id: str, principal: Principal = Depends(require_operator)) -> dict[str, Any]:
    record = await services.api_keys.fresh(key_id)
    if record is None:
        raise NotFound(f"no API key {key_id!r}")
    return record.public()


@router.delete(
    "/{key_id}",
    summary="Revoke a tenant API key (at once on this node; within seconds on the others)",
    description="The record stays: GET answers it with revokedAt set, so that audit entries can name the key.",
    responses={200: KEY},
)
async def revoke_key(
    services: Services, key_id: str, principal: Principal = Depends(require_operator)
) -> dict[str, Any]:
    record = await services.api_keys.revoke(key_id)
    await audit(services, principal, "key.revoke", record.id, None, record.munchkinIds)
    return record.public()
