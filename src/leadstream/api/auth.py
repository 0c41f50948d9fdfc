"""Who is calling: every /v1 route needs ``Authorization: Bearer <key>``."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from leadstream.errors import Unauthorized


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    munchkin_ids: frozenset[str] | None = None  # None: every tenant (the operator)

    def sees(self, munchkin_id: str) -> bool:
        return self.munchkin_ids is None or munchkin_id in self.munchkin_ids


OPERATOR = Principal("operator")


def bearer(connection: HTTPConnection) -> str | None:
    header = connection.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def authenticate(connection: HTTPConnection) -> Principal:
    """The caller, or Unauthorized. Constant-time comparison of the key."""
    presented = bearer(connection)
    if presented is None:
        raise Unauthorized("send the API key as 'Authorization: Bearer <key>'")
    admin_key: str = connection.app.state.services.admin_key
    if hmac.compare_digest(presented.encode(), admin_key.encode()):
        return OPERATOR
    raise Unauthorized("the API key is not valid")


def require_key(connection: HTTPConnection) -> Principal:
    """FastAPI dependency for /v1 routes."""
    return authenticate(connection)
