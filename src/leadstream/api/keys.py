"""``GET /keys/{name}``: the PEM public keys named by ``x-adobe-public-key{1,2}-path`` (no auth, SPEC §5)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from leadstream.api.deps import Services
from leadstream.errors import NotFound

router = APIRouter(tags=["signatures"])


@router.get(
    "/keys/{name}",
    summary="A public key that verifies delivery signatures",
    response_class=Response,
    openapi_extra={"security": []},  # public: receivers fetch keys without credentials
    responses={
        200: {
            "description": "PEM (SPKI) RSA public key",
            "content": {
                "application/x-pem-file": {
                    "schema": {"type": "string"},
                    "example": "-----BEGIN PUBLIC KEY-----\nMIIBIjANBg…\n-----END PUBLIC KEY-----\n",
                }
            },
        },
        404: {"description": "No such key"},
    },
)
def public_key(name: str, services: Services) -> Response:
    """The PEM named by a delivery's ``x-adobe-public-key1-path`` or ``-2-path`` header.

    A name always denotes the same key, so receivers may cache it forever.
    """
    keyring = services.keyring
    keyring.reload_if_changed()
    pem = keyring.public_pem(name)
    if pem is None:
        raise NotFound(f"no public key named {name!r}")
    return Response(
        pem,
        media_type="application/x-pem-file",
        headers={"Cache-Control": "public, max-age=31536000, immutable"},
    )
