"""The console's pure parts: chart ticks and SVG, the sampler's ring buffers, the session store's
timeouts, secret masking and link safety, origin comparison and the sign-in redirect target."""

from __future__ import annotations

import asyncio
import math
import re
from datetime import timedelta, timezone

import pytest

from helpers import wait_until
from leadstream.console.charts import Series, line_chart, nice_ticks, time_ticks
from leadstream.console.csrf import same_origin, tokens_match
from leadstream.console.display import compact, safe_href, settings_rows, state_label, tenants_text
from leadstream.console.gate import safe_next
from leadstream.console.series import BYTES_PER_KEY_OVERHEAD, Sampler
from leadstream.console.session import MemorySessionStore

HOUR = 1_764_324_000.0  # 2025-11-28 10:00:00 UTC


# -- charts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("low", "high", "ticks"),
    [
        (0, 87, [0, 20, 40, 60, 80, 100]),
        (0, 1, [0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        (0, 0, [0, 0.2, 0.4, 0.6, 0.8, 1.0]),  # all zero: an axis still
        (0, 4321, [0, 1000, 2000, 3000, 4000, 5000]),
        (-3, 7, [-4, -2, 0, 2, 4, 6, 8]),
        (0, 0.037, [0, 0.01, 0.02, 0.03, 0.04]),
    ],
)
def test_value_ticks_are_round_numbers_covering_the_data(low: float, high: float, ticks: list[float]) -> None:
    assert nice_ticks(low, high) == ticks


def test_value_ticks_refuse_infinite_bounds() -> None:
    with pytest.raises(ValueError, match="finite"):
        nice_ticks(0, math.inf)


def test_time_ticks_fall_on_whole_minutes_or_seconds() -> None:
    ticks, step = time_ticks(HOUR - 3600, HOUR)
    assert step == 600 and len(ticks) == 7 and all(t % 600 == 0 for t in ticks)
    ticks, step = time_ticks(HOUR + 7, HOUR + 67)
    assert step == 10 and ticks[0] == HOUR + 10 and ticks[-1] == HOUR + 60


def test_a_chart_has_title_unit_time_axis_and_one_line_per_series() -> None:
    points = [(HOUR + i * 10, 40.0 + i) for i in range(361)]
    svg = line_chart(
        [Series("delivered", points), Series("ingested", [(t, v * 2) for t, v in points])],
        title="Throughput",
        unit="events/s",
        start=HOUR,
        end=HOUR + 3600,
    )
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    assert texts[0] == "Throughput" and "events/s" in texts and "time of day (UTC)" in texts
    assert [t for t in texts if re.fullmatch(r"\d\d:\d\d", t)] == [
        "10:00",
        "10:10",
        "10:20",
        "10:30",
        "10:40",
        "10:50",
        "11:00",
    ]
    assert "delivered: 400 events/s" in texts and "ingested: 800 events/s" in texts  # the latest values
    assert svg.count("<polyline") == 2
    assert [t for t in texts if t.isdigit()] == ["0", "200", "400", "600", "800"]  # from zero, round steps


def test_a_chart_shows_gaps_and_lone_points_and_another_time_zone() -> None:
    points = [
        (HOUR, 1.0),
        (HOUR + 10, 2.0),
        (HOUR + 20, None),
        (HOUR + 30, 3.0),
        (HOUR + 40, math.nan),
        (HOUR + 50, 1.0),
        (HOUR + 60, 2.0),
    ]
    svg = line_chart([Series("lag", points)], title="Lag", unit="seconds", tz=timezone(timedelta(hours=2), "CEST"))
    assert svg.count("<polyline") == 2 and svg.count("<circle") == 1  # 2 runs, and the point between the gaps
    assert "time of day (CEST)" in svg and "12:00:00" in svg


def test_an_empty_chart_says_so() -> None:
    for series in ([], [Series("x", [])], [Series("x", [(HOUR, None)])]):
        svg = line_chart(series, title="Ingest", unit="events/s")
        assert "no data yet" in svg and "<polyline" not in svg and "events/s" in svg


def test_chart_text_is_escaped() -> None:
    hostile = '<script>alert(1)</script>"&'
    svg = line_chart([Series(hostile, [(HOUR, 1.0), (HOUR + 10, 2.0)])], title=hostile, unit=hostile)
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert "alert(1)&lt;/script&gt;&quot;&amp;" in svg


# -- the sampler ---------------------------------------------------------------------------------


def test_the_sampler_keeps_the_last_span_in_a_fixed_ring() -> None:
    sampler = Sampler(interval=10, span=60)
    assert sampler.capacity == 7 and sampler.bytes_per_key == 8 * 7 + BYTES_PER_KEY_OVERHEAD
    for i in range(20):
        sampler.record({"pending": float(i)}, now=HOUR + 10 * i)
    assert len(sampler) == 7
    assert sampler.values("pending") == [(HOUR + 10 * i, float(i)) for i in range(13, 20)]
    assert sampler.latest("pending") == 19.0
    assert sampler.values("unknown") == []


def test_counters_read_as_rates_and_a_reset_is_a_gap() -> None:
    sampler = Sampler(interval=10, span=3600)
    for i, delivered in enumerate([0, 100, 250, 250, 40, 140]):  # 40: the process restarted
        sampler.record({"delivered": delivered}, now=HOUR + 10 * i)
    rates = [v for _, v in sampler.rates("delivered")]
    assert rates == [10.0, 15.0, 0.0, None, 10.0]


def test_keys_missing_from_a_reading_are_gaps_and_are_dropped_after_a_span() -> None:
    sampler = Sampler(interval=1, span=3)
    sampler.record({"a": 1, "b": 1}, now=HOUR)
    sampler.record({"a": 2}, now=HOUR + 1)
    assert sampler.values("b") == [(HOUR, 1.0), (HOUR + 1, None)]
    for i in range(2, 5):
        sampler.record({"a": i}, now=HOUR + i)
    assert sampler.keys() == ["a"]  # b was not read for a whole span: its memory is given back


def test_the_sampler_holds_at_most_max_keys() -> None:
    sampler = Sampler(interval=1, span=10, max_keys=2)
    sampler.record({"a": 1, "b": 2, "c": 3}, now=HOUR)
    assert sorted(map(str, sampler.keys())) == ["a", "b"]


def test_sampler_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="interval"):
        Sampler(interval=0)
    with pytest.raises(ValueError, match="interval"):
        Sampler(interval=10, span=5)


