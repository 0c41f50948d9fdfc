"""Console form bodies: URL-encoded only, size-bounded, parsed once per request.

Starlette's ``Request.form()`` needs python-multipart even for URL-encoded bodies; console forms
never upload files, so this small parser is all they need. The CSRF middleware reads the body
before the route does, so the parsed form is left in the ASGI scope and the body is replayed.
"""

from __future__ import annotations

import urllib.parse

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.types import Message, Receive

from leadstream.errors import LeadstreamError

MAX_FORM_BYTES = 64 * 1024
FORM_KEY = "leadstream.console.form"
URLENCODED = "application/x-www-form-urlencoded"


class FormRefused(LeadstreamError):
    """A form body the console does not take (too large, or not URL-encoded)."""


async def read_body(receive: Receive, limit: int = MAX_FORM_BYTES) -> bytes:
    """The whole request body, or FormRefused (413) as soon as it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise FormRefused(f"the form is larger than {limit} bytes", status=413)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def parse_form(body: bytes, content_type: str | None) -> FormData:
    """``a=1&a=2&b=x`` → FormData (a multi-dict: ``get`` and ``getlist``). An empty body is an empty form."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if body and media_type != URLENCODED:
        raise FormRefused(f"console forms are sent as {URLENCODED}, not {media_type or 'an unnamed type'}", status=415)
    try:
        pairs = urllib.parse.parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False, max_num_fields=1000)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormRefused(f"the form could not be read: {exc}") from exc
    fields: list[tuple[str, str | UploadFile]] = list(pairs)
    return FormData(fields)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the already-read body to the app once, then waits on the real one
    (so a disconnect still reaches the app)."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


async def form_of(request: Request, limit: int = MAX_FORM_BYTES) -> FormData:
    """The request's form: the one the CSRF middleware already parsed, else read and parsed now."""
    cached = request.scope.get(FORM_KEY)
    if isinstance(cached, FormData):
        return cached
    form = parse_form(await read_body(request.receive, limit), request.headers.get("content-type"))
    request.scope[FORM_KEY] = form
    return form
