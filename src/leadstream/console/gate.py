"""The console's door: finds each request's session, and sends those without one to sign-in.

Every console route is private unless listed in ``public`` (sign-in and the static assets), so a
new page cannot forget to ask for a session. A cookie that names no live session (forged, expired,
signed out elsewhere, key revoked) is cleared and the browser goes back to sign-in, told that its
session ended; a live part refreshed by htmx gets ``HX-Redirect`` so the whole page goes there.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection, Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from leadstream.console.csrf import Refuse, plain_refusal
from leadstream.console.session import COOKIE, SCOPE_KEY, Recheck, Session, SessionStore, clear_session_cookie, is_tls
from leadstream.errors import LeadstreamError
from leadstream.logs import log


def safe_next(value: str | None, prefix: str) -> str:
    """Where to go after sign-in: a path inside the console, never another site (no open redirect)."""
    home = prefix + "/"
    if not value or not value.startswith(home) or value.startswith("//") or "\\" in value:
        return home
    parts = urllib.parse.urlsplit(value)
    if parts.scheme or parts.netloc:
        return home
    return value


class SessionGate:
    def __init__(
        self,
        app: ASGIApp,
        *,
        sessions: SessionStore,
        prefix: str = "/ui",
        public: Sequence[str] = ("/sign-in", "/static/"),
        recheck: Recheck | None = None,
        refuse: Refuse = plain_refusal,
    ) -> None:
        self.app = app
        self.sessions = sessions
        self.prefix = prefix.rstrip("/")
        self.public = tuple(self.prefix + path for path in public)
        self.recheck = recheck
        self.refuse = refuse

    def _is_public(self, path: str) -> bool:
        return any(path == p or (p.endswith("/") and path.startswith(p)) for p in self.public)

    async def _session(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = await self.sessions.get(session_id)
        if session is not None and self.recheck is not None:
            identity = await self.recheck(session.identity)
            if identity is None:  # the key was revoked: its sessions end now
                await self.sessions.delete(session_id)
                return None
            session.identity = identity
        return session

    def _to_sign_in(self, connection: HTTPConnection, *, ended: bool) -> Response:
        query: dict[str, str] = {"reason": "ended"} if ended else {}
        if connection.headers.get("hx-request") == "true":
            page = urllib.parse.urlsplit(connection.headers.get("hx-current-url", ""))
            query["next"] = safe_next(page.path + (f"?{page.query}" if page.query else ""), self.prefix)
        elif connection.scope["method"] == "GET":
            url = connection.url
            query["next"] = safe_next(url.path + (f"?{url.query}" if url.query else ""), self.prefix)
        target = f"{self.prefix}/sign-in" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        if connection.headers.get("hx-request") == "true":
            response: Response = Response(status_code=401, headers={"HX-Redirect": target})
        else:
            response = RedirectResponse(target, status_code=303)
        if ended:
            clear_session_cookie(response, path=self.prefix, secure=is_tls(connection))
        return response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        session_id = connection.cookies.get(COOKIE)
        try:
            session = await self._session(session_id)
        except LeadstreamError as exc:  # the store is away: say so, and keep the cookie for when it is back
            log.warning("console session lookup failed", path=scope["path"], error=exc.detail)
            await self.refuse(Request(scope), exc.status, exc.detail)(scope, receive, send)
            return
        scope[SCOPE_KEY] = session
        dead_cookie = bool(session_id) and session is None
        if session is None and not self._is_public(scope["path"]):
            await self._to_sign_in(connection, ended=dead_cookie)(scope, receive, send)
            return
        if not dead_cookie:
            await self.app(scope, receive, send)
            return

        async def send_clearing_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                cleared = Response()
                clear_session_cookie(cleared, path=self.prefix, secure=is_tls(connection))
                headers = MutableHeaders(scope=message)
                if "set-cookie" not in headers:  # sign-in sets its own
                    headers.append("set-cookie", cleared.headers["set-cookie"])
            await send(message)

        await self.app(scope, receive, send_clearing_cookie)