async def test_the_sampler_runs_on_its_interval_and_survives_a_failing_read() -> None:
    sampler = Sampler(interval=0.01, span=1)
    calls = 0

    def read() -> dict[str, float]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("store restarting")
        return {"ingested": float(calls)}

    task = asyncio.create_task(sampler.run(read))
    try:
        await wait_until(lambda: len(sampler) >= 4, timeout=5, what="four samples")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    values = [v for _, v in sampler.values("ingested")]
    assert values[:3] == [1.0, None, 3.0]  # the failed read is a gap, and sampling went on


# -- sessions --------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = HOUR

    def __call__(self) -> float:
        return self.now


class Who:
    key_id = "operator"
    munchkin_ids = None
    scopes = frozenset({"read"})


async def test_a_session_lives_while_used_and_ends_when_idle() -> None:
    clock = FakeClock()
    store = MemorySessionStore(idle=100, absolute=1000, clock=clock)
    session_id, session = await store.create(Who())
    assert session.is_operator and len(session.csrf_token) >= 40
    clock.now += 99
    assert await store.get(session_id) is session  # and touched
    clock.now += 99
    assert await store.get(session_id, touch=False) is session
    clock.now += 1  # 100 s since the last touch
    assert await store.get(session_id) is None
    assert len(store) == 0


async def test_a_session_ends_at_the_absolute_cap_however_busy() -> None:
    clock = FakeClock()
    store = MemorySessionStore(idle=100, absolute=250, clock=clock)
    session_id, _ = await store.create(Who())
    for _ in range(4):
        clock.now += 60
        assert await store.get(session_id) is not None
    clock.now += 10  # 250 s after sign-in
    assert await store.get(session_id) is None


async def test_sessions_are_keyed_by_digest_and_deleted_at_sign_out() -> None:
    store = MemorySessionStore()
    first, _ = await store.create(Who())
    second, _ = await store.create(Who())
    assert first != second
    assert first.encode() not in store._sessions and all(len(key) == 32 for key in store._sessions)
    assert await store.get("forged") is None
    await store.delete(first)
    assert await store.get(first) is None and await store.get(second) is not None


async def test_the_store_drops_the_least_recently_used_when_full() -> None:
    clock = FakeClock()
    store = MemorySessionStore(max_sessions=2, clock=clock)
    a, _ = await store.create(Who())
    b, _ = await store.create(Who())
    clock.now += 1
    await store.get(a)  # a is used again: b is now the least recently used
    c, _ = await store.create(Who())
    assert len(store) == 2 and await store.get(b) is None
    assert await store.get(a) is not None and await store.get(c) is not None


