"""Ingest API (SPEC §2) against a real server on loopback and a real SQLite file."""

from __future__ import annotations

import random

import aiohttp
import orjson
import pytest

from helpers import MUNCHKIN, activity, publish

MIXED_TYPES = [1, 2, 3, 6, 7, 10, 11, 12, 13, 22, 37]


def mixed(n: int, offset: int = 0) -> list[dict]:
    rng = random.Random(offset)
    return [activity(offset + i, type_id=rng.choice(MIXED_TYPES)) for i in range(n)]


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


async def all_events(server):
    return await server.services.store.read(0, 1_000_000)


@pytest.mark.parametrize("ndjson", [False, True])
async def test_publish_then_republish_is_idempotent(server, session, ndjson):
    records = mixed(1000)
    status, body = await publish(session, server, "activity", records, ndjson=ndjson)
    assert (status, body) == (200, {"accepted": 1000, "duplicates": 0, "rejected": []})
    status, body = await publish(session, server, "activity", records, ndjson=ndjson)
    assert (status, body) == (200, {"accepted": 0, "duplicates": 1000, "rejected": []})
    events = await all_events(server)
    assert [e.id for e in events] == [r["marketoGUID"] for r in records]
    assert [e.position for e in events] == sorted(e.position for e in events)
    assert len({e.eventid for e in events}) == 1000


async def test_duplicates_inside_one_request_are_counted(server, session):
    status, body = await publish(session, server, "activity", [activity(1), activity(2), activity(1)])
    assert (status, body["accepted"], body["duplicates"]) == (200, 2, 1)


async def test_every_stream_is_stored_with_key_columns(server, session):
    audit = {
        "munchkinId": MUNCHKIN,
        "componentType": "Email",
        "componentId": 232459,
        "eventAction": "approve",
        "user": 253,
        "userId": "someone@example.com",
        "id": "a-1",
        "time": "2026-11-28T10:00:00Z",
    }
    note = {
        "munchkinId": MUNCHKIN,
        "componentType": "web_services",
        "subType": "dailyQuota",
        "eventAction": {"dailyQuota": 50000, "percent": 90, "serviceNames": ["Get Leads"]},
    }
    custom = {
        "kind": "customObject",
        "munchkinId": MUNCHKIN,
        "apiName": "car_c",
        "marketoGUID": "car-1",
        "leadId": 5,
        "action": "create",
        "updatedAt": "2026-11-28T10:00:00Z",
        "fields": {"vin": "X1"},
    }
    for stream, record in [("audit", audit), ("notification", note), ("activity", custom)]:
        status, body = await publish(session, server, stream, [record])
        assert (status, body["accepted"]) == (200, 1), body
    events = await all_events(server)
    assert [(e.stream, e.etype) for e in events] == [
        ("audit", "Email:approve"),
        ("notification", "web_services"),
        ("activity", "co:car_c"),
    ]
    assert events[0].id == "a-1" and events[0].time == "2026-11-28T10:00:00Z"
    assert events[1].id == events[1].eventid  # assigned when absent
    assert orjson.loads(events[2].data)["fields"] == {"vin": "X1"}
    # the audit id is its key: sending it again is a duplicate
    status, body = await publish(session, server, "audit", [audit])
    assert body["duplicates"] == 1


BAD_RECORDS = [
    ("munchkinId", activity(101, munchkinId="123-abc-456"), "'123-abc-456'"),
    ("activityTypeId", activity(102, activityTypeId=424242), "424242"),
    ("marketoGUID", {k: v for k, v in activity(103).items() if k != "marketoGUID"}, "missing"),
    ("leadId", {k: v for k, v in activity(104).items() if k != "leadId"}, "missing"),
    ("activityDate", {k: v for k, v in activity(105).items() if k != "activityDate"}, "missing"),
    ("leadId", activity(106, leadId="twelve"), "'twelve'"),
    ("activityDate", activity(107, activityDate="28/11/2026 10:00"), "'28/11/2026 10:00'"),
    ("activityDate", activity(108, activityDate="2026-11-28T10:00:00"), "time zone"),
    ("attributes", activity(109, attributes=[{"name": f"a{i}", "value": i} for i in range(500)]), "500"),
    ("attributes[0].value", activity(110, attributes=[{"name": "Big", "value": "x" * 40_000}]), "'Big'"),
    ("attributes[0].name", activity(111, attributes=[{"value": 1}]), "missing"),
]


