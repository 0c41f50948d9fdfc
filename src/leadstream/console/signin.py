"""Sign-in with an API key, and sign-out.

One answer for every key that does not work (unknown, malformed, revoked): the page never hints
whether a key exists. A new session id is issued at every sign-in (no fixation), and a session the
browser still held is ended then. The key travels once, in the POST body; it is not logged, stored
or rendered back (the field is empty again after a failed attempt).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from leadstream.console.forms import form_of
from leadstream.console.gate import safe_next
from leadstream.console.session import (
    COOKIE,
    SessionStore,
    Verify,
    clear_session_cookie,
    is_tls,
    optional_session,
    set_session_cookie,
)
from leadstream.console.templating import Templates
from leadstream.logs import log

NOT_ACCEPTED = "That API key was not accepted. Check it and try again."
NO_KEY = "Enter an API key."
REASONS = {
    "ended": "Your session has ended. Sign in again to continue.",
    "signed_out": "You are signed out.",
}


def sign_in_routes(verify: Verify, sessions: SessionStore, templates: Templates) -> list[BaseRoute]:
    prefix = templates.prefix

    def page(request: Request, *, next_url: str, error: str | None = None, status: int = 200) -> Response:
        notice = REASONS.get(request.query_params.get("reason", ""))
        values = {"title": "Sign in", "next": next_url, "error": error, "notice": None if error else notice}
        return templates.render(request, "sign_in.html", values, status=status)

    async def show(request: Request) -> Response:
        next_url = safe_next(request.query_params.get("next"), prefix)
        if optional_session(request) is not None:
            return RedirectResponse(next_url, status_code=303)
        return page(request, next_url=next_url)

    async def sign_in(request: Request) -> Response:
        form = await form_of(request)
        key, next_field = form.get("key"), form.get("next")
        next_url = safe_next(next_field if isinstance(next_field, str) else None, prefix)
        key = key.strip() if isinstance(key, str) else ""
        if not key:
            return page(request, next_url=next_url, error=NO_KEY, status=400)
        identity = await verify(key)
        client = request.client.host if request.client else None
        if identity is None:
            log.info("console sign-in refused", client=client)
            return page(request, next_url=next_url, error=NOT_ACCEPTED, status=401)
        previous = request.cookies.get(COOKIE)
        if previous:
            await sessions.delete(previous)
        session_id, _ = await sessions.create(identity)
        log.info("console sign-in", key_id=identity.key_id, client=client)
        response = RedirectResponse(next_url, status_code=303)
        set_session_cookie(response, session_id, path=prefix, secure=is_tls(request))
        return response

    async def sign_out(request: Request) -> Response:
        session_id = request.cookies.get(COOKIE)
        if session_id:
            await sessions.delete(session_id)
        response = RedirectResponse(f"{prefix}/sign-in?reason=signed_out", status_code=303)
        clear_session_cookie(response, path=prefix, secure=is_tls(request))
        return response

    return [
        Route("/sign-in", show, methods=["GET"], name="sign_in_page"),
        Route("/sign-in", sign_in, methods=["POST"], name="sign_in"),
        Route("/sign-out", sign_out, methods=["POST"], name="sign_out"),
    ]
