"""`leadstream receive`: a real aiohttp server on 127.0.0.1, driven over HTTP."""

from __future__ import annotations

import asyncio
import base64
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from standardwebhooks import Webhook

from helpers import wait_until
from leadstream.receiver import RECEIVER, ReceiverConfig, make_receiver_app, start_receiver
from leadstream.testing import free_port


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "events.ndjson"


@pytest.fixture
async def receive(out: Path):
    """start(**options) -> a TestClient on a receiver writing to `out`."""
    clients: list[TestClient] = []

    async def start(**options) -> TestClient:
        client = TestClient(TestServer(make_receiver_app(ReceiverConfig(out=out, **options))))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


def lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def cloudevent(n: int) -> dict:
    return {
        "eventid": f"00000000-0000-4000-8000-{n:012d}",
        "specversion": "1.0",
        "type": "com.adobe.platform.marketo.activity.standard.openemail",
        "source": "urn:marketo_activity_stream",
        "id": f"guid-{n}",
        "time": "2026-11-28T10:00:00Z",
        "data": {"munchkinId": "123-ABC-456", "leadId": str(n)},
    }


def adobe_io(n: int) -> dict:
    return {
        "event_id": f"10000000-0000-4000-8000-{n:012d}",
        "event": {
            "specversion": "1.0",
            "type": "com.adobe.platform.marketo.audit.user.email",
            "data": {"componentType": "Email", "eventAction": "approve", "componentId": n},
        },
    }


def legacy(guids: list[str], custom_objects: list[dict] = ()) -> dict:
    body = {
        "sourceApplication": "Marketo",
        "munchkinId": "123-ABC-456",
        "messageId": "batch-1",
        "activities": [
            {"marketoGUID": g, "leadId": 7, "activityTypeId": 10, "activityType": "Open Email"} for g in guids
        ],
    }
    if custom_objects:
        body["customObjects"] = list(custom_objects)
    return body


# -- challenge ------------------------------------------------------------------------------------


async def test_challenge_is_echoed_as_plain_text(receive):
    client = await receive()
    response = await client.get("/hooks/marketo", params={"challenge": "abc-123"})
    assert response.status == 200
    assert response.content_type == "text/plain"
    assert await response.text() == "abc-123"


async def test_challenge_is_echoed_as_json(receive):
    client = await receive(challenge_format="json")
    response = await client.get("/", params={"challenge": "xyz"})
    assert response.status == 200
    assert await response.json() == {"challenge": "xyz"}


def test_unknown_challenge_format_is_refused():
    with pytest.raises(ValueError, match="challenge_format"):
        make_receiver_app(ReceiverConfig(out=None, challenge_format="xml"))


# -- token ----------------------------------------------------------------------------------------


async def test_bearer_token_is_required(receive, out):
    client = await receive(token="s3cret")
    body = orjson.dumps([cloudevent(1)])
    missing = await client.post("/", data=body)
    wrong = await client.post("/", data=body, headers={"Authorization": "Bearer nope"})
    right = await client.post("/", data=body, headers={"Authorization": "Bearer s3cret"})
    assert (missing.status, wrong.status, right.status) == (401, 401, 200)
    assert "missing" in (await missing.json())["error"]
    assert "s3cret" not in await wrong.text()
    stats = await (await client.get("/stats")).json()
    assert stats["rejected"] == 2 and stats["received"] == 1 and stats["requests"] == 3
    assert [e["id"] for e in await wait_until(lambda: lines(out))] == ["guid-1"]


# -- formats and de-duplication -------------------------------------------------------------------


async def test_same_batch_twice_is_written_once(receive, out):
    client = await receive()
    body = orjson.dumps([cloudevent(n) for n in range(3)])
    first = await (await client.post("/", data=body)).json()
    second = await (await client.post("/", data=body)).json()
    assert first == {"received": 3, "duplicates": 0}
    assert second == {"received": 0, "duplicates": 3}
    written = await wait_until(lambda: lines(out) if len(lines(out)) == 3 else None)
    assert written == [cloudevent(n) for n in range(3)]
    stats = client.server.app[RECEIVER].stats
    assert (stats["received"], stats["duplicates"]) == (3, 3)


