"""The call ledger: where the API budget of a Munchkin ID is kept, so every source and node spends one budget.

The budget (``leadstream.sources.budget``) decides; the ledger only answers one atomic question
and keeps the answer: *may one more call start at ``now``?* A call is a row
``(call_id, reserved_at, finished_at, counted)`` and ``finished_at`` starts as
``reserved_at + lease_seconds``, so a call whose node died stops counting as in flight when its
lease ends. Release sets the real ``finished_at`` (or deletes the row when Marketo did not count
the call). At ``now``, with ``W`` the window:

- in flight  = calls with ``finished_at > now``
- in window  = calls with ``finished_at > now - W`` (in flight included)
- today      = calls with ``reserved_at >= day_start``

Counting a call in the window until ``W`` after it *finished* (not after it started) is what makes
the window safe against the instance's own: Marketo sees a call arrive somewhere between our
reservation and our answer, and counts it for ``W`` from there, so no server-side window can hold
more calls than ours did. A grant needs ``in_flight < max_in_flight``, ``in_window <
calls_per_window``, ``today < calls_per_day`` and no block (a 606 or 607 from the instance blocks
every node until the window passed or the day reset).

SQL (the intended SQLite / PostgreSQL implementations; one transaction per ``reserve``)::

    CREATE TABLE source_api_calls (
        munchkin_id TEXT NOT NULL, call_id TEXT PRIMARY KEY,
        reserved_at DOUBLE PRECISION NOT NULL, finished_at DOUBLE PRECISION NOT NULL);
    CREATE INDEX ON source_api_calls (munchkin_id, finished_at);
    CREATE INDEX ON source_api_calls (munchkin_id, reserved_at);
    CREATE TABLE source_api_blocks (
        munchkin_id TEXT PRIMARY KEY, blocked_until DOUBLE PRECISION NOT NULL, reason TEXT NOT NULL);

    -- reserve: serialise per Munchkin ID (SQLite: BEGIN IMMEDIATE; PostgreSQL:
    -- SELECT pg_advisory_xact_lock(hashtext(:munchkin_id))), then
    SELECT blocked_until, reason FROM source_api_blocks WHERE munchkin_id = :m AND blocked_until > :now;
    SELECT count(*) FILTER (WHERE finished_at > :now)              AS in_flight,
           count(*) FILTER (WHERE finished_at > :now - :window)    AS in_window,
           count(*) FILTER (WHERE reserved_at >= :day_start)       AS today,
           min(finished_at) FILTER (WHERE finished_at > :now - :window
                                      AND finished_at <= :now)     AS oldest_finished
      FROM source_api_calls WHERE munchkin_id = :m
       AND (finished_at > :now - :window OR reserved_at >= :day_start);
    INSERT INTO source_api_calls VALUES (:m, :call_id, :now, :now + :lease);   -- when granted
    -- release: UPDATE source_api_calls SET finished_at = :finished_at WHERE call_id = :id
    --          (DELETE … WHERE call_id = :id when the call was not counted)
    -- block:   INSERT … ON CONFLICT (munchkin_id) DO UPDATE
    --          SET blocked_until = greatest(blocked_until, excluded.blocked_until), reason = …
    -- prune (any node, now and then): DELETE WHERE reserved_at < :day_start AND finished_at <= :now - :window

Times are wall-clock seconds (``time.time()``) of the node asking; nodes' clocks must agree to
well under the window (NTP does).
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from typing import Literal, Protocol

from leadstream.store.base import CallCounts, Store

RefusalReason = Literal["blocked", "day", "in_flight", "window"]


@dataclass(frozen=True, slots=True)
class CallLimits:
    """What one reservation is checked against (the budget works these out; the ledger only compares)."""

    calls_per_window: int
    window_seconds: float
    max_in_flight: int
    calls_per_day: int
    day_start: float  # epoch seconds of the current day's 00:00 America/Chicago
    lease_seconds: float  # a call not released by then is taken as finished then


@dataclass(frozen=True, slots=True)
class Granted:
    call_id: str
    reserved_at: float


@dataclass(frozen=True, slots=True)
class Refused:
    reason: RefusalReason
    retry_at: float | None  # the earliest moment a reservation can succeed, when the ledger knows it
    detail: str = ""  # for "blocked": the code that blocked (606, 607)


@dataclass(frozen=True, slots=True)
class Usage:
    in_flight: int
    in_window: int
    today: int
    blocked_until: float | None
    blocked_reason: str | None


class CallLedger(Protocol):
    """Persistence of the budget; implementations must make ``reserve`` atomic across every node."""

    async def reserve(self, munchkin_id: str, now: float, limits: CallLimits) -> Granted | Refused: ...

    async def release(self, munchkin_id: str, call_id: str, *, finished_at: float, counted: bool) -> None: ...

    async def block(self, munchkin_id: str, until: float, reason: str) -> None: ...

    async def usage(self, munchkin_id: str, now: float, limits: CallLimits) -> Usage: ...


@dataclass(slots=True)
class _Call:
    reserved_at: float
    finished_at: float


@dataclass(slots=True)
class _Account:
    calls: dict[str, _Call] = field(default_factory=dict)  # calls that still count in the window or in flight
    day_start: float = 0.0
    today: int = 0  # calls reserved since day_start (pruned calls included)
    blocked_until: float = 0.0
    blocked_reason: str = ""


class MemoryLedger:
    """The ledger of one process (tests, a single node without a shared store). asyncio makes it atomic."""

    def __init__(self) -> None:
        self._accounts: dict[str, _Account] = {}
        self._ids = itertools.count(1)

    def _account(self, munchkin_id: str, now: float, limits: CallLimits) -> _Account:
        account = self._accounts.setdefault(munchkin_id, _Account(day_start=limits.day_start))
        if limits.day_start != account.day_start:
            account.day_start = limits.day_start
            account.today = sum(1 for call in account.calls.values() if call.reserved_at >= limits.day_start)
        horizon = now - limits.window_seconds
        for call_id in [i for i, call in account.calls.items() if call.finished_at <= horizon]:
            del account.calls[call_id]
        return account

    async def reserve(self, munchkin_id: str, now: float, limits: CallLimits) -> Granted | Refused:
        account = self._account(munchkin_id, now, limits)
        if account.blocked_until > now:
            return Refused("blocked", account.blocked_until, account.blocked_reason)
        if account.today >= limits.calls_per_day:
            return Refused("day", None)
        calls = account.calls.values()
        if sum(1 for call in calls if call.finished_at > now) >= limits.max_in_flight:
            return Refused("in_flight", None)
        if len(account.calls) >= limits.calls_per_window:  # every call kept is in the window (see _account)
            finished = [call.finished_at for call in calls if call.finished_at <= now]
            return Refused("window", min(finished) + limits.window_seconds if finished else None)
        call_id = f"{munchkin_id}/{next(self._ids)}"
        account.calls[call_id] = _Call(now, now + limits.lease_seconds)
        account.today += 1
        return Granted(call_id, now)

    async def release(self, munchkin_id: str, call_id: str, *, finished_at: float, counted: bool) -> None:
        account = self._accounts.get(munchkin_id)
        call = account.calls.get(call_id) if account else None
        if account is None or call is None:
            return  # pruned: its lease ended long ago
        if counted:
            call.finished_at = finished_at
            return
        del account.calls[call_id]
        if call.reserved_at >= account.day_start:
            account.today -= 1

    async def block(self, munchkin_id: str, until: float, reason: str) -> None:
        account = self._accounts.setdefault(munchkin_id, _Account())
        if until > account.blocked_until:
            account.blocked_until, account.blocked_reason = until, reason

    async def usage(self, munchkin_id: str, now: float, limits: CallLimits) -> Usage:
        account = self._account(munchkin_id, now, limits)
        blocked = account.blocked_until > now
        return Usage(
            in_flight=sum(1 for call in account.calls.values() if call.finished_at > now),
            in_window=len(account.calls),
            today=account.today,
            blocked_until=account.blocked_until if blocked else None,
            blocked_reason=account.blocked_reason if blocked else None,
        )


def refusal(counts: CallCounts, now: float, limits: CallLimits) -> Refused | None:
    """Why one more call may not start, given the counts at ``now`` (None: it may)."""
    if counts.blocked_until is not None and counts.blocked_until > now:
        return Refused("blocked", counts.blocked_until, counts.blocked_reason or "")
    if counts.today >= limits.calls_per_day:
        return Refused("day", None)
    if counts.in_flight >= limits.max_in_flight:
        return Refused("in_flight", None)
    if counts.in_window >= limits.calls_per_window:
        oldest = counts.oldest_finished
        return Refused("window", oldest + limits.window_seconds if oldest is not None else None)
    return None


class StoreLedger:
    """The ledger in the store (SQLite or PostgreSQL): every source of a Munchkin ID on every node
    spends one budget, and a reservation is one transaction (``Store.reserve_api_call``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def reserve(self, munchkin_id: str, now: float, limits: CallLimits) -> Granted | Refused:
        call_id = uuid.uuid4().hex
        counts, granted = await self.store.reserve_api_call(
            munchkin_id, call_id, now=now, window=limits.window_seconds, day_start=limits.day_start,
            lease_seconds=limits.lease_seconds, admit=lambda c: refusal(c, now, limits) is None,
        )  # fmt: skip
        if granted:
            return Granted(call_id, now)
        refused = refusal(counts, now, limits)
        assert refused is not None  # the store refused because admit did
        return refused

    async def release(self, munchkin_id: str, call_id: str, *, finished_at: float, counted: bool) -> None:
        await self.store.release_api_call(call_id, finished_at=finished_at, counted=counted)

    async def block(self, munchkin_id: str, until: float, reason: str) -> None:
        await self.store.block_api_calls(munchkin_id, until, reason)

    async def usage(self, munchkin_id: str, now: float, limits: CallLimits) -> Usage:
        counts = await self.store.api_call_counts(
            munchkin_id, now=now, window=limits.window_seconds, day_start=limits.day_start
        )
        blocked = counts.blocked_until is not None
        return Usage(
            counts.in_flight,
            counts.in_window,
            counts.today,
            counts.blocked_until,
            counts.blocked_reason if blocked else None,
        )
