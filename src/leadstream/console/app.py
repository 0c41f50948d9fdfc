"""The console as one ASGI app, to mount at ``/ui``: sign-in, sessions, CSRF, assets, error pages.

The pages themselves are passed in (``pages``); this module knows nothing about subscriptions or
events. Middleware, outermost first: security headers on every answer; the session gate (no
session, no page); the CSRF check on every state-changing request. Errors render as the console's
error page with a human sentence, never as a traceback or problem+json.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from leadstream.console.csrf import CSRFMiddleware
from leadstream.console.forms import MAX_FORM_BYTES
from leadstream.console.gate import SessionGate
from leadstream.console.headers import SecurityHeaders
from leadstream.console.session import MemorySessionStore, Recheck, SessionStore, Verify
from leadstream.console.signin import sign_in_routes
from leadstream.console.templating import STATIC_DIR, Templates
from leadstream.errors import LeadstreamError
from leadstream.logs import log

HEADINGS = {
    400: "That did not work",
    403: "Not allowed",
    404: "Not found",
    405: "Not possible here",
    413: "Too large",
    500: "Something went wrong",
    503: "Not available right now",
}
MESSAGES = {
    400: "The request could not be understood.",
    403: "You are not allowed to do this with the key you signed in with.",
    404: "There is nothing here. The link may be old, or what it pointed to was deleted.",
    405: "This page cannot be used that way.",
    413: "What was sent is too large.",
    500: "Something went wrong on our side. Try again in a moment; if it goes on, the server log says why.",
    503: "The service cannot answer now. Try again in a moment.",
}


@dataclass(frozen=True, slots=True)
class ConsoleOptions:
    prefix: str = "/ui"  # where the console is mounted: its URLs and the cookie's Path
    product: str = "leadstream"
    trusted_origins: tuple[str, ...] = ()  # e.g. the public https:// origin when a proxy rewrites Host
    max_form_bytes: int = MAX_FORM_BYTES


def templates_of(request: Request) -> Templates:
    """The console's templates, for a page handler."""
    templates = request.app.state.templates
    assert isinstance(templates, Templates), "templates_of: not a console request"
    return templates


def error_page(request: Request, status: int, message: str | None = None) -> Response:
    """The console's error page: the status, its name, and a sentence a person can act on."""
    templates = templates_of(request)
    title = HEADINGS.get(status) or HTTPStatus(status).phrase
    values = {"title": title, "status": status, "message": message or MESSAGES.get(status, "")}
    return templates.render(request, "error.html", values, status=status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    # Starlette's default details ("Not Found") add nothing to the page's own sentence.
    detail = exc.detail if exc.detail and exc.detail != HTTPStatus(exc.status_code).phrase else None
    return error_page(request, exc.status_code, detail)


async def _leadstream_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LeadstreamError)
    return error_page(request, exc.status, exc.detail)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("console page failed", path=request.url.path, error=repr(exc))
    return error_page(request, 500)


def create_console(
    verify: Verify,
    *,
    pages: Sequence[BaseRoute] = (),
    sessions: SessionStore | None = None,
    recheck: Recheck | None = None,
    options: ConsoleOptions = ConsoleOptions(),
    templates: Templates | None = None,
) -> Starlette:
    """The console app. Mount it at ``options.prefix``: ``Mount("/ui", app=create_console(...))``.

    ``verify`` checks a key at sign-in; ``recheck`` (optional) re-checks the signed-in identity on
    each request so that a revoked key's sessions end at once; ``pages`` are the console's pages,
    with paths below the prefix (``Route("/", overview)`` answers ``/ui/``).
    """
    prefix = options.prefix.rstrip("/")
    templates = templates or Templates(prefix=prefix, product=options.product)
    sessions = sessions if sessions is not None else MemorySessionStore()

    routes: list[BaseRoute] = [
        *sign_in_routes(verify, sessions, templates),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
        *pages,
    ]
    middleware = [
        Middleware(SecurityHeaders, static_prefix=f"{prefix}/static/"),
        Middleware(SessionGate, sessions=sessions, prefix=prefix, recheck=recheck, refuse=error_page),
        Middleware(
            CSRFMiddleware,
            prefix=prefix,
            trusted_origins=options.trusted_origins,
            max_form_bytes=options.max_form_bytes,
            refuse=error_page,
        ),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: _http_error, LeadstreamError: _leadstream_error, 500: _server_error},
    )
    app.state.templates = templates
    app.state.sessions = sessions
    app.state.options = options
    return app
