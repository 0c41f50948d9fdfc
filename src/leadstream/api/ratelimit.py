"""Ingest limits per key: a token bucket of requests, refused with 429 and ``Retry-After``.

``IngestGuard`` is a plain ASGI middleware in front of ``POST /v1/streams/{stream}/events``: it
identifies the key, checks the ``ingest`` scope and takes a token — all before the body is read,
so a refused request costs nothing and stores nothing (the producer sends it again, and ingest is
idempotent). Requests, not records, are counted, like the platform's own API limits; a request
holds at most 10,000 records anyway. The operator key is not limited.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from leadstream.api.auth import authenticate
from leadstream.api.problems import problem
from leadstream.errors import LeadstreamError

INGEST_PATH = re.compile(r"/v1/streams/[^/]+/events")


@dataclass(slots=True)
class TokenBucket:
    rate: float  # tokens per second
    burst: float  # capacity
    tokens: float = field(default=-1.0)
    updated: float = 0.0

    def take(self, now: float) -> float:
        """0 when a token was taken, else the seconds until one will be there."""
        if self.tokens < 0:
            self.tokens, self.updated = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class RateLimiter:
    """One bucket per key id; ``rate`` 0 means no limit."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._buckets: dict[str, TokenBucket] = {}

    def wait(self, key_id: str) -> float:
        """0 to go ahead, else how many seconds to wait."""
        if self.rate <= 0:
            return 0.0
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = TokenBucket(self.rate, self.burst)
        return bucket.take(time.monotonic())


class IngestGuard:
    """ASGI middleware: scope and rate limit for the ingest route (401/403/429 problem+json)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not INGEST_PATH.fullmatch(scope["path"]):
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        security = getattr(connection.app.state, "security", None)
        try:
            principal = authenticate(connection).require("ingest")
        except LeadstreamError as exc:
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            await problem(exc.status, exc.title, exc.detail, headers)(scope, receive, send)
            return
        wait = 0.0 if principal.is_operator or security is None else security.rate_limiter.wait(principal.key_id)
        if wait > 0:
            retry_after = str(max(1, math.ceil(wait)))
            detail = f"this API key is over its ingest rate ({security.rate_limiter.rate:g} requests/s); retry after {retry_after} s"
            await problem(429, "Too Many Requests", detail, {"Retry-After": retry_after})(scope, receive, send)
            return
        await self.app(scope, receive, send)
