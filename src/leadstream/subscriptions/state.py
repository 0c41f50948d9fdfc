"""A subscription's delivery state, and the failure → retry → pause → probe rules of SPEC §4.4.

The state is what survives a restart (the store keeps it as opaque JSON). The transitions are
pure functions: given the state, the subscription's settings, the time and what an attempt
brought back, they return the next state — with ``nextAttemptAt`` saying when to try again.
The sender applies them; tests can check them without any I/O.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec
from msgspec.structs import replace

StateName = Literal["active", "retrying", "paused", "deprovisioned"]
ACTIVE: Final = "active"
RETRYING: Final = "retrying"
PAUSED: Final = "paused"
DEPROVISIONED: Final = "deprovisioned"
FAILURES: Final = "failures"
MANUAL: Final = "manual"
THROTTLES_PER_FAILURE = 10  # 429/503 answers with Retry-After in a row that count as one failure


class InFlight(msgspec.Struct):
    """The batch being delivered: persisted before its first send, so a crash resends the same
    events (position range ``(cursor, upto]``) under the same id."""

    id: str
    upto: int
    count: int
    sends: int = 0  # attempts so far: the X-Leadstream-Retry-Count of the next one


class DeliveryState(msgspec.Struct, omit_defaults=True):
    cursor: int = 0  # every matching event at or below it is delivered (or dead-lettered, or expired)
    inflight: InFlight | None = None
    state: StateName = ACTIVE
    pausedReason: Literal["failures", "manual"] | None = None
    consecutiveFailures: int = 0
    retries: int = 0  # retries already sent for the head batch
    throttled: int = 0  # throttling answers in a row
    delivered: int = 0
    expired: int = 0
    expiredThrough: int = 0  # positions at or below it are past retention: counted in ``expired`` or received
    deadLettered: int = 0
    lastSuccessAt: int | None = None  # times: ms since the epoch
    lastAttemptAt: int | None = None
    lastError: str | None = None
    nextAttemptAt: int | None = None


class Transition(msgspec.Struct, frozen=True):
    """A subscription moved from one state to another (or paused for another reason): what the
    operator's log and alerts hear of, once per move — not once per attempt."""

    subscription: str
    munchkin_id: str
    before: DeliveryState
    after: DeliveryState


def moved(before: DeliveryState, after: DeliveryState) -> bool:
    return (before.state, before.pausedReason) != (after.state, after.pausedReason)


class Timing(msgspec.Struct, frozen=True):
    """The settings the rules need, in ms."""

    retry_attempts: int
    retry_interval: int
    probe_interval: int
    push_interval: int


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(DeliveryState)


def encode(state: DeliveryState) -> bytes:
    return _encoder.encode(state)


def decode(stored: bytes) -> DeliveryState:
    return _decoder.decode(stored)


# -- transitions ----------------------------------------------------------------------------------


def succeeded(s: DeliveryState, now: int) -> DeliveryState:
    """Any 2xx: active again, every failure forgotten."""
    return replace(
        s, state=ACTIVE, pausedReason=None, consecutiveFailures=0, retries=0, throttled=0,
        lastSuccessAt=now, lastAttemptAt=now, lastError=None, nextAttemptAt=None,
    )  # fmt: skip


def failed(s: DeliveryState, t: Timing, now: int, error: str) -> DeliveryState:
    """A failed attempt: retry the same batch every retry interval, at most ``retry_attempts``
    times, then pause and probe every probe interval."""
    failures = s.consecutiveFailures + 1
    base = replace(s, consecutiveFailures=failures, throttled=0, lastAttemptAt=now, lastError=error)
    if s.state == PAUSED:
        return replace(base, nextAttemptAt=now + t.probe_interval)
    retries_sent = s.retries if s.state == RETRYING else 0
    if s.state == RETRYING:
        retries_sent += 1  # the attempt that just failed was a retry
    if retries_sent >= t.retry_attempts:
        return replace(
            base, state=PAUSED, pausedReason=FAILURES, retries=retries_sent, nextAttemptAt=now + t.probe_interval
        )
    return replace(base, state=RETRYING, retries=retries_sent, nextAttemptAt=now + t.retry_interval)


def throttled(s: DeliveryState, t: Timing, now: int, retry_after_ms: int, error: str) -> DeliveryState:
    """429/503 with Retry-After: wait (bounded) without using a retry; the tenth in a row fails."""
    if s.throttled + 1 >= THROTTLES_PER_FAILURE:
        return failed(s, t, now, f"{error} ({THROTTLES_PER_FAILURE} throttling answers in a row)")
    wait = min(max(retry_after_ms, t.push_interval), t.retry_interval)
    return replace(s, throttled=s.throttled + 1, lastAttemptAt=now, lastError=error, nextAttemptAt=now + wait)


def gone(s: DeliveryState, t: Timing, now: int, error: str) -> DeliveryState:
    """410: the endpoint says it is gone for good: pause at once (probes go on)."""
    return replace(
        s, state=PAUSED, pausedReason=FAILURES, consecutiveFailures=s.consecutiveFailures + 1, throttled=0,
        lastAttemptAt=now, lastError=error, nextAttemptAt=now + t.probe_interval,
    )  # fmt: skip


def paused_by_hand(s: DeliveryState) -> DeliveryState:
    return replace(s, state=PAUSED, pausedReason=MANUAL, nextAttemptAt=None)


def resumed(s: DeliveryState) -> DeliveryState:
    """Resume means "try now": active, the head batch goes out at once."""
    return replace(s, state=ACTIVE, pausedReason=None, retries=0, throttled=0, nextAttemptAt=None)


def deprovisioned(s: DeliveryState) -> DeliveryState:
    return replace(s, state=DEPROVISIONED, pausedReason=None, inflight=None, nextAttemptAt=None)
