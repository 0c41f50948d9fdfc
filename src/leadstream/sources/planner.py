"""The poll planner (pure): when each type group of a source is polled next, from the day's budget.

Model. A *group* is at most 10 activity type ids read by one Get Lead Activities chain (Delete
Lead, 37, is read by Get Deleted Leads: a group of its own, ``DELETED_LEADS``). A poll of a group
costs as many calls as it reads pages (at least one). A group that had data on its last poll
*wants* to be polled every ``pollIntervalMs``; one that came back empty ``k`` times in a row wants
``pollIntervalMs × 2^k``, the doubling capped at ``max_backoff`` (8×). What the budget affords is
spread evenly over what is left of the Marketo day::

    affordable = min((calls_left - reserve_calls) / seconds_until_reset, calls_per_window / window_seconds)
    wanted     = Σ_groups  calls_per_poll / wanted_interval
    stretch    = max(1, wanted / affordable)      # every interval × stretch: spend = affordable
    interval   = wanted_interval × stretch

So the share is never planned past (the budget refuses beyond it anyway), priorities between
groups are kept, and calls a quiet morning did not spend raise ``affordable`` later in the day.
The plan is recomputed after every poll, so a poll that took more pages than expected lowers the
rate at once.

Numbers: 50,000 × 0.5 = 25,000 calls/day, minus 10 in reserve, over 86,400 s: 0.289 calls/s.

- 8 groups (the 73 standard types besides Delete Lead), all with data, one page per poll,
  ``pollIntervalMs`` 5000: wanted 1.6 calls/s, stretch 5.53, every group polled every 27.7 s;
  expected delay p50 13.9 s, p99 27.5 s (with 0.1 s per call).
- 2 of the 8 with data, 6 empty for 3+ polls (wanted 40 s): wanted 0.55 calls/s, stretch 1.90,
  active groups every 9.5 s, empty ones every 76 s; activities of the active groups p50 4.9 s,
  p99 9.5 s.

``expected_freshness`` computes such figures for a plan and the activity rates per group (the
benchmark compares them with what it measures): an activity waits for the next poll of its group,
uniformly up to the group's interval (arrivals are independent of polls), plus the time to read
the pages before its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

MAX_TYPE_IDS = 10
DELETE_LEAD = 37
DELETED_LEADS = "deletedLeads"  # the key of the Get Deleted Leads group


def type_groups(type_ids: Iterable[int], size: int = MAX_TYPE_IDS) -> list[tuple[int, ...]]:
    """The instance's activity types, in id order, in groups of at most ``size`` (Delete Lead left out)."""
    if not 1 <= size <= MAX_TYPE_IDS:
        raise ValueError(f"size: between 1 and {MAX_TYPE_IDS} type ids per group, got {size}")
    ids = sorted(set(type_ids) - {DELETE_LEAD})
    return [tuple(ids[i : i + size]) for i in range(0, len(ids), size)]


def group_key(type_ids: Sequence[int]) -> str:
    return ",".join(str(t) for t in type_ids)


@dataclass(frozen=True, slots=True)
class GroupHistory:
    """What the planner knows of one group: its last poll."""

    key: str
    type_ids: tuple[int, ...]
    last_poll_at: float | None = None  # epoch seconds; None: never polled (it is due now)
    empty_polls: int = 0  # polls in a row that found nothing (0: the last one had data)
    pages: int = 1  # calls the last poll took

    @property
    def had_data(self) -> bool:
        return self.empty_polls == 0


def record_poll(history: GroupHistory, *, at: float, records: int, pages: int) -> GroupHistory:
    """The history after a poll at ``at`` that read ``records`` activities in ``pages`` calls."""
    if pages < 1 or records < 0:
        raise ValueError(f"a poll takes at least one page and reads 0 or more records, got {pages=} {records=}")
    return replace(history, last_poll_at=at, empty_polls=0 if records else history.empty_polls + 1, pages=pages)


@dataclass(frozen=True, slots=True)
class DayBudget:
    """What is left of today's budget (from ``ApiBudget.status()``) and the instance's rate limit."""

    calls_left: int
    seconds_until_reset: float
    calls_per_window: int = 100
    window_seconds: float = 20.0


