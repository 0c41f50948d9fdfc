"""The delivery engine end to end: real SQLite file, real aiohttp receivers on 127.0.0.1,
intervals shrunk to milliseconds (SPEC §4)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import jsonschema
import pytest

import leadstream
from helpers import MUNCHKIN, activity, wait_until
from leadstream import positions
from leadstream.security.secretbox import new_master_key
from test_delivery_support import bench, receiver, wait_ids

SCHEMA = json.loads((Path(__file__).parent / "data" / "cloudevents-1.0.schema.json").read_text())
CLOUDEVENT = jsonschema.validators.validator_for(SCHEMA)(SCHEMA, format_checker=jsonschema.FormatChecker())


@pytest.mark.parametrize("fmt", ["legacy", "cloudevents", "adobe_io"])
async def test_2500_events_arrive_once_in_order_within_batch_limits(tmp_path, fmt):
    async with bench(tmp_path) as b, receiver() as r:
        sub = await b.subscribe(r.url, format=fmt, batchSize=200, maxBatchBytes=64 * 1024)
        records = [activity(i, type_id=(10, 1, 13)[i % 3]) for i in range(2500)]
        for start in range(0, 2500, 500):
            await b.publish("activity", records[start : start + 500])
        await wait_ids(r, records)
        assert r.ids() == [rec["marketoGUID"] for rec in records]  # all, once, in order

        batch_ids = set()
        for request in r.requests:
            body = request.json()
            events = body["activities"] if fmt == "legacy" else body
            assert 1 <= len(events) <= 200
            assert len(request.body) <= 64 * 1024
            h = request.headers
            assert h["content-type"] == "application/json"
            assert h["user-agent"] == f"leadstream/{leadstream.__version__}"
            assert h["x-leadstream-subscription"] == sub["id"]
            assert "x-leadstream-retry-count" not in h and "x-adobe-retry-count" not in h
            batch_ids.add(h["x-leadstream-delivery"])
            if fmt == "legacy":
                assert body["sourceApplication"] == "Marketo" and body["munchkinId"] == MUNCHKIN
                assert body["messageId"] == h["x-leadstream-delivery"]
                first = events[0]
                assert isinstance(first["leadId"], int) and first["activityType"] in (
                    "Visit Webpage",
                    "Open Email",
                    "Change Data Value",
                )
                assert {"name": "Device", "dataType": "string", "value": "iPhone"} in first["attributes"]
            elif fmt == "cloudevents":
                for event in events:
                    CLOUDEVENT.validate(event)
                    assert event["recipientclientid"] == sub["id"]
                    assert isinstance(event["data"]["leadId"], str)
            else:
                for event in events:
                    assert set(event) >= {"event_id", "event"}
                    assert event["event"]["specversion"] == "1.0" and event["event"]["dataschema"] == "V1.0"
        assert len(batch_ids) == len(r.requests)  # a fresh batch id per batch

        view = await b.wait_status(sub["id"], "delivered count", delivered=2500, pending=0)
        assert view["state"] == "active" and view["consecutiveFailures"] == 0
        assert view["cursor"] == positions.encode(await b.store.last_position())


async def test_a_backlog_goes_in_full_batches_each_within_its_byte_cap(tmp_path):
    # From "earliest" both senders read pages of 1,000 behind the window: a page fills the buffer
    # past one batch, which is then cut at batchSize or, first, at maxBatchBytes.
    async with bench(tmp_path) as b, receiver() as by_count, receiver() as by_bytes:
        records = [activity(i, type_id=(10, 1, 13)[i % 3]) for i in range(2300)]
        for start in range(0, 2300, 500):
            await b.publish("activity", records[start : start + 500])
        cap = 100 * 1024
        await b.subscribe(by_count.url, startAt="earliest", batchSize=500)
        await b.subscribe(by_bytes.url, startAt="earliest", batchSize=500, maxBatchBytes=cap)
        await wait_ids(by_count, records)
        await wait_ids(by_bytes, records)
        everything = [rec["marketoGUID"] for rec in records]
        assert by_count.ids() == everything and by_bytes.ids() == everything  # all, once, in order
        assert [len(x.json()["activities"]) for x in by_count.requests] == [500, 500, 500, 500, 300]
        sizes = [len(x.body) for x in by_bytes.requests]
        assert all(size <= cap for size in sizes)
        assert all(size > cap - 2048 for size in sizes[:-1])  # each cut where the next event would not fit
        assert all(len(x.json()["activities"]) < 500 for x in by_bytes.requests)


async def test_batches_flush_on_size_bytes_and_push_interval(tmp_path):
    async with bench(tmp_path) as b, receiver() as r:
        await b.subscribe(r.url, batchSize=50, pushIntervalMs=300)
        published_at = time.monotonic()
        await b.publish("activity", [activity(i) for i in range(120)])
        # two full batches go at once; the last 20 wait for the push interval
        await wait_until(lambda: len(r.requests) >= 2, what="two full batches")
        first_two = r.requests[:2]
        assert [len(x.json()["activities"]) for x in first_two] == [50, 50]
        await wait_until(lambda: len(r.requests) == 3, what="the partial batch")
        assert len(r.requests[2].json()["activities"]) == 20
        # it waited for the push interval, counted from the oldest event's arrival (not from the
        # last batch, which a busy machine may send late)
        assert r.requests[2].at - published_at >= 0.3


def custom_object(i: int) -> dict:
    return {
        "kind": "customObject",
        "munchkinId": MUNCHKIN,
        "apiName": "car_c",
        "marketoGUID": f"car-{i}",
        "action": "update",
        "updatedAt": "2026-11-28T10:00:00Z",
        "fields": {"color": "red", "seats": i},
    }


def audit(i: int, component: str = "Email", action: str = "approve") -> dict:
    return {
        "munchkinId": MUNCHKIN,
        "id": f"audit-{i}",
        "componentType": component,
        "componentId": 1000 + i,
        "eventAction": action,
        "user": 253,
        "userId": "someone@example.com",
    }


async def test_type_filters_custom_objects_and_separate_copies(tmp_path):
    async with bench(tmp_path) as b, receiver() as changes, receiver() as everything, receiver() as approvals:
        await b.subscribe(changes.url, eventTypes=[13, "Delete Lead"])
        await b.subscribe(everything.url, eventTypes=["*"], customObjects=True, format="cloudevents")
        await b.subscribe(approvals.url, stream="audit", eventTypes=["Email:approve", "Landing Page"])
        types = [10, 13, 37, 1, 13, 12]
        records = [activity(i, type_id=types[i % len(types)]) for i in range(60)]
        await b.publish("activity", records[:30])
        await b.publish("activity", [custom_object(i) for i in range(5)])
        await b.publish("activity", records[30:])
        audits = [audit(0), audit(1, action="edit"), audit(2, "Landing Page", "create"), audit(3, "Form", "approve")]
        await b.publish("audit", audits)

        wanted = [r["marketoGUID"] for r in records if r["activityTypeId"] in (13, 37)]
        every = (
            [r["marketoGUID"] for r in records[:30]]
            + [f"car-{i}" for i in range(5)]
            + [r["marketoGUID"] for r in records[30:]]
        )
        await wait_ids(changes, wanted)
        await wait_ids(everything, every)
        await wait_ids(approvals, ["audit-0", "audit-2"])
        assert changes.ids() == wanted  # no Visit Webpage, no custom objects
        assert everything.ids() == every  # its own full copy, custom objects in log order
        assert approvals.ids() == ["audit-0", "audit-2"]  # Email:approve and any Landing Page action
        car = next(e for r in everything.delivered for e in r.json() if e["id"] == "car-0")
        assert car["type"] == "com.adobe.platform.marketo.customobject.car_c"


async def test_a_restart_resends_the_batch_in_flight_under_the_same_id_and_nothing_else(tmp_path):
    hold = True

    async def answer(seen):
        while hold:
            await asyncio.sleep(0.01)

    async with bench(tmp_path) as b, receiver(answer=answer) as r:
        await b.subscribe(r.url, batchSize=10, timeoutMs=60_000)
        await b.publish("activity", [activity(i) for i in range(25)])
        await wait_until(lambda: r.requests, what="the first batch to be in flight")
        await b.restart()  # the attempt is abandoned; the batch stays in flight in the saved state
        hold = False
        await wait_ids(r, list(range(35)))  # the abandoned 10 (finished late) and all 25 again
        first, again = r.requests[0], r.requests[1]
        assert again.headers["x-leadstream-delivery"] == first.headers["x-leadstream-delivery"]
        assert again.json()["activities"] == first.json()["activities"]
        # the receiver finished the abandoned request too: those 10 events came twice, nothing else did
        assert r.ids() == [f"guid-{i}" for i in range(10)] + [f"guid-{i}" for i in range(25)]
        await b.restart()  # acknowledged batches are not sent again
        await b.publish("activity", [activity(99)])
        await wait_until(lambda: r.ids()[-1] == "guid-99", what="the next event")
        assert len(r.ids()) == 36


async def test_single_delivery_with_rsa_and_hmac_signatures_and_a_subscriber_filter(tmp_path):
    import base64

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    from standardwebhooks import Webhook

    from leadstream.security.signing import KeyRing

    keyring = KeyRing(tmp_path / "keys")
    async with bench(tmp_path) as b, receiver() as r:  # the service signs with the ring in tmp_path/keys
        sub = await b.subscribe(
            r.url,
            format="cloudevents",
            delivery="single",
            signing={"hmac": True},
            filter={"data": {"primaryAttributeValue": [{"prefix": "Welcome"}]}},
        )
        secret = sub["signing"]["hmacSecret"]
        records = [activity(i, primaryAttributeValue="Welcome Email" if i % 2 else "Goodbye") for i in range(6)]
        await b.publish("activity", records)
        await wait_ids(r, ["guid-1", "guid-3", "guid-5"])
        assert r.ids() == ["guid-1", "guid-3", "guid-5"]  # the filter over the CloudEvent
        for request in r.requests:
            event = request.json()
            assert isinstance(event, dict)  # one object per request
            h = request.headers
            assert h["x-adobe-event-id"] == event["eventid"]
            Webhook(secret).verify(request.body, {k: v for k, v in h.items() if k.startswith("webhook-")})
            assert h["webhook-id"] == h["x-leadstream-delivery"]
            for n in (1, 2):
                name = h[f"x-adobe-public-key{n}-path"].rsplit("/", 1)[1]
                key = serialization.load_pem_public_key(keyring.public_pem(name))
                key.verify(
                    base64.b64decode(h[f"x-adobe-digital-signature-{n}"]),
                    request.body,
                    padding.PKCS1v15(),
                    hashes.SHA256(),
                )


async def test_two_nodes_on_postgresql_share_the_subscriptions_and_take_over_a_stopped_one(pg_url, tmp_path):
    overrides = {"database_url": pg_url, "lease_ttl": 0.6, "master_key": new_master_key()}
    async with (
        bench(tmp_path / "a", node_id="a", **overrides) as a,
        bench(tmp_path / "b", node_id="b", **overrides) as b,
    ):
        async with contextlib.AsyncExitStack() as stack:
            receivers = [await stack.enter_async_context(receiver()) for _ in range(4)]
            for r in receivers:
                await a.subscriptions.create(
                    {
                        "name": "n",
                        "munchkinId": MUNCHKIN,
                        "stream": "activity",
                        "endpoint": r.url,
                        "pushIntervalMs": 20,
                        "startAt": "earliest",
                    }
                )
            await a.publish("activity", [activity(i) for i in range(50)])
            for r in receivers:
                await wait_ids(r, list(range(50)))
            assert 0 < sum(s.running for s in a.engine.senders.values()) < 4  # shared between the nodes
            await a.stack.aclose()  # node a leaves; its leases run out and node b takes them over
            await b.publish("activity", [activity(i) for i in range(50, 80)])
            for r in receivers:
                await wait_ids(r, list(range(80)))
                assert r.ids() == [f"guid-{i}" for i in range(80)]  # once each, in order
            assert sum(s.running for s in b.engine.senders.values()) == 4
