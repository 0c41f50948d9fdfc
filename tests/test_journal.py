"""The journal API (SPEC §5) on a real server and a real SQLite log: paging by `next` only,
the end of the log, latest, seek, expiry, filters, the size cap and the scan bound."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from helpers import MUNCHKIN, Server, activity, publish, running_server, wait_until
from leadstream import journal
from leadstream.receiver import ReceiverConfig, start_receiver

OTHER_TENANT = "234-BCD-567"
NEXT_LINK = re.compile(r'^<(/v1/subscriptions/[^/]+/journal\?since=([^&>]+)&limit=(\d+))>; rel="next"$')


@pytest.fixture
async def endpoint() -> AsyncIterator[str]:
    """A real consumer for the push side (it answers the challenge); the journal ignores it."""
    running = await start_receiver(ReceiverConfig())
    yield running.url + "/hook"
    await running.close()


async def create_subscription(http: aiohttp.ClientSession, server: Server, endpoint: str, **settings: Any) -> str:
    """A subscription made through the admin API; its id."""
    document = {"name": "journal", "munchkinId": MUNCHKIN, "stream": "activity", "endpoint": endpoint, **settings}
    async with http.post(f"{server.url}/v1/subscriptions", json=document, headers=server.headers) as r:
        created = await r.json()
        assert r.status == 201, created
    return created["id"]


@pytest.fixture
def subscribe(server, http, endpoint):
    return lambda **settings: create_subscription(http, server, endpoint, **settings)


class Answer:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def next(self) -> str:
        found = NEXT_LINK.match(self.headers["Link"])
        assert found, self.headers.get("Link")
        return found.group(1)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [entry["event"] for entry in self.json["events"]]


async def get(http: aiohttp.ClientSession, server: Server, path: str) -> Answer:
    async with http.get(server.url + path, headers=server.headers) as r:
        return Answer(r.status, r.headers, await r.read())


def journal_path(sub_id: str, query: str = "") -> str:
    return f"/v1/subscriptions/{sub_id}/journal" + (f"?{query}" if query else "")


async def publish_ok(http: aiohttp.ClientSession, server: Server, records: list[dict[str, Any]]) -> None:
    for start in range(0, len(records), 10_000):
        status, body = await publish(http, server, "activity", records[start : start + 10_000])
        assert status == 200 and body["accepted"] == len(records[start : start + 10_000]), body


# -- paging -----------------------------------------------------------------------------------------


async def test_paging_10000_events_by_next_only(server, http, subscribe):
    sub_id = await subscribe(format="cloudevents")
    records = []
    for i in range(10_000):
        records.append(activity(i))
        if i % 20 == 0:  # another tenant's events in between: never in this journal
            records.append(activity(i, munchkin=OTHER_TENANT, marketoGUID=f"other-{i}"))
    await publish_ok(http, server, records)

    seen: list[str] = []
    positions: list[str] = []
    path, pages = journal_path(sub_id, "limit=100"), 0
    while True:
        answer = await get(http, server, path)
        if answer.status == 204:
            break
        assert answer.status == 200, answer.body
        page = answer.json
        assert page["_page"]["count"] == len(page["events"]) <= 100
        assert page["_page"]["last"] == page["events"][-1]["position"] or page["_page"]["count"] == 0
        seen += [entry["event"]["id"] for entry in page["events"]]
        positions += [entry["position"] for entry in page["events"]]
        path = answer.next
        pages += 1
        assert pages <= 101, "paging does not end"
    assert seen == [f"guid-{i}" for i in range(10_000)]  # every event once, in order
    decoded = [journal.decode_position(p) for p in positions]
    assert decoded == sorted(set(decoded))
    assert positions == sorted(positions)  # tokens sort as strings in log order
    assert pages == 100
    # the end: 204, Retry-After, and the same next link to poll
    assert answer.headers["Retry-After"] == "10"
    assert answer.body == b""
    again = await get(http, server, answer.next)
    assert again.status == 204 and again.next == answer.next


async def test_no_position_starts_at_the_oldest_event(server, http, subscribe):
    sub_id = await subscribe(format="cloudevents")
    await publish_ok(http, server, [activity(i) for i in range(3)])
    answer = await get(http, server, journal_path(sub_id))
    assert answer.status == 200
    assert [e["id"] for e in answer.events] == ["guid-0", "guid-1", "guid-2"]
    assert "limit=100" in answer.headers["Link"]  # the default limit


async def test_latest_then_only_new_events(server, http, subscribe):
    sub_id = await subscribe(format="cloudevents")
    await publish_ok(http, server, [activity(i) for i in range(5)])
    latest = await get(http, server, journal_path(sub_id, "latest=true&limit=10"))
    assert latest.status == 204
    assert latest.headers["Retry-After"] == "10"
    await publish_ok(http, server, [activity(i) for i in range(5, 8)])
    answer = await get(http, server, latest.next)
    assert answer.status == 200
    assert [e["id"] for e in answer.events] == ["guid-5", "guid-6", "guid-7"]
    assert (await get(http, server, answer.next)).status == 204


async def test_seek_finds_the_moment(server, http, subscribe):
    sub_id = await subscribe(format="cloudevents")
    await publish_ok(http, server, [activity(i) for i in range(3)])
    before_second = time.time()
    await wait_until(lambda: time.time() > before_second + 1.0, what="a second to pass")
    await publish_ok(http, server, [activity(i) for i in range(3, 6)])

    recent = await get(http, server, journal_path(sub_id, "seek=-PT0.5S"))
    assert [e["id"] for e in recent.events] == ["guid-3", "guid-4", "guid-5"]
    everything = await get(http, server, journal_path(sub_id, "seek=-P1D"))  # before the log began: all of it
    assert [e["id"] for e in everything.events] == [f"guid-{i}" for i in range(6)]
    combined = await get(http, server, journal_path(sub_id, "seek=-PT1H30M&limit=2"))
    assert [e["id"] for e in combined.events] == ["guid-0", "guid-1"]


async def test_expired_position_is_410(tmp_path, http, endpoint):
    async with running_server(data_dir=tmp_path / "short", retention="1s", purge_interval="0.1s") as server:
        sub_id = await create_subscription(http, server, endpoint, format="cloudevents")
        await publish_ok(http, server, [activity(i) for i in range(4)])
        first = await get(http, server, journal_path(sub_id, "limit=1"))
        assert first.status == 200 and first.events[0]["id"] == "guid-0"

        async def expired() -> bool:
            return (await get(http, server, first.next)).status == 410

        await wait_until(expired, timeout=10, what="retention to purge the events after the position")
        gone = await get(http, server, first.next)
        assert gone.headers["Content-Type"] == "application/problem+json"
        assert "expired" in gone.json["detail"]
        # a fresh start still works, and sees what is retained now
        await publish_ok(http, server, [activity(i) for i in range(10, 12)])
        fresh = await get(http, server, journal_path(sub_id))
        assert fresh.status == 200 and [e["id"] for e in fresh.events] == ["guid-10", "guid-11"]


# -- what a page holds --------------------------------------------------------------------------------


async def test_the_subscription_filter_applies(server, http, subscribe):
    pattern = {"data": {"attributes": {"name": ["Device"], "value": ["iPhone"]}}}
    sub_id = await subscribe(format="cloudevents", eventTypes=[10], filter=pattern)
    records = [
        activity(0),  # Open Email on an iPhone: taken
        activity(1, type_id=1),  # Visit Webpage: another type
        activity(2, attributes=[{"name": "Device", "value": "Android"}]),  # filtered out
        activity(3),
        activity(4, munchkin=OTHER_TENANT),  # another tenant
    ]
    await publish_ok(http, server, records)
    answer = await get(http, server, journal_path(sub_id))
    assert [e["id"] for e in answer.events] == ["guid-0", "guid-3"]
    assert {e["type"] for e in answer.events} == {"com.adobe.platform.marketo.activity.standard.openemail"}


async def test_formats(server, http, subscribe):
    await publish_ok(http, server, [activity(0)])
    legacy = await subscribe(format="legacy")
    adobe_io = await subscribe(format="adobe_io")
    cloud = (await get(http, server, journal_path(legacy))).events[0]  # legacy reads cloudevents
    assert cloud["specversion"] == "1.0" and cloud["data"]["leadId"] == "500" and cloud["recipientclientid"] == legacy
    wrapped = (await get(http, server, journal_path(adobe_io))).events[0]
    assert wrapped["event"]["id"] == cloud["id"] and wrapped["event_id"] == cloud["eventid"]


async def test_pages_stay_under_1_5_mb(server, http, subscribe):
    sub_id = await subscribe(format="cloudevents")
    big = [{"name": f"Note {n}", "value": "x" * 30_000} for n in range(7)]  # ~210 kB per event
    await publish_ok(http, server, [activity(i, attributes=big) for i in range(12)])
    seen: list[str] = []
    path = journal_path(sub_id, "limit=100")
    sizes = []
    while (answer := await get(http, server, path)).status == 200:
        sizes.append(len(answer.body))
        assert len(answer.body) <= journal.MAX_BODY_BYTES
        seen += [e["id"] for e in answer.events]
        path = answer.next
    assert seen == [f"guid-{i}" for i in range(12)]
    assert len(sizes) >= 2 and max(sizes) > 1_200_000  # capped, yet filled close to the cap


async def test_a_sparse_filter_is_scanned_a_bounded_stretch_per_request(server, http, subscribe):
    sub_id = await subscribe(format="cloudevents", eventTypes=[10])
    await publish_ok(http, server, [activity(i, type_id=1) for i in range(journal.SCAN_BOUND + 500)])
    await publish_ok(http, server, [activity(99_999)])
    first = await get(http, server, journal_path(sub_id))
    assert first.status == 200 and first.json["_page"]["count"] == 0 and first.json["events"] == []
    moved = journal.decode_position(first.json["_page"]["last"])
    assert moved == journal.SCAN_BOUND  # exactly the bound examined (positions 1…): moved on, not at the end
    second = await get(http, server, first.next)
    assert [e["id"] for e in second.events] == ["guid-99999"]
    assert (await get(http, server, second.next)).status == 204


# -- bad requests ---------------------------------------------------------------------------------------


BAD_QUERIES = [
    ("since=garbage", "since"),
    ("since=1AAAAAAAAAA", "since"),  # one character short
    ("since=2AAAAAAAAAAE", "since"),  # an unknown version
    ("since=1AAAAAAAAAAF", "since"),  # not the canonical spelling of a position
    ("since=1AAAAAAAAAAE&seek=-PT1H", "seek"),
    ("latest=true&since=1AAAAAAAAAAE", "latest"),
    ("latest=maybe", "latest"),
    ("seek=PT2H", "seek"),  # not negative
    ("seek=-P1M", "seek"),  # months have no fixed length
    ("seek=-2h", "seek"),
    ("limit=0", "limit"),
    ("limit=1001", "limit"),
    ("limit=ten", "limit"),
]


async def test_bad_queries_are_400_naming_the_parameter(server, http, subscribe):
    sub_id = await subscribe()
    await publish_ok(http, server, [activity(0)])
    for query, field in BAD_QUERIES:
        answer = await get(http, server, journal_path(sub_id, query))
        assert answer.status == 400, (query, answer.body)
        assert answer.headers["Content-Type"] == "application/problem+json"
        assert answer.json["field"] == field, (query, answer.json)
        assert field in answer.json["detail"]


async def test_a_position_ahead_of_the_log_is_400(server, http, subscribe):
    sub_id = await subscribe()
    answer = await get(http, server, journal_path(sub_id, f"since={journal.encode_position(10**9)}"))
    assert answer.status == 400 and "ahead" in answer.json["detail"]


async def test_unknown_subscription_is_404(server, http):
    answer = await get(http, server, journal_path("no-such-subscription"))
    assert answer.status == 404


async def test_the_journal_needs_a_key(server, http, subscribe):
    sub_id = await subscribe()
    async with http.get(server.url + journal_path(sub_id)) as r:
        assert r.status == 401


def test_positions_round_trip_and_sort_as_strings():
    numbers = (0, 1, 9, 10, 15, 16, 255, 256, 2**32, 2**63 - 1)
    tokens = [journal.encode_position(p) for p in numbers]
    for position, token in zip(numbers, tokens, strict=True):
        assert re.fullmatch(r"2[0-9a-f]{16}", token)
        assert journal.decode_position(token) == position
    assert sorted(tokens) == tokens  # a consumer comparing stored tokens gets the log order


def test_the_first_position_form_is_still_accepted():
    for position, old in ((0, "1AAAAAAAAAAA"), (260, "1AAAAAAAAAQQ"), (2**63 - 1, "1f_________8")):
        assert journal.decode_position(old) == position
    for bad in ("1AAAAAAAAAEF", "2" + "0" * 15, "2" + "F" * 16, "2" + "f" * 16, "x"):
        with pytest.raises(journal.BadQuery):
            journal.decode_position(bad)


def test_seek_durations():
    assert journal.parse_seek("-PT2H") == 7200
    assert journal.parse_seek("-P1DT30M") == 86_400 + 1800
    assert journal.parse_seek("-P2W") == 2 * 604_800
    assert journal.parse_seek("-PT1.5S") == 1.5
    for bad in ("-P", "-PT", "PT1H", "-P1Y", "-PT1H2", ""):
        with pytest.raises(journal.BadQuery):
            journal.parse_seek(bad)


async def tenant_key(http: aiohttp.ClientSession, server: Server, munchkin_id: str) -> dict[str, str]:
    body = {"munchkinIds": [munchkin_id], "scopes": ["read"], "name": "journal reader"}
    async with http.post(f"{server.url}/v1/keys", json=body, headers=server.headers) as r:
        created = await r.json()
        assert r.status == 201, created
    return {"Authorization": f"Bearer {created['key']}"}


async def test_another_tenant_s_key_sees_no_such_subscription(server, http, subscribe):
    sub_id = await subscribe(format="cloudevents")
    await publish_ok(http, server, [activity(0)])
    async with http.get(server.url + journal_path(sub_id), headers=await tenant_key(http, server, OTHER_TENANT)) as r:
        assert r.status == 404
    async with http.get(server.url + journal_path(sub_id), headers=await tenant_key(http, server, MUNCHKIN)) as r:
        assert r.status == 200 and (await r.json())["events"][0]["event"]["id"] == "guid-0"


async def test_a_deprovisioned_subscription_has_no_journal(server, http, subscribe):
    sub_id = await subscribe(format="cloudevents")
    async with http.delete(f"{server.url}/v1/subscriptions/{sub_id}", headers=server.headers) as r:
        assert r.status == 200
    answer = await get(http, server, journal_path(sub_id))
    assert answer.status == 409 and "deprovisioned" in answer.json["detail"]