@dataclass(frozen=True, slots=True)
class GroupPlan:
    key: str
    type_ids: tuple[int, ...]
    planned_poll_interval_ms: int
    next_poll_at: float  # epoch seconds
    calls_per_poll: int


@dataclass(frozen=True, slots=True)
class Plan:
    groups: tuple[GroupPlan, ...]
    affordable_calls_per_second: float
    planned_calls_per_second: float
    stretch: float  # how much the budget lengthened the wanted intervals (1: not at all; inf: nothing left today)

    def group(self, key: str) -> GroupPlan:
        for plan in self.groups:
            if plan.key == key:
                return plan
        raise KeyError(key)


def plan_polls(
    groups: Sequence[GroupHistory],
    budget: DayBudget,
    *,
    poll_interval_ms: int,
    now: float,
    max_backoff: int = 8,
    reserve_calls: int = 10,
) -> Plan:
    """Each group's interval and next poll (see the module docstring for the model)."""
    if poll_interval_ms < 1:
        raise ValueError(f"pollIntervalMs: at least 1, got {poll_interval_ms}")
    if max_backoff < 1:
        raise ValueError(f"max_backoff: at least 1 (no backoff), got {max_backoff}")
    seconds_left = max(budget.seconds_until_reset, 1.0)
    spendable = max(0, budget.calls_left - reserve_calls)
    affordable = min(spendable / seconds_left, budget.calls_per_window / budget.window_seconds)
    floor = poll_interval_ms / 1000
    wanted_intervals = [floor * min(2 ** min(g.empty_polls, 30), max_backoff) for g in groups]
    costs = [max(1, g.pages) for g in groups]
    wanted = sum(cost / interval for cost, interval in zip(costs, wanted_intervals))
    if not groups:
        stretch = 1.0
    elif affordable <= 0:
        stretch = math.inf
    else:
        stretch = max(1.0, wanted / affordable)
    plans = []
    for history, interval, cost in zip(groups, wanted_intervals, costs):
        # nothing affordable today: the next poll waits for the reset
        seconds = seconds_left if math.isinf(stretch) else interval * stretch
        due = now if history.last_poll_at is None else max(now, history.last_poll_at + seconds)
        plans.append(GroupPlan(history.key, history.type_ids, max(1, round(seconds * 1000)), due, cost))
    planned = 0.0 if math.isinf(stretch) else wanted / stretch
    return Plan(tuple(plans), affordable, planned, stretch)


@dataclass(frozen=True, slots=True)
class Freshness:
    p50: float  # seconds from an activity's date until it is read
    p99: float


def expected_freshness(plan: Plan, rates: Mapping[str, float], *, call_seconds: float = 0.1) -> Freshness:
    """Expected delay quantiles of activities arriving at ``rates`` (per second, by group key) under ``plan``.

    A group polled every ``I`` seconds reads an activity ``U(0, I)`` after it happened, plus the
    calls before its page (half the poll's pages on average) of ``call_seconds`` each. Groups
    are weighted by their rates; the quantiles of the mixture are found by bisection.
    """
    parts = []  # (weight, latency, interval)
    total = sum(rate for rate in rates.values() if rate > 0)
    for group in plan.groups:
        rate = rates.get(group.key, 0.0)
        if rate > 0:
            latency = call_seconds * (group.calls_per_poll + 1) / 2
            parts.append((rate / total, latency, group.planned_poll_interval_ms / 1000))
    if not parts:
        raise ValueError("rates: no group of the plan has activities (give a positive rate for at least one group key)")

    def share_read_within(delay: float) -> float:
        return sum(w * min(1.0, max(0.0, (delay - latency) / interval)) for w, latency, interval in parts)

    def quantile(q: float) -> float:
        low, high = 0.0, max(latency + interval for _, latency, interval in parts)
        for _ in range(60):
            middle = (low + high) / 2
            low, high = (middle, high) if share_read_within(middle) < q else (low, middle)
        return high

    return Freshness(quantile(0.5), quantile(0.99))