async def test_cloudevents_single_object_and_array(receive, out):
    client = await receive()
    assert (await client.post("/", data=orjson.dumps(cloudevent(1)))).status == 200
    assert (await client.post("/", data=orjson.dumps([cloudevent(2), cloudevent(1)]))).status == 200
    assert await wait_until(lambda: lines(out) if len(lines(out)) == 2 else None) == [cloudevent(1), cloudevent(2)]


async def test_adobe_io_single_object_and_array(receive, out):
    client = await receive()
    await client.post("/", data=orjson.dumps([adobe_io(1), adobe_io(2)]))
    await client.post("/", data=orjson.dumps(adobe_io(2)))
    await client.post("/", data=orjson.dumps(adobe_io(3)))
    written = await wait_until(lambda: lines(out) if len(lines(out)) == 3 else None)
    assert written == [adobe_io(1), adobe_io(2), adobe_io(3)]


async def test_legacy_activities_and_custom_objects(receive, out):
    client = await receive()
    car = {
        "apiName": "car_c",
        "marketoGUID": "car-1",
        "leadId": 7,
        "action": "update",
        "updatedAt": "2026-11-28T10:00:00Z",
        "fields": {"color": "red"},
    }
    car_later = dict(car, updatedAt="2026-11-28T10:00:05Z", fields={"color": "blue"})
    first = await client.post("/", data=orjson.dumps(legacy(["g1", "g2"], [car])))
    second = await client.post("/", data=orjson.dumps(legacy(["g2", "g3"], [car, car_later])))
    assert await first.json() == {"received": 3, "duplicates": 0}
    # g2 and the first car change were seen; the car's later change is a new event
    assert await second.json() == {"received": 2, "duplicates": 2}
    written = await wait_until(lambda: lines(out) if len(lines(out)) == 5 else None)
    assert [e["marketoGUID"] for e in written] == ["g1", "g2", "car-1", "g3", "car-1"]
    assert written[2] == car and written[4] == car_later


async def test_pretty_printed_events_become_one_line_each(receive, out):
    client = await receive()
    body = orjson.dumps([cloudevent(1), cloudevent(2)], option=orjson.OPT_INDENT_2)
    assert b"\n" in body
    assert (await client.post("/", data=body)).status == 200
    await wait_until(lambda: len(lines(out)) == 2)
    assert out.read_bytes().count(b"\n") == 2


@pytest.mark.parametrize(
    "body, says",
    [
        (b"{not json", "not a legacy"),
        (b'[{"id": "no event id"}]', "[0]: neither"),
        (b'{"activities": [{"leadId": 1}]}', "marketoGUID"),
    ],
)
async def test_bodies_of_no_known_format_get_400(receive, out, body, says):
    client = await receive()
    response = await client.post("/", data=body)
    assert response.status == 400
    assert says in (await response.json())["error"]
    assert client.server.app[RECEIVER].stats["rejected"] == 1


async def test_seen_set_is_bounded(receive, out):
    client = await receive(dedupe_window=2)
    for n in (1, 2, 3, 1):  # 1 fell out of a window of two ids, so it is new again
        await client.post("/", data=orjson.dumps(cloudevent(n)))
    written = await wait_until(lambda: lines(out) if len(lines(out)) == 4 else None)
    assert [e["id"] for e in written] == ["guid-1", "guid-2", "guid-3", "guid-1"]


# -- failing, slow, too large ---------------------------------------------------------------------


async def test_fail_for_answers_status_then_recovers(receive, out):
    client = await receive(fail_for=0.3, status=503)
    body = orjson.dumps([cloudevent(1)])
    assert (await client.post("/", data=body)).status == 503
    statuses = []

    async def post() -> int:
        statuses.append((await client.post("/", data=body)).status)
        return statuses[-1]

    async def recovered() -> bool:
        return await post() == 200

    await wait_until(recovered, 5, what="the receiver to recover")
    assert set(statuses) <= {503, 200}
    stats = client.server.app[RECEIVER].stats
    assert stats["failed"] >= 1 and stats["received"] == 1
    assert len(await wait_until(lambda: lines(out))) == 1


