"""Console sessions: who signed in, kept on the server and named by an opaque random id in a cookie.

The cookie carries nothing but a random id (32 bytes, URL-safe): HttpOnly, SameSite=Strict, Path=/ui,
and Secure when the request came over TLS. The API key is checked once at sign-in and never stored,
neither in the cookie nor in the session; the session holds what the key *is* (key id, tenants,
scopes). A session ends after ``idle`` seconds without a request (12 h) or ``absolute`` seconds
after sign-in whatever happens (24 h, so a stolen id cannot be kept alive by polling), and at
sign-out.

Why server-side sessions behind ``SessionStore`` rather than a signed cookie: sign-out and key
revocation must end a session at once, and a signed cookie stays good until it expires unless
every node shares a deny-list, which is server-side state again. The service keeps them in the
store the nodes already share (``console.pages.sessions.StoreSessionStore``), so any node answers;
``MemorySessionStore`` serves a console used on its own (tests, a demo). Both are keyed by the
SHA-256 of the id: reading the table or a memory dump yields no usable cookie.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from starlette.requests import HTTPConnection
from starlette.responses import Response

COOKIE = "leadstream_ui"
IDLE_TIMEOUT = 12 * 3600.0  # SPEC §11
ABSOLUTE_TIMEOUT = 24 * 3600.0
SCOPE_KEY = "leadstream.console.session"  # where the middleware leaves the Session in the ASGI scope


class Identity(Protocol):
    """What a verified API key is: the API's ``Principal`` fits as it is (phase 2 passes it in)."""

    @property
    def key_id(self) -> str: ...

    @property
    def munchkin_ids(self) -> frozenset[str] | None: ...  # None: the operator (every tenant)

    @property
    def scopes(self) -> frozenset[str]: ...


Verify = Callable[[str], Awaitable["Identity | None"]]
"""Sign-in: the presented key → its identity, or None for a wrong, malformed or revoked key."""

Recheck = Callable[["Identity"], Awaitable["Identity | None"]]
"""Every request: the signed-in identity as it is now (scopes may have changed), or None once the
key is revoked — the session then ends at once."""


@dataclass(slots=True)
class Session:
    identity: Identity
    csrf_token: str  # per session; every state-changing form carries it (csrf.py)
    created_at: float
    seen_at: float

    @property
    def is_operator(self) -> bool:
        return self.identity.munchkin_ids is None


class SessionStore(Protocol):
    async def create(self, identity: Identity) -> tuple[str, Session]:
        """A new session and its id (the cookie value; the store keeps only its digest)."""
        ...

    async def get(self, session_id: str, *, touch: bool = True) -> Session | None:
        """The live session for ``session_id``, or None (unknown, forged or expired: all alike).
        ``touch`` renews its idle time, as any request does."""
        ...

    async def delete(self, session_id: str) -> None: ...


def digest_of(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


@dataclass
class MemorySessionStore:
    """Sessions of this process, in memory: fine for one node; lost at restart (people sign in again).

    Ordered by last use, so idle sessions sit at the front and are dropped there as new ones are
    created; ``max_sessions`` bounds memory (the least recently used go first).
    """

    idle: float = IDLE_TIMEOUT
    absolute: float = ABSOLUTE_TIMEOUT
    max_sessions: int = 10_000
    clock: Callable[[], float] = time.time
    _sessions: OrderedDict[bytes, Session] = field(default_factory=OrderedDict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.idle <= 0 or self.absolute <= 0:
            raise ValueError(f"session timeouts must be positive (idle={self.idle!r}, absolute={self.absolute!r})")
        if self.max_sessions < 1:
            raise ValueError(f"max_sessions must be at least 1, not {self.max_sessions!r}")

    def __len__(self) -> int:
        return len(self._sessions)

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.seen_at >= self.idle or now - session.created_at >= self.absolute

    async def create(self, identity: Identity) -> tuple[str, Session]:
        now = self.clock()
        while self._sessions:  # the front is the least recently used
            oldest = next(iter(self._sessions.values()))
            if not self._expired(oldest, now) and len(self._sessions) < self.max_sessions:
                break
            self._sessions.popitem(last=False)
        session_id = secrets.token_urlsafe(32)
        session = Session(identity, secrets.token_urlsafe(32), created_at=now, seen_at=now)
        self._sessions[digest_of(session_id)] = session
        return session_id, session

    async def get(self, session_id: str, *, touch: bool = True) -> Session | None:
        key = digest_of(session_id)
        session = self._sessions.get(key)
        if session is None:
            return None
        now = self.clock()
        if self._expired(session, now):
            del self._sessions[key]
            return None
        if touch:
            session.seen_at = now
            self._sessions.move_to_end(key)
        return session

    async def delete(self, session_id: str) -> None:
        self._sessions.pop(digest_of(session_id), None)

    def clear(self) -> None:
        """Ends every session (everyone signs in again)."""
        self._sessions.clear()


def is_tls(connection: HTTPConnection) -> bool:
    """Whether the browser reached us over TLS: uvicorn says so in the scheme (behind a TLS proxy,
    run uvicorn with proxy headers from that proxy so the scheme is right)."""
    return connection.url.scheme in ("https", "wss")


def set_session_cookie(response: Response, session_id: str, *, path: str, secure: bool) -> None:
    # No Max-Age: the cookie goes when the browser closes; the server enforces the timeouts.
    response.set_cookie(COOKIE, session_id, path=path, secure=secure, httponly=True, samesite="strict")


def clear_session_cookie(response: Response, *, path: str, secure: bool) -> None:
    response.delete_cookie(COOKIE, path=path, secure=secure, httponly=True, samesite="strict")


def session_of(connection: HTTPConnection) -> Session:
    """The signed-in session of a console page (the middleware let the request through only with one)."""
    session = connection.scope.get(SCOPE_KEY)
    if not isinstance(session, Session):
        raise LookupError("no console session on this request: is the route public, or the middleware missing?")
    return session


def optional_session(connection: HTTPConnection) -> Session | None:
    """The session on a public page (sign-in, errors), if any."""
    session = connection.scope.get(SCOPE_KEY)
    return session if isinstance(session, Session) else None
