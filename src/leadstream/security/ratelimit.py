"""Ingest limits per key: a token bucket of requests (the API refuses with 429 and ``Retry-After``).

Requests, not records, are counted, like the platform's own API limits; a request holds at most
10,000 records anyway. ``leadstream.api.ingest.IngestGuard`` takes a token before the body is read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


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
