"""The failure → retry → pause → probe rules (SPEC §4.4) as pure functions: no I/O, no clock."""

from __future__ import annotations

from leadstream.subscriptions import state as rules
from leadstream.subscriptions.state import DeliveryState, InFlight, Timing

T = Timing(retry_attempts=3, retry_interval=180_000, probe_interval=600_000, push_interval=2_000)


def test_failures_retry_the_same_batch_then_pause_and_probe():
    s = DeliveryState(cursor=10, inflight=InFlight("b-1", 20, 5))
    s = rules.failed(s, T, 1_000, "HTTP 500")
    assert (s.state, s.retries, s.consecutiveFailures, s.nextAttemptAt) == ("retrying", 0, 1, 181_000)
    for n in (1, 2):
        s = rules.failed(s, T, 2_000, "HTTP 500")  # retry n failed
        assert (s.state, s.retries, s.consecutiveFailures) == ("retrying", n, n + 1)
    s = rules.failed(s, T, 3_000, "HTTP 502")  # the third and last retry
    assert (s.state, s.pausedReason, s.consecutiveFailures, s.nextAttemptAt) == ("paused", "failures", 4, 603_000)
    s = rules.failed(s, T, 4_000, "timed out")  # a probe
    assert (s.state, s.consecutiveFailures, s.nextAttemptAt, s.lastError) == ("paused", 5, 604_000, "timed out")
    assert s.inflight == InFlight("b-1", 20, 5) and s.cursor == 10  # the batch and cursor stay


def test_any_success_makes_it_active_again():
    s = rules.failed(DeliveryState(), T, 0, "x")
    s = rules.failed(rules.failed(rules.failed(s, T, 0, "x"), T, 0, "x"), T, 0, "x")
    assert s.state == "paused"
    s = rules.succeeded(s, 9_000)
    assert (
        s.state,
        s.pausedReason,
        s.consecutiveFailures,
        s.retries,
        s.lastError,
        s.nextAttemptAt,
        s.lastSuccessAt,
    ) == ("active", None, 0, 0, None, None, 9_000)


def test_no_retries_pauses_at_the_first_failure():
    s = rules.failed(DeliveryState(), Timing(0, 100, 500, 10), 0, "x")
    assert (s.state, s.nextAttemptAt) == ("paused", 500)


def test_throttling_waits_within_bounds_and_the_tenth_in_a_row_is_a_failure():
    s = DeliveryState()
    s = rules.throttled(s, T, 0, 0, "HTTP 429")
    assert (s.state, s.throttled, s.consecutiveFailures, s.nextAttemptAt) == ("active", 1, 0, 2_000)  # >= push interval
    s = rules.throttled(s, T, 0, 3_600_000, "HTTP 503")
    assert s.nextAttemptAt == 180_000  # <= retry interval
    s = rules.throttled(s, T, 0, 5_000, "HTTP 503")
    assert s.nextAttemptAt == 5_000 and s.retries == 0
    for _ in range(6):
        s = rules.throttled(s, T, 0, 5_000, "HTTP 503")
    assert (s.throttled, s.consecutiveFailures) == (9, 0)
    s = rules.throttled(s, T, 0, 5_000, "HTTP 503")
    assert (s.state, s.throttled, s.consecutiveFailures) == ("retrying", 0, 1)
    assert "10 throttling answers in a row" in s.lastError


def test_gone_pauses_at_once():
    s = rules.gone(DeliveryState(), T, 0, "the endpoint is gone: HTTP 410")
    assert (s.state, s.pausedReason, s.consecutiveFailures, s.nextAttemptAt) == ("paused", "failures", 1, 600_000)


def test_manual_pause_resume_and_deprovision():
    s = rules.paused_by_hand(rules.failed(DeliveryState(), T, 0, "x"))
    assert (s.state, s.pausedReason, s.nextAttemptAt) == ("paused", "manual", None)
    s = rules.resumed(s)
    assert (s.state, s.pausedReason, s.retries, s.nextAttemptAt) == ("active", None, 0, None)
    s = rules.deprovisioned(DeliveryState(inflight=InFlight("b", 1, 1)))
    assert (s.state, s.inflight) == ("deprovisioned", None)


def test_state_round_trips_through_its_stored_form():
    s = rules.failed(DeliveryState(cursor=7, inflight=InFlight("b", 9, 2, sends=3), delivered=5), T, 1, "x")
    assert rules.decode(rules.encode(s)) == s


async def test_the_state_log_keeps_the_newest_state_and_hands_it_to_the_store(tmp_path):
    from leadstream.delivery.statelog import StateLog
    from leadstream.store.base import StoredSubscription
    from leadstream.store.sqlite import SqliteStore

    async with SqliteStore(tmp_path / "ls.db") as store:
        for sub_id in ("a", "b"):
            await store.create_subscription(StoredSubscription(sub_id, "123-ABC-456", b"{}", b"{}", 0))
        states = StateLog(tmp_path)
        states.open()
        states.write("a", rules.encode(DeliveryState(cursor=1)), 10)
        states.write("a", rules.encode(DeliveryState(cursor=2)), 11)
        states.write("b", rules.encode(DeliveryState(cursor=7)), 0)
        # a crash now: a new run finds the files, the newest line of each subscription wins
        (tmp_path / "delivery-state.1.log").open("ab").write(b'{"id":"a","state":{"cursor":')  # torn
        found = StateLog(tmp_path).recover()
        assert {k: (rules.decode(v).cursor, applied) for k, (v, applied) in found.items()} == {
            "a": (2, 11),
            "b": (7, 0),
        }

        await states.checkpoint(store)
        saved = await store.get_subscription("a")
        assert saved is not None and (rules.decode(saved.state).cursor, saved.applied) == (2, 11)
        assert [p.name for p in tmp_path.glob("delivery-state.*")] == ["delivery-state.2.log"]
        states.write("b", rules.encode(DeliveryState(cursor=8)), 0)
        await states.close(store)
        assert rules.decode((await store.get_subscription("b")).state).cursor == 8
        assert list(tmp_path.glob("delivery-state.*")) == []
