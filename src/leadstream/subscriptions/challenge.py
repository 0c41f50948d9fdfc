"""The Adobe I/O challenge (SPEC §5): an endpoint proves it wants our events before it gets any.

``GET <endpoint>?challenge=<random>`` must come back 2xx within the timeout (10 s) with the
value, as plain text or as ``{"challenge": "…"}``. Otherwise creating (or re-pointing) the
subscription fails with a 422 whose detail says what came back: the status and the start of the
body, or why there was no answer at all.
"""

from __future__ import annotations

import errno
import os
import secrets
from urllib.parse import urlsplit

import aiohttp
import msgspec
from yarl import URL

from leadstream.errors import Invalid
from leadstream.security.guard import snippet

CHALLENGE_SECONDS = 10.0
MAX_ANSWER_BYTES = 64 * 1024  # an echo is a few dozen bytes; read no further than this


def challenge_url(endpoint: str, value: str) -> URL:
    """``endpoint`` with ``challenge=<value>`` appended to its query, the existing query kept
    byte for byte (no re-encoding) and any fragment dropped (it is never sent)."""
    base = endpoint.split("#", 1)[0]
    separator = "" if base.endswith(("?", "&")) else "&" if "?" in base else "?"
    return URL(f"{base}{separator}challenge={value}", encoded=True)  # value: URL-safe characters only


async def verify_challenge(
    session: aiohttp.ClientSession, endpoint: str, *, timeout: float = CHALLENGE_SECONDS
) -> None:
    """Send the challenge to ``endpoint`` and check the echo.

    Raises:
        Invalid: (422, ``field="endpoint"``) the endpoint did not echo the value in time; the
            detail names what came back.
    """
    value = secrets.token_urlsafe(24)
    try:
        async with session.get(
            challenge_url(endpoint, value),
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,  # the endpoint itself must answer: a redirect could point anywhere
        ) as response:
            status = response.status
            body = await response.content.read(MAX_ANSWER_BYTES)
    except TimeoutError:
        raise _failed(endpoint, f"no answer within {timeout:g} s") from None
    except aiohttp.ClientConnectorError as exc:
        raise _failed(endpoint, f"cannot connect: {_reason(exc.os_error)}") from None
    except aiohttp.ClientError as exc:
        raise _failed(endpoint, f"{type(exc).__name__}: {exc}".rstrip(": ")) from None
    except OSError as exc:  # e.g. the resolver guard refusing private addresses
        raise _failed(endpoint, str(exc)) from None
    if not 200 <= status < 300:
        raise _failed(endpoint, f"it answered HTTP {status} {snippet(body)}".rstrip())
    if _echoed(body) != value:
        shown = repr(snippet(body)) if body.strip() else "an empty body"
        raise _failed(endpoint, f"it answered HTTP {status} with {shown}, not the challenge value")


def _echoed(body: bytes) -> str | None:
    """The value in a plain-text or ``{"challenge": "…"}`` answer."""
    text = body.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        try:
            document = msgspec.json.decode(body)
        except msgspec.DecodeError:
            return None
        found = document.get("challenge") if isinstance(document, dict) else None
        return found if isinstance(found, str) else None
    return text


def _reason(error: OSError | None) -> str:
    """ "connection refused" rather than asyncio's "Connect call failed ('127.0.0.1', 9)"."""
    if error is None:
        return "no connection"
    if error.errno and error.errno in errno.errorcode:
        return os.strerror(error.errno).lower()
    return str(error) or type(error).__name__


def _where(endpoint: str) -> str:
    """The endpoint without its query: a query may carry a token, which a message must not show."""
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _failed(endpoint: str, what: str) -> Invalid:
    return Invalid(
        f"endpoint: the challenge GET to {_where(endpoint)} failed: {what}. The endpoint must answer"
        ' GET ?challenge=<value> with 2xx and the value, as plain text or as {"challenge": "<value>"}',
        field="endpoint",
    )
