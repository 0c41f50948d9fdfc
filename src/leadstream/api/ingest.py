"""POST /v1/streams/{stream}/events — the hot path, a plain Starlette route decoding with msgspec.

Body → raw records (not decoded) → each record validated on its own → one append (durable on
return) → {"accepted", "duplicates", "rejected"}. A pydantic body would cost 3× more here.
"""

from __future__ import annotations

import asyncio
import math
import re
from typing import Any

import orjson
from prometheus_client import Counter
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from leadstream.api.auth import authenticate
from leadstream.api.deps import runtime_of
from leadstream.api.problems import problem
from leadstream.errors import LeadstreamError, NotFound
from leadstream.events import MAX_BODY_BYTES, MAX_RECORDS, STREAMS, TooLarge, split_records, validate_records
from leadstream.security.principals import restrict_to_tenants

JSON_TYPES = {"application/json", ""}
INGEST_PATH = re.compile(r"/v1/streams/[^/]+/events")
NDJSON_TYPES = {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}

INGESTED = Counter("leadstream_ingested_events_total", "Events stored in the log", ["stream"])
INGEST_DUPLICATES = Counter("leadstream_ingest_duplicates_total", "Records already in the log", ["stream"])
INGEST_REJECTED = Counter("leadstream_ingest_rejected_total", "Records that failed validation", ["stream"])


class UnsupportedMediaType(LeadstreamError):
    status = 415
    title = "Unsupported Media Type"


class BodyTimeout(LeadstreamError):
    status = 408
    title = "Request Timeout"


async def _read_body(request: Request, timeout: float) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise TooLarge(f"the body is {declared} bytes; the limit is {MAX_BODY_BYTES} bytes (10 MiB)")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):  # a body trickling in must not hold the connection forever
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise TooLarge(f"the body is over the limit of {MAX_BODY_BYTES} bytes (10 MiB)")
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTimeout(
            f"the body did not arrive within {timeout:g} s (LEADSTREAM_HTTP_BODY_TIMEOUT); nothing was stored"
        ) from None
    return b"".join(chunks)


async def ingest(request: Request) -> Response:
    services = runtime_of(request)
    principal = await authenticate(request)
    stream = request.path_params["stream"]
    if stream not in STREAMS:
        raise NotFound(f"there is no stream {stream!r}; streams: {', '.join(STREAMS)}")
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in JSON_TYPES and media_type not in NDJSON_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type {media_type!r} is not accepted: send application/json (an array) or application/x-ndjson"
        )
    body = await _read_body(request, services.settings.http_body_timeout)
    records = split_records(body, ndjson=media_type in NDJSON_TYPES)
    events, rejected = validate_records(services.validator, stream, records)
    events, rejected = restrict_to_tenants(principal, events, rejected)
    duplicates = await services.store.append(events) if events else []
    accepted = len(events) - len(duplicates)
    INGESTED.labels(stream).inc(accepted)
    INGEST_DUPLICATES.labels(stream).inc(len(duplicates))
    INGEST_REJECTED.labels(stream).inc(len(rejected))
    body = orjson.dumps(
        {
            "accepted": accepted,
            "duplicates": len(duplicates),
            "rejected": [{"index": r.index, "errors": r.errors} for r in rejected],
        }
    )
    # A request made only of duplicates is a retry that already succeeded: 200, not 422.
    status = 422 if not events and rejected else 200
    return Response(body, status_code=status, media_type="application/json")


class IngestGuard:
    """ASGI middleware: scope and rate limit for the ingest route (401/403/429 problem+json) — all
    before the body is read, so a refused request costs nothing and stores nothing (the producer
    sends it again, and ingest is idempotent). The operator key is not limited."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not INGEST_PATH.fullmatch(scope["path"]):
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        try:
            principal = (await authenticate(connection)).require("ingest")
            limiter = runtime_of(connection).rate_limiter
        except LeadstreamError as exc:
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            await problem(exc.status, exc.title, exc.detail, headers)(scope, receive, send)
            return
        wait = 0.0 if principal.is_operator else limiter.wait(principal.key_id)
        if wait > 0:
            retry_after = str(max(1, math.ceil(wait)))
            detail = f"this API key is over its ingest rate ({limiter.rate:g} requests/s); retry after {retry_after} s"
            await problem(429, "Too Many Requests", detail, {"Retry-After": retry_after})(scope, receive, send)
            return
        await self.app(scope, receive, send)


# The route is plain Starlette, so FastAPI cannot describe it: this is its OpenAPI entry.
_result = {
    "type": "object",
    "required": ["accepted", "duplicates", "rejected"],
    "properties": {
        "accepted": {"type": "integer", "description": "records stored"},
        "duplicates": {"type": "integer", "description": "records whose key is already in the log (not stored again)"},
        "rejected": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"index": {"type": "integer"}, "errors": {"type": "array", "items": {"type": "string"}}},
            },
        },
    },
}
_problem = {"application/problem+json": {"schema": {"type": "object"}}}
OPENAPI_PATH: dict[str, Any] = {
    "post": {
        "tags": ["ingest"],
        "summary": "Publish events into a stream",
        "description": (
            "A JSON array of records, or NDJSON (Content-Type: application/x-ndjson). At most 10 MiB and "
            f"{MAX_RECORDS} records. Each record is validated on its own; the good ones are stored (durably: the "
            "answer comes after fsync) even when others are rejected. A record whose key is already in the log "
            "counts as a duplicate and is not stored again."
        ),
        "operationId": "publish_events",
        "security": [{"bearer": []}],
        "parameters": [
            {"name": "stream", "in": "path", "required": True, "schema": {"type": "string", "enum": list(STREAMS)}}
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
                "application/x-ndjson": {"schema": {"type": "string"}},
            },
        },
        "responses": {
            "200": {
                "description": "some or all records accepted",
                "content": {"application/json": {"schema": _result}},
            },
            "400": {"description": "the body does not parse (the detail says where)", "content": _problem},
            "401": {"description": "no or wrong API key", "content": _problem},
            "404": {"description": "no such stream", "content": _problem},
            "413": {"description": "over 10 MiB or 10,000 records", "content": _problem},
            "415": {"description": "wrong Content-Type", "content": _problem},
            "422": {"description": "every record rejected", "content": {"application/json": {"schema": _result}}},
        },
    }
}
