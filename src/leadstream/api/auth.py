"""The API's side of authentication: every /v1 route needs ``Authorization: Bearer <key>``.

Who a key stands for and what it may do is ``security.principals``; here the key is read from the
request and the route's scope is checked (FastAPI dependencies).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import HTTPConnection

from leadstream.api.deps import runtime_of
from leadstream.errors import Unauthorized
from leadstream.security.principals import SAFE_METHODS, Forbidden, Principal, identify_fresh


def bearer(connection: HTTPConnection) -> str | None:
    header = connection.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


async def authenticate(connection: HTTPConnection) -> Principal:
    """The caller, or Unauthorized (the same answer for unknown, malformed and revoked keys). A key
    id this node does not know is looked up in the store first (made on another node just now)."""
    presented = bearer(connection)
    if presented is None:
        raise Unauthorized("send the API key as 'Authorization: Bearer <key>'")
    runtime = runtime_of(connection)
    principal = await identify_fresh(presented, runtime.admin_key, runtime.api_keys)
    if principal is None:
        raise Unauthorized("the API key is not valid")
    return principal


async def require_key(connection: HTTPConnection) -> Principal:
    """FastAPI dependency for /v1 routes: any key whose scope covers the method — GET needs
    ``read``, a change needs ``subscriptions``; an ``ingest``-only key gets 403."""
    principal = await authenticate(connection)
    return principal.require("read" if connection.scope.get("method", "GET") in SAFE_METHODS else "subscriptions")


def require_scope(scope: str) -> Callable[[HTTPConnection], Awaitable[Principal]]:
    """FastAPI dependency: a key with ``scope``, whatever the method."""

    async def dependency(connection: HTTPConnection) -> Principal:
        return (await authenticate(connection)).require(scope)

    return dependency


async def require_operator(connection: HTTPConnection) -> Principal:
    """FastAPI dependency for operator-only routes (API keys): tenant keys get 403."""
    principal = await authenticate(connection)
    if not principal.is_operator:
        raise Forbidden("only the operator key may do this")
    return principal
