"""Console sessions kept in the store, so that any node answers a signed-in browser (SPEC §12).

A row per session, keyed by the SHA-256 of the cookie's id (the id itself is never stored): the key
id (for revocation), the identity and CSRF token, created and last-seen times. Sign-out deletes the
row; revoking a key deletes its rows (``ApiKeys.revoke``), so both hold on every node.

Each request costs one primary-key read, or none: a session read is kept in this process for
``cache_seconds`` (1 s), which is therefore the longest a sign-out or revocation made on another
node can go unnoticed here (on this node it is at once: the entry is dropped). An operator
session also keeps a mark of the operator key it signed in with, an HMAC of the key under the
session's id (which is not stored, so the mark helps nobody guess the key): once the operator key is
changed, its sessions end, as they did at the restart that changes it. The last-seen time
is written at most every ``touch_every`` seconds (60 s), not on each page: idle expiry is exact
to that much, against 12 hours.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from leadstream.console.session import ABSOLUTE_TIMEOUT, IDLE_TIMEOUT, Identity, Session, digest_of
from leadstream.errors import Unavailable
from leadstream.security.principals import Principal
from leadstream.store.base import Store

MAX_CACHED = 10_000


def _record(session: Session, operator_mark: str | None) -> bytes:
    identity = session.identity
    munchkin_ids = sorted(identity.munchkin_ids) if identity.munchkin_ids is not None else None
    return orjson.dumps(
        {"keyId": identity.key_id, "munchkinIds": munchkin_ids, "scopes": sorted(identity.scopes),
         "csrf": session.csrf_token, "operator": operator_mark if munchkin_ids is None else None}
    )  # fmt: skip


def _session(fields: dict[str, Any], created_at: float, seen_at: float) -> Session:
    munchkin_ids = fields["munchkinIds"]
    identity = Principal(
        fields["keyId"], frozenset(munchkin_ids) if munchkin_ids is not None else None, frozenset(fields["scopes"])
    )
    return Session(identity, fields["csrf"], created_at=created_at, seen_at=seen_at)


@dataclass
class StoreSessionStore:
    """``SessionStore`` over the service's store (``store_of`` gives None while it starts or stops:
    no session then, and sign-in is refused before it gets here)."""

    store_of: Callable[[], Store | None]
    operator_key: Callable[[], str] = lambda: ""
    idle: float = IDLE_TIMEOUT
    absolute: float = ABSOLUTE_TIMEOUT
    cache_seconds: float = 1.0
    touch_every: float = 60.0
    clock: Callable[[], float] = time.time
    _cache: dict[bytes, tuple[float, Session]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.idle <= 0 or self.absolute <= 0:
            raise ValueError(f"session timeouts must be positive (idle={self.idle!r}, absolute={self.absolute!r})")

    def _store(self) -> Store:
        store = self.store_of()
        if store is None:
            raise Unavailable("the service is starting or stopping")
        return store

    def _remember(self, key: bytes, session: Session) -> None:
        if self.cache_seconds <= 0:
            return
        now = time.monotonic()
        if len(self._cache) >= MAX_CACHED:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
        self._cache[key] = (now + self.cache_seconds, session)

    def _operator_mark(self, session_id: str) -> str:
        return hmac.new(session_id.encode(), self.operator_key().encode(), hashlib.sha256).hexdigest()

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.seen_at >= self.idle or now - session.created_at >= self.absolute

    async def create(self, identity: Identity) -> tuple[str, Session]:
        store = self._store()
        now = self.clock()
        await store.purge_console_sessions(seen_before=now - self.idle, created_before=now - self.absolute)
        session_id = secrets.token_urlsafe(32)
        session = Session(identity, secrets.token_urlsafe(32), created_at=now, seen_at=now)
        key = digest_of(session_id)
        record = _record(session, self._operator_mark(session_id))
        await store.create_console_session(key, identity.key_id, record, now)
        self._remember(key, session)
        return session_id, session

    async def get(self, session_id: str, *, touch: bool = True) -> Session | None:
        key = digest_of(session_id)
        cached = self._cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            session = cached[1]
        else:
            store = self.store_of()
            row = await store.console_session(key) if store is not None else None
            if row is None:
                self._cache.pop(key, None)
                return None
            record, created_at, seen_at = row
            fields = orjson.loads(record)
            if fields["munchkinIds"] is None and not hmac.compare_digest(
                str(fields.get("operator")), self._operator_mark(session_id)
            ):  # signed in with an operator key that is not the operator key any more
                await self.delete(session_id)
                return None
            session = _session(fields, created_at, seen_at)
            self._remember(key, session)
        now = self.clock()
        if self._expired(session, now):
            await self.delete(session_id)
            return None
        if touch and now - session.seen_at >= self.touch_every:
            session.seen_at = now
            await self._store().touch_console_session(key, now)
        return session

    async def delete(self, session_id: str) -> None:
        key = digest_of(session_id)
        self._cache.pop(key, None)
        store = self.store_of()
        if store is not None:
            await store.delete_console_session(key)
