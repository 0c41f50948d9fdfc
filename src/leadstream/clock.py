"""Time as leadstream stores and shows it: milliseconds since the epoch, and RFC 3339 in UTC."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def rfc3339(ms: int | None) -> str | None:
    """``1764324000123`` → ``"2025-11-28T10:00:00.123Z"`` (None stays None)."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_rfc3339(*, micros: bool = False) -> str:
    """Now, to the second (the shape of Marketo's own timestamps), or to the microsecond."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micros else "%Y-%m-%dT%H:%M:%SZ")
