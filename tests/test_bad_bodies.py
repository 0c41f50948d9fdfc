"""Bad bytes get a clear 400 or a per-record rejection, never a 500, and cost no valid record
(issue 16, items 3, 4 and 7)."""

from __future__ import annotations

import aiohttp
import orjson
import pytest

from helpers import MUNCHKIN, activity

GOOD = orjson.dumps(activity(1))
OTHER_GOOD = orjson.dumps(activity(2))


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


async def post(session, server, body: bytes, ndjson: bool = False, path: str = "/v1/streams/activity/events"):
    content_type = "application/x-ndjson" if ndjson else "application/json"
    headers = {**server.headers, "Content-Type": content_type}
    async with session.post(server.url + path, data=body, headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def stored_ids(server) -> list[str]:
    return [e.id for e in await server.services.store.read(0, 1000)]


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


async def test_invalid_utf8_in_a_string_rejects_that_record_only_naming_where(session, server):
    bad = GOOD.replace(b'"guid-1"', b'"guid-\xff\xfe"')
    status, body = await post(session, server, b"[" + bad + b"," + OTHER_GOOD + b"]")
    assert status == 200, body
    assert body["accepted"] == 1
    [rejection] = body["rejected"]
    assert rejection["index"] == 0
    assert "invalid UTF-8" in rejection["errors"][0] and "byte" in rejection["errors"][0]
    assert await stored_ids(server) == ["guid-2"]


async def test_invalid_utf8_in_ndjson_is_a_400_naming_the_line(session, server):
    bad = GOOD.replace(b'"guid-1"', b'"guid-\xc3"')
    status, body = await post(session, server, OTHER_GOOD + b"\n" + bad, ndjson=True)
    assert status == 400
    assert "line 2" in body["detail"] and "UTF-8" in body["detail"]
    assert await stored_ids(server) == []


@pytest.mark.parametrize("ndjson", [False, True])
async def test_nesting_a_thousand_deep_is_a_400_with_a_message(session, server, ndjson):
    record = b'{"munchkinId":"123-ABC-456","attributes":[{"name":"x","value":' + nested(1000) + b"}]}"
    body_bytes = record if ndjson else b"[" + record + b"]"
    status, body = await post(session, server, body_bytes, ndjson=ndjson)
    assert status == 400, body
    assert "nest too deeply" in body["detail"]
    status, body = await post(session, server, nested(1000), ndjson=ndjson)
    assert status == 400 and "nest too deeply" in body["detail"]


async def test_a_custom_object_field_300_deep_is_rejected_as_too_deep_not_as_a_big_integer(session, server):
    record = {
        "kind": "customObject",
        "munchkinId": MUNCHKIN,
        "apiName": "car_c",
        "marketoGUID": "car-1",
        "action": "create",
        "updatedAt": "2026-11-28T10:00:00Z",
        "fields": {"deep": 0},
    }
    raw = orjson.dumps(record).replace(b'{"deep":0}', b'{"deep":' + nested(300) + b"}")
    status, body = await post(session, server, b"[" + raw + b"," + GOOD + b"]")
    assert status == 200 and body["accepted"] == 1
    [error] = body["rejected"][0]["errors"]
    assert "nest too deeply" in error and "64 bits" not in error


async def test_a_lone_surrogate_is_named_as_such(session, server):
    bad = GOOD.replace(b'"guid-1"', b'"guid-\\ud800"')
    status, body = await post(session, server, b"[" + bad + b"]")
    assert status == 400
    assert "\\ud800" in body["detail"] and "surrogate" in body["detail"] and "ends before" not in body["detail"]


async def test_a_record_with_a_field_given_twice_is_rejected_and_the_others_are_stored(session, server):
    twice = GOOD[:-1] + b',"munchkinId":"999-ZZZ-999"}'
    status, body = await post(session, server, b"[" + twice + b"," + OTHER_GOOD + b"]")
    assert status == 200 and body["accepted"] == 1
    assert body["rejected"] == [
        {"index": 0, "errors": ["munchkinId: the field appears more than once in the record (each field once)"]}
    ]
    # The same name inside a nested value is no duplicate.
    inside = orjson.dumps(activity(3, attributes=[{"name": "munchkinId", "value": {"munchkinId": 1}}]))
    status, body = await post(session, server, b"[" + inside + b"]")
    assert status == 200 and body["accepted"] == 1
    assert sorted(await stored_ids(server)) == ["guid-2", "guid-3"]
    assert {e.munchkin_id for e in await server.services.store.read(0, 1000)} == {MUNCHKIN}


@pytest.mark.parametrize("depth", [100, 20_000])
async def test_a_deeply_nested_subscription_body_is_a_400(session, server, depth):
    document = b'{"name":"x","munchkinId":"123-ABC-456","stream":"activity","filter":' + nested(depth) + b"}"
    status, body = await post(session, server, document, path="/v1/subscriptions")
    assert status == 400, body
    assert "levels deep" in body["detail"]
    async with session.get(server.url + "/v1/subscriptions", headers=server.headers) as r:
        assert (await r.json())["subscriptions"] == []
