"""Who is calling and what they may do: the operator key, or a tenant key with tenants and scopes.

Two kinds of key:
- the operator key (LEADSTREAM_ADMIN_KEY or ``admin.key``): every tenant, every scope;
- tenant keys (``apikeys.py``): some Munchkin IDs and some scopes — ``ingest`` (publish records of
  its own tenants, nothing else), ``read`` (GET its tenants' subscriptions, attempts, journal,
  audit), ``subscriptions`` (``read`` plus changing subscriptions).

Another tenant's things answer 404, exactly as if they did not exist; a route the key's scope
does not cover answers 403 whatever it names, so neither leaks what exists. Keys are compared as
SHA-256 digests with ``hmac.compare_digest``. The API (``api/auth.py``) and the console use this.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from leadstream.errors import LeadstreamError, NotFound
from leadstream.events import Event, Rejection
from leadstream.security.apikeys import ApiKey, ApiKeys

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


def identify(presented: str, operator_key: str, api_keys: ApiKeys) -> Principal | None:
    """The principal a presented key stands for, or None (unknown, malformed, revoked)."""
    if _is_operator_key(presented, operator_key):
        return OPERATOR
    return _principal(api_keys.identify(presented))


async def identify_fresh(presented: str, operator_key: str, api_keys: ApiKeys) -> Principal | None:
    """``identify``, asking the store about a key id this node does not know yet (read-your-writes:
    a key created on another node of the cluster works here at once)."""
    if _is_operator_key(presented, operator_key):
        return OPERATOR
    return _principal(await api_keys.identify_fresh(presented))


def _is_operator_key(presented: str, operator_key: str) -> bool:
    presented_digest = hashlib.sha256(presented.encode()).digest()
    return hmac.compare_digest(presented_digest, hashlib.sha256(operator_key.encode()).digest())


def _principal(record: ApiKey | None) -> Principal | None:
    if record is None:
        return None
    return Principal(record.id, frozenset(record.munchkinIds), frozenset(record.scopes))


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
