"""The limits of the simulated instance and the count of every call it received.

A call is *counted* (against the 20 s window and the daily quota) once it passes the limits,
unless it then fails with one of the codes Marketo does not count (601, 602, 604, 605, 608, 611).
Calls refused by the limits themselves (606, 607, 615) are not counted: the instance did no work.
The daily quota resets at 00:00 America/Chicago (Marketo's US Central day), or on ``reset_day``.

``CallStats`` keeps, per endpoint and outcome, how many calls arrived, and the highest number of
calls ever counted in one window and ever in flight at once, so tests can assert that a client
never went over a limit.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

CHICAGO = ZoneInfo("America/Chicago")
NOT_COUNTED = frozenset({"601", "602", "604", "605", "608", "611"})
RATE_LIMITED, QUOTA_EXHAUSTED, TOO_MANY_CONCURRENT = "606", "607", "615"


def chicago_day(now: float) -> date:
    """The Marketo day ``now`` belongs to."""
    return datetime.fromtimestamp(now, UTC).astimezone(CHICAGO).date()


@dataclass
class Limits:
    """Each settable while the instance runs (a test may lower one mid-way)."""

    calls_per_window: int = 100
    window_seconds: float = 20.0
    max_concurrent: int = 10
    daily_quota: int = 50_000

    def __post_init__(self) -> None:
        for name in ("calls_per_window", "max_concurrent", "daily_quota"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)!r}")
        if self.window_seconds <= 0:
            raise ValueError(f"window_seconds: must be positive, got {self.window_seconds!r}")

    def message(self, code: str) -> str:
        """Marketo's wording (606 says the window, which a client may read)."""
        if code == RATE_LIMITED:
            return f"Max rate limit '{self.calls_per_window}' exceeded with in '{self.window_seconds:g}' secs"
        if code == QUOTA_EXHAUSTED:
            return "Daily quota reached"
        return "Concurrent access limit reached"


@dataclass
class CallStats:
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)  # (endpoint, outcome) -> calls
    counted: int = 0  # calls counted against rate and quota, ever
    max_in_window: int = 0
    max_in_flight: int = 0
    token_in_query: int = 0  # calls that sent access_token as a query parameter (no longer accepted)

    def record(self, endpoint: str, outcome: str) -> None:
        self.calls[endpoint, outcome] += 1

    def outcomes(self, endpoint: str | None = None) -> Counter[str]:
        """Calls by outcome ("ok", "606", "http414", "timeout"…), for one endpoint or all."""
        found: Counter[str] = Counter()
        for (where, outcome), n in self.calls.items():
            if endpoint is None or where == endpoint:
                found[outcome] += n
        return found

    def as_json(self) -> dict[str, Any]:
        by_endpoint: dict[str, dict[str, int]] = {}
        for (endpoint, outcome), n in sorted(self.calls.items()):
            by_endpoint.setdefault(endpoint, {})[outcome] = n
        return {
            "calls": by_endpoint,
            "counted": self.counted,
            "maxInWindow": self.max_in_window,
            "maxInFlight": self.max_in_flight,
            "tokenInQuery": self.token_in_query,
        }


class InstanceLimits:
    """Admission of REST calls: at most N counted in any window, C in flight, Q per day."""

    def __init__(self, limits: Limits, stats: CallStats, now: float) -> None:
        self.limits, self.stats = limits, stats
        self._window: deque[float] = deque()  # arrival times of counted calls, oldest first
        self.in_flight = 0
        self.quota_used = 0
        self._day = chicago_day(now)

    def refusal(self, now: float) -> str | None:
        """The code a call arriving now is refused with (615, 607 or 606), or None."""
        self._roll_day(now)
        window = self._window
        while window and window[0] <= now - self.limits.window_seconds:
            window.popleft()
        if self.in_flight >= self.limits.max_concurrent:
            return TOO_MANY_CONCURRENT
        if self.quota_used >= self.limits.daily_quota:
            return QUOTA_EXHAUSTED
        if len(window) >= self.limits.calls_per_window:
            return RATE_LIMITED
        return None

    def count(self, now: float) -> None:
        self._window.append(now)
        self.quota_used += 1
        self.stats.counted += 1
        self.stats.max_in_window = max(self.stats.max_in_window, len(self._window))

    def enter(self) -> None:
        self.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.in_flight)

    def leave(self) -> None:
        self.in_flight -= 1

    def in_window(self, now: float) -> int:
        return sum(1 for at in self._window if at > now - self.limits.window_seconds)

    def reset_day(self, now: float) -> None:
        """The 00:00 America/Chicago reset, now."""
        self.quota_used = 0
        self._day = chicago_day(now)

    def _roll_day(self, now: float) -> None:
        today = chicago_day(now)
        if today != self._day:
            self.reset_day(now)
