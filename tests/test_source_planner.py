"""The poll planner: the day's budget spread over the type groups, busy groups sooner, empty ones backing off."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leadstream.catalog import Catalog
from leadstream.sources.planner import (
    DELETED_LEADS,
    DayBudget,
    GroupHistory,
    expected_freshness,
    group_key,
    plan_polls,
    record_poll,
    type_groups,
)

DAY = 86_400.0


def histories(n: int, *, empty_polls: int = 0, at: float | None = 0.0) -> list[GroupHistory]:
    return [GroupHistory(f"g{i}", (i + 1,), last_poll_at=at, empty_polls=empty_polls) for i in range(n)]


def test_the_standard_catalog_makes_eight_groups_of_at_most_ten_without_delete_lead():
    groups = type_groups(Catalog().activity_types)
    assert [len(g) for g in groups] == [10] * 7 + [3]
    flat = [t for g in groups for t in g]
    assert flat == sorted(flat) and 37 not in flat and set(flat) == set(Catalog().activity_types) - {37}
    assert group_key(groups[0]) == "1,2,3,6,7,8,9,10,11,12"
    with pytest.raises(ValueError, match="between 1 and 10"):
        type_groups([1, 2], size=11)


def test_with_budget_to_spare_groups_with_data_poll_at_the_interval_and_empty_ones_double_up_to_the_cap():
    empty = [GroupHistory(f"empty{k}", (k + 2,), 0.0, empty_polls=k) for k in range(1, 6)]
    groups = [GroupHistory("busy", (1,), 0.0), *empty]
    plan = plan_polls(groups, DayBudget(calls_left=1_000_000, seconds_until_reset=DAY), poll_interval_ms=5000, now=0.0)
    assert plan.stretch == 1.0
    assert [g.planned_poll_interval_ms for g in plan.groups] == [5000, 10_000, 20_000, 40_000, 40_000, 40_000]
    assert plan.group("busy").next_poll_at == 5.0


def test_the_documented_example_eight_busy_groups_on_half_the_default_quota():
    plan = plan_polls(histories(8), DayBudget(25_000, DAY), poll_interval_ms=5000, now=0.0)
    assert {g.planned_poll_interval_ms for g in plan.groups} == {27_659}
    assert plan.planned_calls_per_second == pytest.approx((25_000 - 10) / DAY)
    freshness = expected_freshness(plan, {g.key: 1.0 for g in plan.groups})
    assert freshness.p50 == pytest.approx(13.93, abs=0.01) and freshness.p99 == pytest.approx(27.48, abs=0.01)


def test_quiet_groups_leave_budget_to_the_busy_ones():
    groups = histories(2) + histories(6, empty_polls=3)
    groups = [GroupHistory(f"g{i}", g.type_ids, 0.0, g.empty_polls) for i, g in enumerate(groups)]
    plan = plan_polls(groups, DayBudget(25_000, DAY), poll_interval_ms=5000, now=0.0)
    busy, quiet = plan.groups[0].planned_poll_interval_ms, plan.groups[-1].planned_poll_interval_ms
    assert busy == 9508 and quiet == pytest.approx(8 * busy, abs=2)  # whole milliseconds
    freshness = expected_freshness(plan, {"g0": 1.0, "g1": 1.0})
    assert freshness.p50 == pytest.approx(4.85, abs=0.01) and freshness.p99 == pytest.approx(9.51, abs=0.01)


def test_a_group_never_polled_is_due_now_and_an_overdue_one_too():
    groups = [GroupHistory("new", (1,)), GroupHistory("late", (2,), 0.0), GroupHistory("recent", (3,), 999.0)]
    plan = plan_polls(groups, DayBudget(1_000_000, DAY), poll_interval_ms=5000, now=1000.0)
    assert [g.next_poll_at for g in plan.groups] == [1000.0, 1000.0, 1004.0]


def test_with_nothing_left_today_every_group_waits_for_the_reset():
    plan = plan_polls(histories(3), DayBudget(calls_left=10, seconds_until_reset=3600), poll_interval_ms=5000, now=0.0)
    assert math.isinf(plan.stretch) and plan.planned_calls_per_second == 0
    assert all(g.planned_poll_interval_ms == 3_600_000 and g.next_poll_at == 3600 for g in plan.groups)


def test_many_pages_per_poll_cost_their_calls():
    one, many = GroupHistory("one", (1,), 0.0, pages=1), GroupHistory("many", (2,), 0.0, pages=9)
    plan = plan_polls([one, many], DayBudget(10_010, DAY), poll_interval_ms=1000, now=0.0)
    assert plan.group("many").calls_per_poll == 9
    assert plan.planned_calls_per_second == pytest.approx(10_000 / DAY)


def test_the_rate_limit_caps_the_plan_late_in_the_day():
    plan = plan_polls(histories(4), DayBudget(20_000, seconds_until_reset=600), poll_interval_ms=100, now=0.0)
    assert plan.affordable_calls_per_second == 5.0  # 100 calls per 20 s, not 20,000 in 10 minutes
    assert plan.planned_calls_per_second == pytest.approx(5.0)


@given(
    st.lists(st.tuples(st.integers(0, 12), st.integers(1, 40)), min_size=1, max_size=12),
    st.integers(0, 60_000),
    st.floats(1, DAY),
    st.integers(1, 120_000),
    st.integers(1, 16),
)
def test_a_plan_never_spends_past_the_share(groups_spec, calls_left, seconds_left, poll_interval_ms, max_backoff):
    groups = [GroupHistory(f"g{i}", (i + 1,), 0.0, empty_polls=e, pages=p) for i, (e, p) in enumerate(groups_spec)]
    budget = DayBudget(calls_left, seconds_left)
    plan = plan_polls(groups, budget, poll_interval_ms=poll_interval_ms, now=0.0, max_backoff=max_backoff)
    if math.isinf(plan.stretch):  # nothing affordable today: the next polls are in the next day
        assert calls_left <= 10 and all(g.next_poll_at == max(seconds_left, 1.0) for g in plan.groups)
        return
    spend_per_second = sum(g.calls_per_poll * 1000 / g.planned_poll_interval_ms for g in plan.groups)
    rounding = 1 + 1e-6 + 1 / min(g.planned_poll_interval_ms for g in plan.groups)  # intervals are whole milliseconds
    assert spend_per_second <= plan.affordable_calls_per_second * rounding + 1e-12
    assert spend_per_second * max(seconds_left, 1) <= (calls_left - 10) * rounding + 1e-9
    assert plan.affordable_calls_per_second <= 100 / 20
    for history, group in zip(groups, plan.groups):
        assert group.planned_poll_interval_ms >= poll_interval_ms  # never more often than pollIntervalMs
        for other_history, other in zip(groups, plan.groups):
            if history.empty_polls < other_history.empty_polls:
                assert group.planned_poll_interval_ms <= other.planned_poll_interval_ms  # data: polled sooner


def test_record_poll_counts_empty_polls_in_a_row():
    history = GroupHistory(DELETED_LEADS, (37,))
    history = record_poll(history, at=10.0, records=0, pages=1)
    history = record_poll(history, at=20.0, records=0, pages=1)
    assert (history.empty_polls, history.had_data, history.last_poll_at) == (2, False, 20.0)
    history = record_poll(history, at=30.0, records=500, pages=2)
    assert (history.empty_polls, history.had_data, history.pages) == (0, True, 2)
    with pytest.raises(ValueError, match="at least one page"):
        record_poll(history, at=40.0, records=1, pages=0)


def test_expected_freshness_of_one_group_is_a_uniform_wait_plus_the_call():
    plan = plan_polls(histories(1), DayBudget(1_000_000, DAY), poll_interval_ms=10_000, now=0.0)
    freshness = expected_freshness(plan, {"g0": 3.0}, call_seconds=0.5)
    assert freshness.p50 == pytest.approx(0.5 + 5.0) and freshness.p99 == pytest.approx(0.5 + 9.9)
    with pytest.raises(ValueError, match="no group of the plan has activities"):
        expected_freshness(plan, {"elsewhere": 1.0})


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="pollIntervalMs"):
        plan_polls(histories(1), DayBudget(10, DAY), poll_interval_ms=0, now=0.0)
    with pytest.raises(ValueError, match="max_backoff"):
        plan_polls(histories(1), DayBudget(10, DAY), poll_interval_ms=10, now=0.0, max_backoff=0)
