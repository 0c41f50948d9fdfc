"""How pages reach the service and ask who is looking: the console's ``api/deps.py``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from leadstream import positions
from leadstream.console.app import templates_of
from leadstream.console.series import Sampler
from leadstream.console.session import session_of
from leadstream.errors import Unavailable
from leadstream.runtime import Runtime
from leadstream.security.principals import Principal

RuntimeOf = Callable[[], Runtime | None]


def runtime_of(request: Request) -> Runtime:
    """The service the app's lifespan built, or 503 while it starts or stops."""
    get: RuntimeOf = request.app.state.runtime_of
    runtime = get()
    if runtime is None:
        raise Unavailable("the server is starting or stopping; try again in a moment")
    return runtime


def sampler_of(request: Request) -> Sampler:
    sampler: Sampler = request.app.state.sampler
    return sampler


def viewer(request: Request, scope: str = "read") -> Principal:
    """Who signed in, if their key's scope covers ``scope`` (else 403, as the API answers)."""
    identity = session_of(request).identity
    assert isinstance(identity, Principal), "console sessions hold the API's Principal"
    return identity.require(scope)


async def audit(
    request: Request, principal: Principal, action: str, target: str, changes: Any, munchkin_ids: list[str]
) -> None:
    """An admin action done through the console, in the same audit trail as the API's."""
    await runtime_of(request).audit.record(principal.key_id, action, target, changes, munchkin_ids)


def render(request: Request, name: str, values: Mapping[str, Any], *, status: int = 200) -> Response:
    return templates_of(request).render(request, name, values, status=status)


def redirect(request: Request, path: str) -> Response:
    """After a form: back to a page (303, so a reload does not post again)."""
    return RedirectResponse(templates_of(request).url(path), status_code=303)


def query(request: Request, name: str) -> str:
    """A query parameter, stripped ('' when absent)."""
    return request.query_params.get(name, "").strip()


def when(ms: int | float | None) -> str:
    """A time for people, to the second, in UTC (the zone every other time here is in)."""
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def when_text(value: str | None) -> str:
    """An RFC 3339 time from a view (``2026-11-28T10:00:00.123Z``) the way ``when`` shows it."""
    if not value:
        return "—"
    try:
        return when(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return value


def json_text(value: Any) -> str:
    """A value as compact JSON text (the template escapes it; ``tojson`` would show ``\\u003c``)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def position_of(value: Any) -> int | None:
    """A log position from an attempt: a journal token (or a number, in entries written before tokens)."""
    if isinstance(value, int):
        return value
    return positions.decode_or_none(value) if isinstance(value, str) else None