async def test_mixed_good_and_bad_records_keep_the_good_ones(server, session):
    good = [activity(i) for i in range(5)]
    records = []
    for i, g in enumerate(good):
        records.append(g)
        if i < len(BAD_RECORDS):
            records.append(BAD_RECORDS[i][1])
    records.extend(b[1] for b in BAD_RECORDS[len(good) :])
    status, body = await publish(session, server, "activity", records)
    assert status == 200
    assert body["accepted"] == 5
    rejected = {r["index"]: r["errors"] for r in body["rejected"]}
    bad_indexes = [i for i, r in enumerate(records) if r not in good]
    assert sorted(rejected) == bad_indexes
    for (field, _, value), index in zip(BAD_RECORDS, bad_indexes):
        message = rejected[index][0]
        assert message.startswith(f"{field}:"), message
        assert value in message, message
    assert [e.id for e in await all_events(server)] == [g["marketoGUID"] for g in good]


async def test_bad_audit_and_notification_records_name_field_and_value(server, session):
    audit = {"munchkinId": MUNCHKIN, "componentType": "Email", "eventAction": "approve"}
    records = [
        audit,
        {**audit, "componentType": "Spaceship"},
        {**audit, "eventAction": "launch"},
        {**audit, "munchkinId": "nope"},
    ]
    status, body = await publish(session, server, "audit", records)
    assert (status, body["accepted"]) == (200, 1)
    errors = [r["errors"][0] for r in body["rejected"]]
    assert errors[0].startswith("componentType: 'Spaceship'")
    assert errors[1].startswith("eventAction: 'launch'")
    assert errors[2].startswith("munchkinId: 'nope'")
    status, body = await publish(
        session, server, "notification", [{"munchkinId": MUNCHKIN, "componentType": "solar_flare", "eventAction": {}}]
    )
    assert status == 422
    assert body["rejected"][0]["errors"][0].startswith("componentType: 'solar_flare'")


async def test_nothing_accepted_is_422_with_the_same_body(server, session):
    status, body = await publish(session, server, "activity", [activity(1, munchkinId="x"), {"x": 1}])
    assert status == 422
    assert body["accepted"] == 0 and [r["index"] for r in body["rejected"]] == [0, 1]
    assert await all_events(server) == []


async def raw_post(session, server, body: bytes, content_type="application/json", stream="activity", headers=None):
    async with session.post(
        f"{server.url}/v1/streams/{stream}/events",
        data=body,
        headers={**server.headers, "Content-Type": content_type, **(headers or {})},
    ) as r:
        return r.status, r.headers.get("Content-Type"), await r.json(content_type=None)


@pytest.mark.parametrize(
    "body, where",
    [
        (b'[{"munchkinId": "123-ABC-456",\n  "leadId" 5}]', "line 2, column 12"),
        (b"not json at all", "line 1, column 5"),
        (b'[{"munchkinId": "123-ABC-456"', "ends before the JSON is complete"),
        (b'{"an": "object"}', "JSON array"),
        (b"", "empty"),
        (b"   \n ", "empty"),
    ],
)
async def test_unparseable_body_is_400_problem_saying_where(server, session, body, where):
    status, content_type, problem = await raw_post(session, server, body)
    assert status == 400 and content_type == "application/problem+json"
    assert where in problem["detail"], problem
    assert await all_events(server) == []