def test_session_timeouts_are_checked() -> None:
    with pytest.raises(ValueError, match="idle"):
        MemorySessionStore(idle=0)
    with pytest.raises(ValueError, match="max_sessions"):
        MemorySessionStore(max_sessions=0)


# -- display, origins, redirects ---------------------------------------------------------------


def test_settings_rows_mask_secrets_wherever_they_are() -> None:
    rows = dict(
        settings_rows(
            {
                "endpoint": "https://x.example/hook",
                "auth": {
                    "type": "oauth2",
                    "tokenUrl": "https://idp.example/token",
                    "clientId": "crm",
                    "clientSecret": "s3cr3t",
                    "scope": None,
                },
                "signing": {"hmacSecret": "whsec_abc"},
                "headers": {"Authorization": "Bearer x", "X-Api-Key": "k"},
                "eventTypes": [10, "Visit Webpage"],
                "customObjects": False,
            }
        )
    )
    assert rows["auth.clientSecret"] == rows["signing.hmacSecret"] == rows["headers.Authorization"] == "***"
    assert rows["headers.X-Api-Key"] == "***"
    assert rows["auth.tokenUrl"] == "https://idp.example/token" and rows["auth.clientId"] == "crm"
    assert rows["auth.scope"] == "—" and rows["eventTypes"] == "10, Visit Webpage" and rows["customObjects"] == "no"
    assert "s3cr3t" not in str(rows) and "whsec_abc" not in str(rows)


@pytest.mark.parametrize(
    ("url", "href"),
    [
        ("https://hooks.example.com/x", "https://hooks.example.com/x"),
        ("HTTP://x.example", "HTTP://x.example"),
        ("/ui/things", "/ui/things"),
        ("javascript:alert(1)", None),
        (" javascript:alert(1)", None),
        ("data:text/html,<b>", None),
        ("//evil.example", None),
        (None, None),
    ],
)
def test_only_http_links_are_links(url: str | None, href: str | None) -> None:
    assert safe_href(url) == href


def test_numbers_states_and_tenants_read_well() -> None:
    assert [compact(v) for v in (0, 950, 12_000, 1_500_000, 0.25, 41.13)] == ["0", "950", "12k", "1.5M", "0.25", "41.1"]
    assert state_label("quota_exhausted").text == "Quota exhausted" and state_label("paused").tone == "bad"
    assert state_label("something_new").text == "Something new"  # unknown states still read as words
    assert tenants_text(None) == "all tenants"
    assert tenants_text(frozenset({"333-CCC-333", "111-AAA-111", "222-BBB-222", "444-DDD-444"})) == (
        "111-AAA-111, 222-BBB-222, 333-CCC-333 +1 more"
    )


@pytest.mark.parametrize(
    ("claimed", "ok"),
    [
        ("http://127.0.0.1:8470", True),
        ("http://127.0.0.1:8470/ui/things?x=1", True),  # a Referer: its origin counts
        ("HTTP://127.0.0.1:8470", True),
        ("http://127.0.0.1:8471", False),
        ("https://127.0.0.1:8470", False),
        ("http://localhost:8470", False),
        ("null", False),
        (None, False),
        ("http://127.0.0.1:bad", False),
    ],
)
def test_same_origin_compares_scheme_host_and_port(claimed: str | None, ok: bool) -> None:
    assert same_origin(claimed, "http://127.0.0.1:8470") is ok


def test_trusted_origins_and_default_ports() -> None:
    assert same_origin("https://console.example.com", "http://10.0.0.5:8470", ["https://console.example.com:443"])
    assert same_origin("http://example.com", "http://example.com:80")


def test_tokens_compare_whole() -> None:
    assert tokens_match("abc", "abc")
    assert not tokens_match("abd", "abc") and not tokens_match("", "") and not tokens_match(None, "abc")
    assert not tokens_match("ab", "abc")


@pytest.mark.parametrize(
    ("wanted", "landed"),
    [
        ("/ui/things?x=1", "/ui/things?x=1"),
        ("/ui/", "/ui/"),
        (None, "/ui/"),
        ("/ui", "/ui/"),
        ("https://evil.example/ui/", "/ui/"),
        ("//evil.example", "/ui/"),
        ("/ui/\\evil", "/ui/"),
        ("/other", "/ui/"),
    ],
)
def test_after_sign_in_only_console_paths(wanted: str | None, landed: str) -> None:
    assert safe_next(wanted, "/ui") == landed
