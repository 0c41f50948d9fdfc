"""Who is calling, and what they may do: every /v1 route needs ``Authorization: Bearer <key>``.

Two kinds of key:
- the operator key (LEADSTREAM_ADMIN_KEY or ``admin.key``): every tenant, every scope;
- tenant keys (``apikeys.py``): some Munchkin IDs and some scopes — ``ingest`` (publish records of
  its own tenants, nothing else), ``read`` (GET its tenants' subscriptions, attempts, journal,
  audit), ``subscriptions`` (``read`` plus changing subscriptions).

Another tenant's things answer 404, exactly as if they did not exist; a route the key's scope
does not cover answers 403 whatever it names, so neither leaks what exists. Keys are compared as
SHA-256 digests with ``hmac.compare_digest``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from leadstream.errors import LeadstreamError, NotFound, Unauthorized
from leadstream.events import Event, Rejection

SCOPES = frozenset({"ingest", "subscriptions", "read"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Forbidden(LeadstreamError):
    status = 403
    title = "Forbidden"


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    munchkin_ids: frozenset[str] | None = None  # None: every tenant (the operator)
    scopes: frozenset[str] = SCOPES

    @property
    def is_operator(self) -> bool:
        return self.munchkin_ids is None

    def sees(self, munchkin_id: str) -> bool:
        return self.munchkin_ids is None or munchkin_id in self.munchkin_ids

    def can(self, scope: str) -> bool:
        return scope in self.scopes or (scope == "read" and "subscriptions" in self.scopes)

    def require(self, scope: str) -> Principal:
        """Self, or Forbidden when the key's scopes do not cover ``scope``."""
        if not self.can(scope):
            raise Forbidden(f"this API key's scope ({', '.join(sorted(self.scopes))}) does not allow {scope}")
        return self

    def ensure_sees(self, munchkin_id: str, what: str) -> None:
        """NotFound("no <what>") for another tenant's thing: the same answer as for a missing one."""
        if not self.sees(munchkin_id):
            raise NotFound(f"no {what}")


OPERATOR = Principal("operator")


def bearer(connection: HTTPConnection) -> str | None:
    header = connection.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def authenticate(connection: HTTPConnection) -> Principal:
    """The caller, or Unauthorized (the same answer for unknown, malformed and revoked keys)."""
    presented = bearer(connection)
    if presented is None:
        raise Unauthorized("send the API key as 'Authorization: Bearer <key>'")
    state = connection.app.state
    operator_key: str = state.services.admin_key
    if hmac.compare_digest(hashlib.sha256(presented.encode()).digest(), hashlib.sha256(operator_key.encode()).digest()):
        return OPERATOR
    security = getattr(state, "security", None)
    record = security.api_keys.identify(presented) if security is not None else None
    if record is None:
        raise Unauthorized("the API key is not valid")
    return Principal(record.id, frozenset(record.munchkinIds), frozenset(record.scopes))


def require_key(connection: HTTPConnection) -> Principal:
    """FastAPI dependency for /v1 routes: any key whose scope covers the method — GET needs
    ``read``, a change needs ``subscriptions``; an ``ingest``-only key gets 403."""
    principal = authenticate(connection)
    return principal.require("read" if connection.scope.get("method", "GET") in SAFE_METHODS else "subscriptions")


def require_scope(scope: str) -> Callable[[HTTPConnection], Principal]:
    """FastAPI dependency: a key with ``scope``, whatever the method."""

    def dependency(connection: HTTPConnection) -> Principal:
        return authenticate(connection).require(scope)

    return dependency


def require_operator(connection: HTTPConnection) -> Principal:
    """FastAPI dependency for operator-only routes (API keys): tenant keys get 403."""
    principal = authenticate(connection)
    if not principal.is_operator:
        raise Forbidden("only the operator key may do this")
    return principal


def restrict_to_tenants(
    principal: Principal, events: Sequence[Event], rejected: Sequence[Rejection]
) -> tuple[list[Event], list[Rejection]]:
    """Ingest: a tenant key publishes its own tenants' records only; each other record is
    rejected on its own (the rest are stored), naming the Munchkin ID. ``events`` are the valid
    records in request order, ``rejected`` the invalid ones (by index), as ``validate_records``
    returns them."""
    if principal.munchkin_ids is None:
        return list(events), list(rejected)
    taken = {r.index for r in rejected}
    indexes = (i for i in range(len(events) + len(rejected)) if i not in taken)
    kept: list[Event] = []
    refused = list(rejected)
    for index, event in zip(indexes, events):
        if principal.sees(event.munchkin_id):
            kept.append(event)
        else:
            refused.append(Rejection(index, [f"munchkinId: this API key may not publish for {event.munchkin_id!r}"]))
    return kept, sorted(refused, key=lambda r: r.index)