async def test_fail_for_with_another_status(receive):
    client = await receive(fail_for=60, status=429)
    assert (await client.post("/", data=orjson.dumps([cloudevent(1)]))).status == 429
    # challenges are still answered during an outage: only POSTs fail
    assert (await client.get("/", params={"challenge": "c"})).status == 200


async def test_delay_slows_every_post(receive):
    client = await receive(delay=0.2)
    started = time.monotonic()
    response = await client.post("/", data=orjson.dumps([cloudevent(1)]))
    assert response.status == 200
    assert time.monotonic() - started >= 0.2


async def test_body_over_max_body_gets_413(receive, out):
    client = await receive(max_body=100_000)
    big = orjson.dumps([dict(cloudevent(n), data={"pad": "x" * 1000}) for n in range(150)])
    assert len(big) > 100_000
    response = await client.post("/", data=big)
    assert response.status == 413
    assert "100000" in (await response.json())["error"]
    assert (await client.post("/", data=orjson.dumps([cloudevent(1)]))).status == 200


async def test_chunked_body_over_max_body_gets_413(receive):
    client = await receive(max_body=100_000)

    async def chunks():
        for _ in range(20):
            yield b" " * 10_000

    response = await client.post("/", data=chunks())
    assert response.status == 413


# -- signatures -----------------------------------------------------------------------------------

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def hmac_headers(body: bytes, secret: str = SECRET) -> dict[str, str]:
    timestamp = datetime.now(UTC)
    signature = Webhook(secret).sign("msg_1", timestamp, body.decode())
    return {"webhook-id": "msg_1", "webhook-timestamp": str(int(timestamp.timestamp())), "webhook-signature": signature}


async def test_hmac_signature_is_verified(receive, out):
    client = await receive(hmac_secret=SECRET)
    body = orjson.dumps([cloudevent(1)])
    headers = hmac_headers(body)
    assert (await client.post("/", data=body, headers=headers)).status == 200
    tampered = await client.post("/", data=body.replace(b"guid-1", b"guid-9"), headers=headers)
    assert tampered.status == 401
    assert "webhook-signature" in (await tampered.json())["error"]
    other_secret = hmac_headers(body, "whsec_" + base64.b64encode(b"another secret, 32 bytes long!!").decode())
    assert (await client.post("/", data=body, headers=other_secret)).status == 401
    assert (await client.post("/", data=body)).status == 401
    assert (await client.post("/", data=body, headers=dict(headers, **{"webhook-signature": "garbage"}))).status == 401
    assert [e["id"] for e in await wait_until(lambda: lines(out))] == ["guid-1"]


@pytest.fixture(scope="module")
def rsa_keys() -> list[rsa.RSAPrivateKey]:
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)]


def pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def rsa_signature(key: rsa.RSAPrivateKey, body: bytes) -> str:
    return base64.b64encode(key.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode()


async def test_rsa_signature_is_verified(receive, rsa_keys):
    first, second = rsa_keys
    client = await receive(public_keys=(pem(first), pem(second)))
    body = orjson.dumps([cloudevent(1)])
    signed = {"x-adobe-digital-signature-1": rsa_signature(first, body)}
    assert (await client.post("/", data=body, headers=signed)).status == 200
    tampered = await client.post("/", data=body + b" ", headers=signed)
    assert tampered.status == 401
    assert "x-adobe-digital-signature" in (await tampered.json())["error"]
    assert (await client.post("/", data=body)).status == 401


async def test_rsa_second_signature_serves_key_rotation(receive, rsa_keys):
    first, second = rsa_keys
    client = await receive(public_keys=(pem(second),))  # the subscriber has only the new key
    body = orjson.dumps([cloudevent(2)])
    headers = {
        "x-adobe-digital-signature-1": rsa_signature(first, body),
        "x-adobe-digital-signature-2": rsa_signature(second, body),
    }
    assert (await client.post("/", data=body, headers=headers)).status == 200
    only_old = {"x-adobe-digital-signature-1": headers["x-adobe-digital-signature-1"]}
    assert (await client.post("/", data=body, headers=only_old)).status == 401


# -- on a real socket -----------------------------------------------------------------------------


async def test_start_receiver_serves_stats_and_flushes_on_close(out):
    running = await start_receiver(ReceiverConfig(out=out))
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{running.url}/hook", data=orjson.dumps([cloudevent(n) for n in range(5)])) as r:
                assert r.status == 200
            async with session.get(f"{running.url}/stats") as r:
                stats = await r.json()
    finally:
        await running.close()
    assert stats["received"] == 5 and stats["requests"] == 1
    # closed right after the POST: the buffered lines were written on the way down
    assert [e["id"] for e in lines(out)] == [f"guid-{n}" for n in range(5)]


# -- the bodies leadstream really sends -----------------------------------------------------------


@pytest.mark.parametrize("fmt", ["legacy", "cloudevents", "adobe_io"])
async def test_bodies_made_by_formats_are_received_once_each(receive, out, fmt):
    from leadstream.catalog import Catalog
    from leadstream.events import Validator
    from leadstream.formats import batch_body, event_body
    from leadstream.sim import Platform

    validator = Validator(Catalog())
    records = Platform(seed=11, tenants=["123-ABC-456"]).next_records(300)
    events = [
        validator.event(stream, orjson.dumps(record))
        for stream, record in records
        if fmt != "legacy" or stream == "activity"
    ]
    assert any(e.etype.startswith("co:") for e in events)
    client = await receive()
    batches = [events[i : i + 100] for i in range(0, len(events), 100)]
    for batch in batches:
        body = batch_body(fmt, batch, subscription_id="sub-1", batch_id="b-1", created="2026-11-28T10:00:00Z")
        assert (await client.post("/", data=body)).status == 200
    # a retry of the first batch and, for the Adobe formats, one event sent alone: all duplicates
    first = batch_body(fmt, batches[0], subscription_id="sub-1", batch_id="b-1", created="2026-11-28T10:00:00Z")
    assert await (await client.post("/", data=first)).json() == {"received": 0, "duplicates": len(batches[0])}
    if fmt != "legacy":
        single = event_body(fmt, events[5], subscription_id="sub-1")
        assert await (await client.post("/", data=single)).json() == {"received": 0, "duplicates": 1}
    written = await wait_until(lambda: lines(out) if len(lines(out)) == len(events) else None)
    ids = {"legacy": lambda e: e["marketoGUID"], "cloudevents": lambda e: e["id"], "adobe_io": lambda e: e["event_id"]}[
        fmt
    ]
    if fmt == "legacy":  # a legacy body lists a batch's activities, then its custom objects
        expected = [e.id for batch in batches for e in sorted(batch, key=lambda e: e.etype.startswith("co:"))]
    else:
        expected = [e.id if fmt == "cloudevents" else e.eventid for e in events]
    assert [ids(e) for e in written] == expected


async def test_leadstream_receive_counts_duplicates_in_its_output_and_v_shows_only_requests(tmp_path):
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "leadstream.cli", "receive", "--port", str(port), "-v",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = await asyncio.wait_for(proc.stdout.readline(), 10)
        assert first.decode().strip() == f"receiving on http://127.0.0.1:{port}"
        batch = [{"munchkinId": "123-ABC-456", "marketoGUID": "g1", "activityTypeId": 1}]
        body = orjson.dumps({"activities": batch, "messageCreatedDate": "2026-11-28T10:00:00Z"})
        async with aiohttp.ClientSession() as session:
            for _ in range(2):  # the same event twice: the second is a duplicate
                async with session.post(f"http://127.0.0.1:{port}/", data=body) as r:
                    assert r.status == 200
        line = await asyncio.wait_for(proc.stdout.readline(), 10)  # the counters, every 2 s when they change
        assert line.decode().strip() == "received 1 events, 1 duplicates dropped"
    finally:
        proc.terminate()
        _, err = await proc.communicate()
    assert "POST / -> 200" in err.decode()
    assert "selector" not in err.decode().lower() and "Traceback" not in err.decode()
