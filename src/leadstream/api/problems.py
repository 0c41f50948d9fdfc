"""RFC 9457 problem+json for every error the API answers."""

from __future__ import annotations

import re
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
    headers = dict(exc.headers or {})
    if exc.status_code == 405 and (allowed := allowed_methods(request)):
        headers["Allow"] = allowed
    return problem(exc.status_code, HTTPStatus(exc.status_code).phrase, detail, headers or None)


def allowed_methods(request: Request) -> str | None:
    """Every method /openapi.json documents for the request's path: Starlette's own 405 names only
    those of the first route matching it, and each method of a path here is a route of its own."""
    paths = request.app.openapi().get("paths", {})
    for template, operations in paths.items():
        if re.fullmatch(re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)), request.url.path):
            return ", ".join(sorted(m.upper() for m in operations if m in HTTP_METHODS))
    return None


HTTP_METHODS = ("get", "put", "post", "delete", "patch", "options", "head")


async def validation_error(request: Request, exc: Exception) -> Response:
    """FastAPI's body/query validation, said as every other error is: each wrong field named, in
    our words (not pydantic's), enum errors listing what is allowed; a body that is not JSON is 400."""
    assert isinstance(exc, RequestValidationError)
    problems: list[tuple[str, str]] = []
    for error in exc.errors():
        if error["type"] == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "")
            detail = f"the body is not valid JSON{': ' + str(reason) if reason else ''}"
            return problem(400, "Bad Request", detail, field="body")
        where = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}"
            for part in error["loc"]
            if part not in ("body", "query", "path", "header")
        ).removeprefix(".")
        field = where or "body"
        if field == "body" and error["type"] in ("dict_type", "model_attributes_type", "model_type"):
            return problem(400, "Bad Request", "the body must be a JSON object", field="body")
        problems.append((field, f"{field}: {plain(error)}"))
    return problem(
        422,
        "Unprocessable Content",
        "; ".join(sentence for _, sentence in problems),
        field=problems[0][0],
        errors=[{"field": field, "detail": sentence} for field, sentence in problems],
    )


def _got(error: Any) -> str:
    return f", got {error['input']!r}" if "input" in error and not isinstance(error["input"], dict | list) else ""


def plain(error: Any) -> str:
    """One pydantic error in leadstream's words."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind in ("literal_error", "enum"):
        allowed = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"expected one of {', '.join(allowed)}{_got(error)}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"expected an integer{_got(error)}"
    if kind in ("float_parsing", "float_type"):
        return f"expected a number{_got(error)}"
    if kind in ("bool_parsing", "bool_type"):
        return f"expected true or false{_got(error)}"
    if kind in ("string_type",):
        return f"expected a string{_got(error)}"
    if kind in ("dict_type", "model_attributes_type", "model_type"):
        return "expected a JSON object"
    if kind in ("list_type",):
        return "expected a list"
    bounds = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
    if kind in bounds:
        limit = next(iter(ctx.values()), "")
        return f"must be {bounds[kind]} {limit}{_got(error)}"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} item(s)"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} item(s)"
    if kind == "string_too_short":
        return f"must be at least {ctx.get('min_length')} characters long"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters long"
    message = str(error["msg"]).removeprefix("Value error, ")
    return message[0].lower() + message[1:] if message else kind


HANDLERS = {
    LeadstreamError: leadstream_error,
    HTTPException: http_error,
    RequestValidationError: validation_error,
}