async def test_bad_ndjson_line_is_400_naming_the_line(server, session):
    body = orjson.dumps(activity(1)) + b"\n" + b'{"broken": \n' + orjson.dumps(activity(2))
    status, _, problem = await raw_post(session, server, body, "application/x-ndjson")
    assert status == 400 and "NDJSON line 2" in problem["detail"]
    assert await all_events(server) == []


async def test_limits_are_413(server, session):
    too_many = [activity(i) for i in range(10_001)]
    status, _, problem = await raw_post(session, server, orjson.dumps(too_many))
    assert status == 413 and "10001 records" in problem["detail"]
    huge = b"[" + b" " * (10 * 1024 * 1024) + b"]"
    status, _, problem = await raw_post(session, server, huge)
    assert status == 413 and "10 MiB" in problem["detail"]
    assert await all_events(server) == []


async def test_wrong_content_type_stream_and_key(server, session):
    body = orjson.dumps([activity(1)])
    status, _, problem = await raw_post(session, server, body, "text/csv")
    assert status == 415 and "text/csv" in problem["detail"]
    status, _, problem = await raw_post(session, server, body, stream="leads")
    assert status == 404 and "'leads'" in problem["detail"]
    async with session.post(f"{server.url}/v1/streams/activity/events", data=body) as r:
        assert r.status == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    async with session.post(
        f"{server.url}/v1/streams/activity/events", data=body, headers={"Authorization": "Bearer wrong"}
    ) as r:
        assert r.status == 401
    assert await all_events(server) == []


async def test_healthz_needs_no_key_and_openapi_documents_ingest(server, session):
    async with session.get(f"{server.url}/healthz") as r:
        assert r.status == 200 and (await r.json())["status"] == "ok"
    async with session.get(f"{server.url}/openapi.json") as r:
        spec = await r.json()
    operation = spec["paths"]["/v1/streams/{stream}/events"]["post"]
    assert {"200", "400", "413", "422"} <= set(operation["responses"])


async def test_a_record_with_several_faults_names_every_one(server, session):
    four_faults = activity(1, munchkinId="123-abc-456", leadId="twelve", activityDate="yesterday", marketoGUID="")
    status, body = await publish(session, server, "activity", [four_faults, activity(2)])
    assert (status, body["accepted"]) == (200, 1)
    errors = body["rejected"][0]["errors"]
    assert sorted(e.split(":")[0] for e in errors) == ["activityDate", "leadId", "marketoGUID", "munchkinId"], errors
    assert any("'twelve'" in e for e in errors) and any("'yesterday'" in e for e in errors)
    # Type faults and the others together; missing fields too.
    record = {k: v for k, v in activity(3, activityTypeId=424242, attributes="none").items() if k != "activityDate"}
    status, body = await publish(session, server, "activity", [record])
    errors = body["rejected"][0]["errors"]
    assert status == 422 and len(errors) == 3, errors
    assert {e.split(":")[0] for e in errors} == {"attributes", "activityDate", "activityTypeId"}
    assert "activityDate: required field is missing" in errors


async def test_enum_faults_list_the_allowed_values(server, session):
    custom = {
        "kind": "customObject", "munchkinId": MUNCHKIN, "apiName": "car_c", "marketoGUID": "car-1",
        "action": "explode", "updatedAt": "2026-11-28T10:00:00Z",
    }  # fmt: skip
    audit = {"munchkinId": "nope", "componentType": "Spaceship", "eventAction": "launch", "time": "later"}
    _, body = await publish(session, server, "activity", [custom])
    assert body["rejected"][0]["errors"] == ["action: 'explode' is not an action (one of: create, update, delete)"]
    _, body = await publish(session, server, "audit", [audit])
    errors = body["rejected"][0]["errors"]
    assert [e.split(":")[0] for e in errors] == ["munchkinId", "componentType", "time"], errors
    assert "(one of: " in errors[1] and "Email" in errors[1]
    assert await all_events(server) == []
