"""The API budget of one Munchkin ID: the ledger's limits, the Chicago day across DST, reactions to Marketo's codes."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadstream.sources.budget import (
    AUTH_RETRY,
    BACKOFF_CAP,
    RECOVER_AFTER,
    ApiBudget,
    BudgetLimits,
    ShareSpent,
    backoff_delay,
    day_start,
    fewer_in_flight,
    next_reset,
    react,
)
from leadstream.sources.ledger import CallLimits, Granted, MemoryLedger, Refused
from leadstream.sources.marketo.errors import (
    AuthFailed,
    QuotaExhausted,
    RateLimited,
    RequestRejected,
    TooManyConcurrent,
    Transient,
    classify,
)

MUNCHKIN = "123-ABC-456"
CHICAGO = ZoneInfo("America/Chicago")


def chicago(*args: int) -> float:
    return datetime(*args, tzinfo=CHICAGO).timestamp()  # type: ignore[misc]


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- the Marketo day ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("day", "hours"), [((2026, 3, 7), 24), ((2026, 3, 8), 23), ((2026, 11, 1), 25), ((2026, 11, 2), 24)]
)
def test_a_marketo_day_runs_from_midnight_to_midnight_in_chicago(day: tuple[int, int, int], hours: int):
    midnight = chicago(*day)
    assert day_start(midnight) == midnight and day_start(midnight + 3600 * 12) == midnight
    assert next_reset(midnight) == midnight + hours * 3600  # DST days have 23 and 25 hours
    assert next_reset(midnight - 1) == midnight and day_start(midnight - 1) < midnight
    local = datetime.fromtimestamp(next_reset(midnight), UTC).astimezone(CHICAGO)
    assert (local.hour, local.minute) == (0, 0)


def test_the_reset_is_at_0500_or_0600_utc():
    assert datetime.fromtimestamp(next_reset(chicago(2026, 7, 1, 12)), UTC).hour == 5  # CDT
    assert datetime.fromtimestamp(next_reset(chicago(2026, 12, 1, 12)), UTC).hour == 6  # CST


async def test_the_share_is_spent_then_granted_again_after_the_reset_across_a_dst_change():
    clock = FakeClock(chicago(2026, 3, 7, 23, 0))  # the night the clocks go forward
    budget = ApiBudget(MUNCHKIN, MemoryLedger(), BudgetLimits(daily_quota=10, quota_share=0.5), clock=clock)
    for _ in range(5):
        async with budget.call():
            pass
    with pytest.raises(ShareSpent) as spent:
        async with budget.call():
            pass
    assert spent.value.resets_at == chicago(2026, 3, 8) and "5 calls" in str(spent.value)
    status = await budget.status()
    assert (status.calls_today, status.call_budget, status.resets_at) == (5, 5, chicago(2026, 3, 8))
    clock.now = chicago(2026, 3, 8) - 1
    with pytest.raises(ShareSpent):
        async with budget.call():
            pass
    clock.now = chicago(2026, 3, 8)
    async with budget.call():
        pass
    status = await budget.status()
    assert status.calls_today == 1 and status.resets_at == chicago(2026, 3, 9)
    assert status.resets_at - chicago(2026, 3, 8) == 23 * 3600


# -- the ledger ----------------------------------------------------------------------------------------
def limits(**overrides: float) -> CallLimits:
    values = {
        "calls_per_window": 3,
        "window_seconds": 20.0,
        "max_in_flight": 10,
        "calls_per_day": 100,
        "day_start": 0.0,
        "lease_seconds": 300.0,
    } | overrides
    return CallLimits(**values)  # type: ignore[arg-type]


async def test_the_window_counts_a_call_until_a_window_after_it_finished():
    ledger = MemoryLedger()
    granted = [await ledger.reserve(MUNCHKIN, 100.0, limits()) for _ in range(3)]
    assert all(isinstance(g, Granted) for g in granted)
    refused = await ledger.reserve(MUNCHKIN, 101.0, limits())
    assert refused == Refused("window", None)  # all three in flight: when a slot frees is not known yet
    await ledger.release(MUNCHKIN, granted[0].call_id, finished_at=105.0, counted=True)  # type: ignore[union-attr]
    assert await ledger.reserve(MUNCHKIN, 110.0, limits()) == Refused("window", 125.0)
    assert await ledger.reserve(MUNCHKIN, 124.9, limits()) == Refused("window", 125.0)
    assert isinstance(await ledger.reserve(MUNCHKIN, 125.1, limits()), Granted)


async def test_uncounted_calls_are_refunded_and_lost_calls_end_with_their_lease():
    ledger = MemoryLedger()
    first = await ledger.reserve(MUNCHKIN, 0.0, limits(max_in_flight=1, lease_seconds=30))
    assert isinstance(first, Granted)
    assert await ledger.reserve(MUNCHKIN, 1.0, limits(max_in_flight=1)) == Refused("in_flight", None)
    await ledger.release(MUNCHKIN, first.call_id, finished_at=2.0, counted=False)
    usage = await ledger.usage(MUNCHKIN, 2.0, limits())
    assert (usage.today, usage.in_flight, usage.in_window) == (0, 0, 0)
    lost = await ledger.reserve(MUNCHKIN, 3.0, limits(max_in_flight=1, lease_seconds=30))
    assert isinstance(lost, Granted)  # its node dies: it is never released
    assert await ledger.reserve(MUNCHKIN, 32.9, limits(max_in_flight=1)) == Refused("in_flight", None)
    assert isinstance(await ledger.reserve(MUNCHKIN, 33.1, limits(max_in_flight=1, calls_per_window=5)), Granted)


async def test_a_block_stops_every_budget_of_the_munchkin_id():
    ledger = MemoryLedger()
    await ledger.block(MUNCHKIN, 50.0, "606")
    assert await ledger.reserve(MUNCHKIN, 10.0, limits()) == Refused("blocked", 50.0, "606")
    assert isinstance(await ledger.reserve("234-BCD-567", 10.0, limits()), Granted)  # another instance
    assert isinstance(await ledger.reserve(MUNCHKIN, 50.0, limits()), Granted)


# Operations on two budgets' shared ledger: (delay before, action, which call to release, counted)
operation = st.tuples(st.floats(0, 3), st.sampled_from(["reserve", "release"]), st.integers(0, 50), st.booleans())


@settings(max_examples=150, deadline=None)
@given(st.lists(operation, min_size=1, max_size=120), st.integers(1, 6), st.integers(1, 4), st.integers(1, 30))
async def test_the_ledger_never_grants_past_its_limits(ops, per_window, in_flight, per_day):
    """Whatever the order of reservations and releases: never more than N in the window (counted from the
    reservation to a window after the finish), C in flight, Q in the day."""
    ledger, now, window = MemoryLedger(), 0.0, 5.0
    checked = limits(calls_per_window=per_window, window_seconds=window, max_in_flight=in_flight, calls_per_day=per_day)
    calls: dict[str, list[float | None]] = {}  # call id -> [reserved_at, finished_at or None]
    for delay, action, pick, counted in ops:
        now += delay
        if action == "reserve":
            outcome = await ledger.reserve(MUNCHKIN, now, checked)
            if isinstance(outcome, Granted):
                calls[outcome.call_id] = [now, None]
                alive = [c for c in calls.values() if c[1] is None or c[1] > now - window]
                assert len(alive) <= per_window
                assert sum(1 for c in calls.values() if c[1] is None) <= in_flight
                assert len(calls) <= per_day
        elif open_calls := [i for i, c in calls.items() if c[1] is None]:
            call_id = open_calls[pick % len(open_calls)]
            await ledger.release(MUNCHKIN, call_id, finished_at=now, counted=counted)
            if counted:
                calls[call_id][1] = now
            else:
                del calls[call_id]


# -- the budget ----------------------------------------------------------------------------------------
async def test_a_call_waits_for_the_window_then_goes():
    budget = ApiBudget(MUNCHKIN, MemoryLedger(), BudgetLimits(calls_per_20s=2, window_seconds=0.3))
    finished = []
    for _ in range(2):
        async with budget.call():
            pass
        finished.append(budget.clock())
    async with budget.call() as third:
        pass
    assert third.reserved_at >= finished[0] + 0.3  # a window after the first call finished, not before


async def test_concurrent_callers_never_exceed_the_slots():
    limits = BudgetLimits(max_concurrent=3, calls_per_20s=1000)
    budget = ApiBudget(MUNCHKIN, MemoryLedger(), limits, retry_interval=0.01)
    inside, most = 0, 0

    async def one() -> None:
        nonlocal inside, most
        async with budget.call():
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.02)
            inside -= 1

    await asyncio.gather(*(one() for _ in range(20)))
    assert most == 3 and (await budget.status()).calls_today == 20


async def test_settling_a_call_with_what_marketo_answered():
    clock = FakeClock(chicago(2026, 11, 28, 10))
    ledger = MemoryLedger()
    budget = ApiBudget(MUNCHKIN, ledger, BudgetLimits(), clock=clock, abandoned_hold=30)

    async def answer(error: Exception) -> None:
        with pytest.raises(type(error)):
            async with budget.call():
                raise error

    for code in ("601", "602", "604", "605", "608", "611"):
        await answer(classify(code, "…"))
    assert (await budget.status()).calls_today == 0  # Marketo did not count them: refunded
    await answer(classify("713", "Transient Error"))
    assert (await budget.status()).calls_today == 1

    await answer(Transient("timeout", "no answer within 30 s"))
    status = await budget.status()
    assert status.in_flight == 1  # the instance may still work on it: its slot stays busy a while
    clock.now += 31
    assert (await budget.status()).in_flight == 0

    await answer(TooManyConcurrent("615", "Concurrent access limit reached"))
    assert budget.max_in_flight == 5
    for _ in range(RECOVER_AFTER):
        async with budget.call():
            pass
    assert budget.max_in_flight == 6

    await answer(RateLimited("606", "Max rate limit '100' exceeded with in '20' secs"))
    status = await budget.status()
    assert status.blocked_reason == "606" and status.blocked_until == clock.now + 20

    clock.now += 21
    await answer(QuotaExhausted("607", "Daily quota reached"))
    with pytest.raises(ShareSpent) as spent:  # 607 from the instance: every call waits for the reset
        async with budget.call():
            pass
    assert spent.value.resets_at == chicago(2026, 11, 29)


async def test_a_606_block_is_waited_out_by_the_next_call():
    budget = ApiBudget(MUNCHKIN, MemoryLedger(), BudgetLimits())
    with pytest.raises(RateLimited):
        async with budget.call():
            raise RateLimited("606", "Max rate limit '100' exceeded with in '0.2' secs")
    blocked_until = (await budget.status()).blocked_until
    assert blocked_until is not None
    async with budget.call() as granted:
        pass
    assert granted.reserved_at >= blocked_until


def test_limits_are_checked_with_a_message_naming_the_field():
    with pytest.raises(ValueError, match="quotaShare"):
        BudgetLimits(quota_share=0)
    with pytest.raises(ValueError, match="calls_per_20s"):
        BudgetLimits(calls_per_20s=0)
    assert BudgetLimits(daily_quota=50_000, quota_share=0.5).calls_per_day == 25_000


# -- pure rules ------------------------------------------------------------------------------------------
@given(st.integers(0, 1000), st.integers(0, 2**32))
def test_backoff_grows_with_jitter_and_stays_under_five_minutes(attempt: int, seed: int):
    delay = backoff_delay(attempt, random.Random(seed))
    ceiling = min(BACKOFF_CAP, 2.0 ** min(attempt, 64))
    assert ceiling / 2 <= delay <= ceiling <= 300


def test_backoff_is_deterministic_by_rng_and_refuses_a_negative_attempt():
    assert backoff_delay(3, random.Random(1)) == backoff_delay(3, random.Random(1))
    assert 4 <= backoff_delay(3, random.Random(1)) <= 8
    with pytest.raises(ValueError, match="attempt"):
        backoff_delay(-1, random.Random())


def test_fewer_in_flight_halves_down_to_one():
    assert [fewer_in_flight(n) for n in (10, 5, 2, 1)] == [5, 2, 1, 1]


def test_each_error_has_its_documented_reaction():
    now, rng = chicago(2026, 11, 28, 10), random.Random(0)
    cases = {
        "606": ("throttled", now + 20),
        "607": ("quota_exhausted", chicago(2026, 11, 29)),
        "603": ("failing", now + AUTH_RETRY),
        "1003": ("failing", now + AUTH_RETRY),
    }
    messages = {"606": "Max rate limit '100' exceeded with in '20' secs"}
    for code, (state, retry_at) in cases.items():
        reaction = react(classify(code, messages.get(code, "…")), now=now, attempt=0, rng=rng)
        assert (reaction.state, reaction.retry_at) == (state, retry_at), code
        assert reaction.last_error.startswith(f"{code} ")
    for code in ("604", "608", "611", "713", "614", "719", "502"):
        reaction = react(classify(code, "…"), now=now, attempt=10, rng=rng)
        assert reaction.state == "running" and now + 150 <= reaction.retry_at <= now + 300
    assert react(TooManyConcurrent("615", "…"), now=now, attempt=0, rng=rng).state == "throttled"
    assert react(AuthFailed("HTTP 401", "Bad client credentials"), now=now, attempt=0, rng=rng).state == "failing"
    assert react(ShareSpent(MUNCHKIN, 5, now + 60), now=now, attempt=0, rng=rng).retry_at == now + 60
    assert isinstance(classify("1003", "x"), RequestRejected)
    with pytest.raises(TypeError):
        react(OSError("disk"), now=now, attempt=0, rng=rng)
