"""Cross-site request protection for every state-changing console request: two checks, both required.

1. Origin: the ``Origin`` header (or, when a browser sends none, the origin of ``Referer``) must be
   this server's own scheme://host[:port] or one of ``trusted_origins``. A request naming neither
   header is refused: every browser the console supports sends ``Origin`` on a POST.
2. Token: the form's ``csrf_token`` field (or the ``X-CSRF-Token`` header, for htmx requests) must
   equal the session's token, compared in constant time.

SameSite=Strict already keeps the session cookie off cross-site requests; these checks also cover
same-site neighbours (another port or subdomain of the same site, which do get the cookie) and
browsers without SameSite. Sign-in has no session yet, hence no token: it gets the Origin check
only, which stops a login-CSRF form on another site. A refused request reaches no route, so it
changes nothing.
"""

from __future__ import annotations

import hmac
import urllib.parse
from collections.abc import Callable, Collection, Sequence

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from leadstream.console.forms import FORM_KEY, MAX_FORM_BYTES, FormRefused, parse_form, read_body, replay
from leadstream.console.session import SCOPE_KEY, Session
from leadstream.logs import log

FIELD = "csrf_token"
HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
REFUSED_ORIGIN = "This request came from another site, so it was refused. Nothing was changed."
REFUSED_TOKEN = (
    "This form has expired or did not come from this console, so nothing was changed. Reload the page and try again."
)

Refuse = Callable[[Request, int, str], Response]
"""How a refusal looks: (request, status, sentence for a person) → the response (the console's error page)."""


def tokens_match(presented: str | None, expected: str) -> bool:
    """Constant-time comparison; a missing or empty token never matches."""
    if not presented or not expected:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


def _origin(url: str) -> tuple[str, str, int] | None:
    """``https://Example.com`` → ("https", "example.com", 443); None for ``null`` or anything unparsable."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


def own_origin(scope: Scope) -> str:
    """This server as the browser addressed it: the request's scheme and its Host header."""
    host = Headers(scope=scope).get("host")
    if not host:
        server = scope.get("server") or ("localhost", None)
        host = f"{server[0]}:{server[1]}" if server[1] else str(server[0])
    scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
    return f"{scheme}://{host}"


def request_origin(headers: Headers) -> str | None:
    """Where the request says it came from: Origin, else Referer (its origin), else None."""
    origin = headers.get("origin")
    if origin and origin != "null":
        return origin
    if origin == "null":
        return None  # an opaque origin (sandboxed frame, file:, some redirects): never ours
    referer = headers.get("referer")
    return referer or None


def same_origin(presented: str | None, own: str, trusted: Collection[str] = ()) -> bool:
    if presented is None:
        return False
    origin = _origin(presented)
    return origin is not None and any(origin == _origin(candidate) for candidate in (own, *trusted))


def plain_refusal(request: Request, status: int, message: str) -> Response:
    return PlainTextResponse(message, status_code=status)


class CSRFMiddleware:
    """Refuses state-changing requests that fail the origin or token check (403, nothing changed).

    ``prefix`` is where the console is mounted; ``exempt`` lists routes below it that need only the
    origin check (sign-in). Session lookup happens before this, in ``SessionGate``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        prefix: str = "/ui",
        exempt: Sequence[str] = ("/sign-in",),
        trusted_origins: Collection[str] = (),
        max_form_bytes: int = MAX_FORM_BYTES,
        refuse: Refuse = plain_refusal,
    ) -> None:
        self.app = app
        self.prefix = prefix.rstrip("/")
        self.exempt = frozenset(self.prefix + path for path in exempt)
        self.trusted_origins = tuple(trusted_origins)
        self.max_form_bytes = max_form_bytes
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        claimed = request_origin(request.headers)
        if not same_origin(claimed, own_origin(scope), self.trusted_origins):
            where = _origin(claimed) if claimed else None  # not the whole Referer: it may carry someone's query
            log.warning("console request refused: foreign origin", path=scope["path"], origin=where)
            await self.refuse(request, 403, REFUSED_ORIGIN)(scope, receive, send)
            return
        if scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        session = scope.get(SCOPE_KEY)
        presented = request.headers.get(HEADER)
        body: bytes | None = None
        if presented is None:
            try:
                body = await read_body(receive, self.max_form_bytes)
                form = parse_form(body, request.headers.get("content-type"))
            except FormRefused as exc:
                await self.refuse(request, exc.status, exc.detail)(scope, receive, send)
                return
            scope[FORM_KEY] = form
            field = form.get(FIELD)
            presented = field if isinstance(field, str) else None
        if not isinstance(session, Session) or not tokens_match(presented, session.csrf_token):
            log.warning("console request refused: missing or wrong CSRF token", path=scope["path"])
            await self.refuse(request, 403, REFUSED_TOKEN)(scope, receive, send)
            return
        await self.app(scope, receive if body is None else replay(body, receive), send)
