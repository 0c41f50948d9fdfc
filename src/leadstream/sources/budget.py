"""The API budget of one Munchkin ID, and the pure rules for Marketo's limits and errors.

Marketo limits an instance, across every integration using it, to 100 calls in any 20 s window,
10 calls in flight and a daily quota (50,000 by default) that resets at 00:00 America/Chicago.
leadstream may spend ``quotaShare × dailyQuota`` of it per day, shared by every source of the
instance on every node: so the budget keeps its counts in a ``CallLedger`` (the store's, in the
product; ``MemoryLedger`` in one process) and every REST call holds a reservation from it:

    async with budget.call():      # waits for the window and a free slot; ShareSpent when the day's share is gone
        ...one HTTP call...

Leaving the block settles the call with what Marketo answered (the client raises its errors
inside): a call Marketo did not count is refunded; 606 blocks every node until the instance's
window has passed; 607 blocks until the reset; 615 halves the calls this node keeps in flight (one
more is allowed back after ``RECOVER_AFTER`` answered calls); a timeout keeps its slot busy for
``abandoned_hold`` more seconds, because the instance may still be working on it.

The rest is pure (no I/O, clock and randomness passed in): ``day_start``/``next_reset`` (zoneinfo,
so DST days of 23 and 25 hours are right), ``backoff_delay`` (exponential, jittered, capped at 5
minutes) and ``react``, the table from an error to the source's next state and retry time.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as day_time
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

from leadstream.errors import LeadstreamError
from leadstream.sources.ledger import CallLedger, CallLimits, Granted
from leadstream.sources.marketo.errors import (
    AuthFailed,
    MarketoError,
    QuotaExhausted,
    RateLimited,
    TooManyConcurrent,
    Transient,
)

MARKETO_DAY = ZoneInfo("America/Chicago")
BACKOFF_CAP = 300.0  # seconds: transient errors are retried at least every 5 minutes
AUTH_RETRY = 300.0  # seconds between attempts while credentials are refused
RECOVER_AFTER = 20  # answered calls after a 615 before one more call may be in flight again
SourceState = Literal["running", "throttled", "quota_exhausted", "failing"]


# -- pure rules ------------------------------------------------------------------------------------
def day_start(now: float) -> float:
    """Epoch seconds of 00:00 America/Chicago on the Marketo day of ``now``."""
    local = datetime.fromtimestamp(now, UTC).astimezone(MARKETO_DAY)
    return datetime.combine(local.date(), day_time(0), MARKETO_DAY).timestamp()


def next_reset(now: float) -> float:
    """Epoch seconds of the next 00:00 America/Chicago (23 or 25 hours after the last one on DST days)."""
    local = datetime.fromtimestamp(now, UTC).astimezone(MARKETO_DAY)
    return datetime.combine(local.date() + timedelta(days=1), day_time(0), MARKETO_DAY).timestamp()


def backoff_delay(attempt: int, rng: random.Random, *, base: float = 1.0, cap: float = BACKOFF_CAP) -> float:
    """Seconds before retry ``attempt`` (0 = the first retry): ``base × 2^attempt`` capped at ``cap``,
    then jittered into its upper half, so retries of many sources spread out but never wait past the cap."""
    if attempt < 0:
        raise ValueError(f"attempt: 0 or more, got {attempt}")
    ceiling = min(cap, base * 2 ** min(attempt, 64))
    return rng.uniform(ceiling / 2, ceiling)


def fewer_in_flight(limit: int) -> int:
    """After a 615: half as many calls in flight (at least one)."""
    return max(1, limit // 2)


def more_in_flight(limit: int, maximum: int) -> int:
    return min(maximum, limit + 1)


@dataclass(frozen=True, slots=True)
class Reaction:
    state: SourceState
    retry_at: float  # epoch seconds
    last_error: str  # Marketo's code and message


class ShareSpent(LeadstreamError):
    """leadstream's share of the day's quota is spent (by the sources of this Munchkin ID).

    ``resets_at``: the next 00:00 America/Chicago, or the end of a 607 block.
    """

    status = 429
    title = "Too Many Requests"

    def __init__(self, munchkin_id: str, calls: int, resets_at: float) -> None:
        super().__init__(
            f"{munchkin_id}: today's share of the API quota ({calls} calls) is spent until "
            f"{datetime.fromtimestamp(resets_at, UTC):%Y-%m-%dT%H:%M:%SZ}"
        )
        self.resets_at = resets_at


def react(error: Exception, *, now: float, attempt: int, rng: random.Random) -> Reaction:
    """What a source does after ``error`` (its ``attempt``-th failure in a row, from 0): SPEC §10.1's table.

    606 → throttled until the window passed; 607 or the share spent → quota_exhausted until the
    reset; 615 → throttled briefly (the budget already lowered the calls in flight); transient →
    backoff with jitter, capped at 5 minutes; refused credentials, 603 and calls Marketo rejects
    as made → failing, retried every 5 minutes.
    """
    if isinstance(error, RateLimited):
        return Reaction("throttled", now + error.retry_after, str(error))
    if isinstance(error, QuotaExhausted):
        return Reaction("quota_exhausted", next_reset(now), str(error))
    if isinstance(error, ShareSpent):
        return Reaction("quota_exhausted", error.resets_at, str(error))
    if isinstance(error, TooManyConcurrent):
        return Reaction("throttled", now + backoff_delay(attempt, rng, cap=20.0), str(error))
    if isinstance(error, Transient):
        return Reaction("running", now + backoff_delay(attempt, rng), str(error))
    if isinstance(error, (AuthFailed, MarketoError)):
        return Reaction("failing", now + AUTH_RETRY, str(error))
    raise TypeError(f"react: {type(error).__name__} is not a Marketo error or a spent share")


# -- the budget ------------------------------------------------------------------------------------
class CallBudget(Protocol):
    """What the REST client needs: one reservation around every call, so no call can bypass the budget."""

    def call(self) -> AbstractAsyncContextManager[Any]: ...


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    """The instance's documented limits and leadstream's share of its quota (SPEC §10.1 source fields)."""

    calls_per_20s: int = 100
    max_concurrent: int = 10
    daily_quota: int = 50_000
    quota_share: float = 0.5
    window_seconds: float = 20.0  # Marketo's is 20 s; settable so tests need not wait for it

    def __post_init__(self) -> None:
        for name in ("calls_per_20s", "max_concurrent", "daily_quota"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)!r}")
        if not 0 < self.quota_share <= 1:
            raise ValueError(f"quotaShare: a share in (0, 1], got {self.quota_share!r}")
        if self.window_seconds <= 0:
            raise ValueError(f"window_seconds: must be positive, got {self.window_seconds!r}")

    @property
    def calls_per_day(self) -> int:
        return math.floor(self.daily_quota * self.quota_share)


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    calls_today: int
    call_budget: int  # calls per day leadstream may spend
    resets_at: float
    in_flight: int
    in_window: int
    max_in_flight: int  # this node's limit now (lower after a 615)
    blocked_until: float | None
    blocked_reason: str | None  # "606" (throttled) or "607" (quota exhausted)


class ApiBudget:
    """The budget of one Munchkin ID on this node, over a ledger shared with the others (module docstring)."""

    def __init__(
        self,
        munchkin_id: str,
        ledger: CallLedger,
        limits: BudgetLimits = BudgetLimits(),
        *,
        clock: Callable[[], float] = time.time,
        lease_seconds: float = 330.0,  # longer than any call may take (Marketo: 300 s for a paging token)
        abandoned_hold: float = 30.0,
        retry_interval: float = 0.05,  # how often a waiting call asks the ledger again when it cannot know when
        quota_probe: float = math.inf,  # after a 607, calls may start again this soon (before the reset) to probe
    ) -> None:
        self.munchkin_id, self.ledger, self.limits = munchkin_id, ledger, limits
        self.clock, self.lease_seconds, self.abandoned_hold = clock, lease_seconds, abandoned_hold
        self.retry_interval, self.quota_probe = retry_interval, quota_probe
        self.max_in_flight = limits.max_concurrent
        self._answered_since_615 = 0
        self._wakeup = asyncio.Event()

    def _call_limits(self, now: float) -> CallLimits:
        limits = self.limits
        return CallLimits(
            limits.calls_per_20s,
            limits.window_seconds,
            self.max_in_flight,
            limits.calls_per_day,
            day_start(now),
            self.lease_seconds,
        )

    def call(self) -> AbstractAsyncContextManager[Granted]:
        return self._call()

    @asynccontextmanager
    async def _call(self) -> AsyncIterator[Granted]:
        granted = await self._reserve()
        try:
            yield granted
        except BaseException as exc:
            await self._settle(granted, exc)
            raise
        await self._settle(granted, None)

    async def _reserve(self) -> Granted:
        """Waits for the window, a free slot or a 606 block to pass; raises ShareSpent when today's share is spent."""
        while True:
            now = self.clock()
            outcome = await self.ledger.reserve(self.munchkin_id, now, self._call_limits(now))
            if isinstance(outcome, Granted):
                return outcome
            if outcome.reason == "day" or outcome.detail == "607":
                resets_at = outcome.retry_at if outcome.detail == "607" and outcome.retry_at else next_reset(now)
                raise ShareSpent(self.munchkin_id, self.limits.calls_per_day, resets_at)
            wait = outcome.retry_at - now if outcome.retry_at is not None else self.retry_interval
            await self._wait(min(max(wait, 0.001), self.limits.window_seconds))

    async def _wait(self, seconds: float) -> None:
        """Sleep, or less when a call of this node finishes (calls of other nodes are seen at the next ask)."""
        with suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), seconds)

    async def _settle(self, granted: Granted, error: BaseException | None) -> None:
        now = self.clock()
        counted = not (isinstance(error, MarketoError) and not error.counted)
        timed_out = isinstance(error, Transient) and error.code == "timeout"
        abandoned = timed_out or isinstance(error, asyncio.CancelledError)
        # A call given up on may still run on the instance: keep its slot (and its window place) a while.
        finished_at = now + self.abandoned_hold if abandoned else now
        await self.ledger.release(self.munchkin_id, granted.call_id, finished_at=finished_at, counted=counted)
        if isinstance(error, RateLimited):
            await self.ledger.block(self.munchkin_id, now + error.retry_after, "606")
        elif isinstance(error, QuotaExhausted):
            await self.ledger.block(self.munchkin_id, min(next_reset(now), now + self.quota_probe), "607")
        elif isinstance(error, TooManyConcurrent):
            self.max_in_flight, self._answered_since_615 = fewer_in_flight(self.max_in_flight), 0
        elif error is None and self.max_in_flight < self.limits.max_concurrent:
            self._answered_since_615 += 1
            if self._answered_since_615 >= RECOVER_AFTER:
                self.max_in_flight = more_in_flight(self.max_in_flight, self.limits.max_concurrent)
                self._answered_since_615 = 0
        self._wakeup.set()
        self._wakeup = asyncio.Event()

    async def status(self) -> BudgetStatus:
        now = self.clock()
        usage = await self.ledger.usage(self.munchkin_id, now, self._call_limits(now))
        return BudgetStatus(
            usage.today,
            self.limits.calls_per_day,
            next_reset(now),
            usage.in_flight,
            usage.in_window,
            self.max_in_flight,
            usage.blocked_until,
            usage.blocked_reason,
        )
