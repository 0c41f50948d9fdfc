"""RFC 9457 problem+json for every error the API answers."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from leadstream.errors import LeadstreamError

PROBLEM = "application/problem+json"


def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM, headers=headers)


async def leadstream_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LeadstreamError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return problem(exc.status, exc.title, exc.detail, headers, **exc.extra)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    from http import HTTPStatus

    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return problem(exc.status_code, HTTPStatus(exc.status_code).phrase, detail, dict(exc.headers or {}) or None)


async def validation_error(request: Request, exc: Exception) -> Response:
    """FastAPI body/query validation: name each field, as every other error does."""
    assert isinstance(exc, RequestValidationError)
    errors = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"] if part not in ("body", "query", "path"))
        errors.append(f"{where or 'body'}: {error['msg']}")
    return problem(422, "Unprocessable Content", "; ".join(errors), errors=errors)


HANDLERS = {
    LeadstreamError: leadstream_error,
    HTTPException: http_error,
    RequestValidationError: validation_error,
}
