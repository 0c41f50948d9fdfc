"""Adobe I/O Events compatibility, end to end: real deliveries from a real server (subscriptions
made through the admin API, events through the ingest API) checked by independent verifiers —
Node's crypto.verify as Adobe's library uses it, `cryptography`, the `standardwebhooks` package,
the CloudEvents Python SDK — and a key rotation while the server delivers."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cloudevents.core.bindings.http import HTTPMessage, from_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from helpers import MUNCHKIN, Server, activity, publish, require_node, wait_until
from leadstream.security.signing import KeyRing

VERIFY_JS = Path(__file__).parent / "node" / "verify.js"
FAST = {"pushIntervalMs": 20, "retryIntervalMs": 20, "probeIntervalMs": 20, "timeoutMs": 5000}


@dataclass
class Delivery:
    headers: dict[str, str]  # lower-cased names
    body: bytes


@dataclass
class Endpoint:
    """A subscriber endpoint on 127.0.0.1: answers the challenge, records every POST as it came,
    and refuses the first ``fail_first`` of them with a 500."""

    url: str = ""
    fail_first: int = 0
    deliveries: list[Delivery] = field(default_factory=list)  # accepted (2xx) ones
    refused: list[Delivery] = field(default_factory=list)

    async def get(self, request: web.Request) -> web.Response:
        return web.Response(text=request.query.get("challenge", ""))

    async def post(self, request: web.Request) -> web.Response:
        delivery = Delivery({k.lower(): v for k, v in request.headers.items()}, await request.read())
        if len(self.refused) < self.fail_first:
            self.refused.append(delivery)
            return web.Response(status=500, text="not yet")
        self.deliveries.append(delivery)
        return web.Response(status=200)

    def events(self) -> list[dict[str, Any]]:
        """Every event delivered, in order (batches flattened)."""
        found: list[dict[str, Any]] = []
        for delivery in self.deliveries:
            body = orjson.loads(delivery.body)
            found += body if isinstance(body, list) else [body]
        return found


@pytest.fixture
async def endpoints() -> AsyncIterator[Any]:
    servers: list[TestServer] = []

    async def start(**options: Any) -> Endpoint:
        endpoint = Endpoint(**options)
        app = web.Application()
        app.router.add_get("/hook", endpoint.get)
        app.router.add_post("/hook", endpoint.post)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        endpoint.url = str(server.make_url("/hook"))
        return endpoint

    yield start
    for server in servers:
        await server.close()


async def subscribe(http: aiohttp.ClientSession, server: Server, endpoint: Endpoint, **settings: Any) -> dict[str, Any]:
    document = {"name": "adobe", "munchkinId": MUNCHKIN, "stream": "activity", "endpoint": endpoint.url,
                "format": "cloudevents", **FAST, **settings}  # fmt: skip
    async with http.post(f"{server.url}/v1/subscriptions", json=document, headers=server.headers) as r:
        created = await r.json()
        assert r.status == 201, created
    return created


async def publish_ok(http: aiohttp.ClientSession, server: Server, stream: str, records: list[dict[str, Any]]) -> None:
    status, body = await publish(http, server, stream, records)
    assert status == 200 and body["accepted"] == len(records), body


async def delivered(endpoint: Endpoint, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    await wait_until(lambda: len(endpoint.events()) >= count, timeout=timeout, what=f"{count} events delivered")
    return endpoint.events()


async def pem(http: aiohttp.ClientSession, server: Server, path: str, cache: dict[str, bytes]) -> bytes:
    """The public key at ``path``, fetched from leadstream over HTTP (no auth), as a receiver does."""
    if path not in cache:
        async with http.get(server.url + path) as r:
            assert r.status == 200, path
            cache[path] = await r.read()
    return cache[path]


def rsa_valid(pem_bytes: bytes, body: bytes, signature: str) -> bool:
    key = serialization.load_pem_public_key(pem_bytes)
    try:
        key.verify(base64.b64decode(signature), body, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr]
    except InvalidSignature:
        return False
    return True


async def assert_both_signatures(http, server, delivery: Delivery, cache: dict[str, bytes]) -> None:
    for n in (1, 2):
        key = await pem(http, server, delivery.headers[f"x-adobe-public-key{n}-path"], cache)
        signature = delivery.headers[f"x-adobe-digital-signature-{n}"]
        assert rsa_valid(key, delivery.body, signature), f"signature {n}"
        assert not rsa_valid(key, tampered(delivery.body), signature), f"signature {n} on a tampered body"


def tampered(body: bytes) -> bytes:
    return body.replace(b'"leadId":"', b'"leadId":"9', 1) if b'"leadId":"' in body else body + b" "


# -- RSA signatures --------------------------------------------------------------------------------


async def node_verify(node: str, delivery: Delivery, body: bytes, case_file: Path, base_url: str) -> tuple[int, str]:
    case_file.write_text(json.dumps({"body_base64": base64.b64encode(body).decode(), "headers": delivery.headers}))
    process = await asyncio.create_subprocess_exec(
        node, str(VERIFY_JS), str(case_file), base_url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_node_and_cryptography_verify_real_deliveries(server, http, endpoints, tmp_path):
    node = require_node()
    batch_endpoint, single_endpoint = await endpoints(), await endpoints()
    await subscribe(http, server, batch_endpoint, batchSize=5)
    single = await subscribe(http, server, single_endpoint, format="adobe_io", delivery="single")
    await publish_ok(http, server, "activity", [activity(i, type_id=(1, 10, 13)[i % 3]) for i in range(12)])
    await delivered(batch_endpoint, 12)
    await delivered(single_endpoint, 12)
    assert len(batch_endpoint.deliveries) >= 3

    cache: dict[str, bytes] = {}
    for delivery in batch_endpoint.deliveries + single_endpoint.deliveries:
        await assert_both_signatures(http, server, delivery, cache)
    for n, delivery in enumerate(batch_endpoint.deliveries[:2] + single_endpoint.deliveries[:2]):
        code, output = await node_verify(node, delivery, delivery.body, tmp_path / f"good{n}.json", server.url)
        assert code == 0 and output.count(": valid") == 2, output
        code, output = await node_verify(node, delivery, tampered(delivery.body), tmp_path / f"bad{n}.json", server.url)
        assert code == 1 and output.count("INVALID") == 2, output

    # single delivery: x-adobe-event-id names the one event; Adobe's library reads recipient_client_id
    for delivery in single_endpoint.deliveries:
        event = orjson.loads(delivery.body)
        assert delivery.headers["x-adobe-event-id"] == event["event_id"]
        assert event["recipient_client_id"] == single["id"]
        assert "x-adobe-retry-count" not in delivery.headers  # first attempts


# -- Standard Webhooks ------------------------------------------------------------------------------


async def test_standardwebhooks_accepts_hmac_deliveries_and_ids_survive_retries(server, http, endpoints):
    endpoint = await endpoints(fail_first=2)
    created = await subscribe(http, server, endpoint, signing={"hmac": True}, batchSize=500, retryAttempts=5)
    secret = created["signing"]["hmacSecret"]
    assert secret.startswith("whsec_")
    async with http.get(f"{server.url}/v1/subscriptions/{created['id']}", headers=server.headers) as r:
        assert (await r.json())["signing"] == {"hmacSecret": "***"}  # shown once, at creation

    await publish_ok(http, server, "activity", [activity(i) for i in range(3)])
    await delivered(endpoint, 3)
    attempts = endpoint.refused + endpoint.deliveries[:1]
    assert len(attempts) == 3
    webhook = Webhook(secret)
    for number, attempt in enumerate(attempts):
        assert webhook.verify(attempt.body, attempt.headers) == orjson.loads(attempt.body)
        with pytest.raises(WebhookVerificationError):
            webhook.verify(tampered(attempt.body), attempt.headers)
        assert attempt.headers.get("x-leadstream-retry-count") == (str(number) if number else None)
        assert attempt.headers.get("x-adobe-retry-count") == (str(number) if number else None)
    # the same delivery every time: one webhook-id, the batch id
    assert {a.headers["webhook-id"] for a in attempts} == {attempts[0].headers["x-leadstream-delivery"]}
    assert {a.body for a in attempts} == {attempts[0].body}
    # every later delivery is verified too, under a new id
    await publish_ok(http, server, "activity", [activity(i) for i in range(3, 6)])
    await delivered(endpoint, 6)
    later = endpoint.deliveries[-1]
    webhook.verify(later.body, later.headers)
    assert later.headers["webhook-id"] != attempts[0].headers["webhook-id"]


# -- CloudEvents SDK ----------------------------------------------------------------------------------


async def test_every_cloudevents_body_parses_with_the_sdk(server, http, endpoints):
    streams = {
        "activity": [activity(i, type_id=(1, 2, 10, 12, 13, 37)[i % 6]) for i in range(12)]
        + [{"kind": "customObject", "munchkinId": MUNCHKIN, "apiName": "car_c", "marketoGUID": f"co-{i}", "leadId": 7,
            "action": "update", "updatedAt": "2026-11-28T10:00:00Z", "fields": {"vin": f"V{i}"}} for i in range(3)],
        "audit": [{"munchkinId": MUNCHKIN, "componentType": "Email", "componentId": 232459 + i, "eventAction": "approve",
                   "user": 253, "userId": "someone@example.com"} for i in range(4)],
        "notification": [{"munchkinId": MUNCHKIN, "componentType": "campaign_abort", "subType": "user_campaign_abort",
                          "eventAction": {"campaignId": 55 + i, "userId": "someone@example.com"}} for i in range(4)],
    }  # fmt: skip
    endpoints_by_stream = {}
    for stream in streams:
        batch, single = await endpoints(), await endpoints()
        await subscribe(http, server, batch, stream=stream, customObjects=stream == "activity", batchSize=4)
        await subscribe(http, server, single, stream=stream, customObjects=stream == "activity", delivery="single")
        endpoints_by_stream[stream] = (batch, single)
    for stream, records in streams.items():
        await publish_ok(http, server, stream, records)

    parsed = 0
    for stream, records in streams.items():
        for endpoint, batched in zip(endpoints_by_stream[stream], (True, False)):
            await delivered(endpoint, len(records))
            for delivery in endpoint.deliveries:
                body = orjson.loads(delivery.body)
                assert isinstance(body, list) == batched  # a batch is an array, single is one object
                for element in body if isinstance(body, list) else [body]:
                    message = HTTPMessage(headers={"content-type": "application/cloudevents+json"},
                                          body=orjson.dumps(element))  # fmt: skip
                    event = from_http(message, JSONFormat(), CloudEvent)
                    assert event.get_specversion() == "1.0"
                    prefix = "customobject" if element["type"].count(".customobject.") else stream
                    assert event.get_type().startswith(f"com.adobe.platform.marketo.{prefix}.")
                    assert event.get_id() == element["id"] and event.get_time() is not None
                    assert event.get_extension("eventid") == element["eventid"]
                    assert event.get_data() == element["data"]
                    parsed += 1
    assert parsed == 2 * sum(len(records) for records in streams.values())


# -- key rotation --------------------------------------------------------------------------------------


async def test_key_rotation_while_delivering_keeps_both_headers_valid(server, http, endpoints, tmp_path):
    endpoint = await endpoints()
    await subscribe(http, server, endpoint, batchSize=10)
    ring = KeyRing(tmp_path / "data" / "keys")  # the server's data directory, as `leadstream keys rotate` opens it
    first_paths = ring.public_paths
    total = 0
    for _ in range(3):
        # rotate in the middle of a stream of deliveries
        publishing = asyncio.create_task(_publish_slowly(http, server, total, 40))
        await wait_until(lambda: len(endpoint.events()) > total + 5, what="deliveries before the rotation")
        ring.rotate()
        await publishing
        total += 40
        await delivered(endpoint, total)
    assert [e["id"] for e in endpoint.events()] == [f"guid-{i}" for i in range(total)]

    cache: dict[str, bytes] = {}
    for delivery in endpoint.deliveries:
        await assert_both_signatures(http, server, delivery, cache)
    used = [d.headers["x-adobe-public-key1-path"] for d in endpoint.deliveries]
    assert used[0] == first_paths[0] and used[-1] == ring.public_paths[0]
    assert len(set(used)) == 4  # the key 1 of each of the four rings signed in turn: the switches happened


async def test_a_running_server_signs_with_the_rotated_keys(server, http, endpoints, tmp_path):
    endpoint = await endpoints()
    await subscribe(http, server, endpoint)
    ring = KeyRing(tmp_path / "data" / "keys")  # as `leadstream keys rotate` opens it, in another process
    await publish_ok(http, server, "activity", [activity(0)])
    await delivered(endpoint, 1)
    before = endpoint.deliveries[-1].headers
    ring.rotate()
    await publish_ok(http, server, "activity", [activity(1)])
    await delivered(endpoint, 2)
    after = endpoint.deliveries[-1].headers
    # key 2 became key 1; the new key 2 signs too (nothing fetched /keys in between)
    assert after["x-adobe-public-key1-path"] == before["x-adobe-public-key2-path"]
    assert after["x-adobe-public-key2-path"] == ring.public_paths[1]


async def _publish_slowly(http: aiohttp.ClientSession, server: Server, start: int, count: int) -> None:
    for i in range(start, start + count):
        await publish_ok(http, server, "activity", [activity(i)])
        await asyncio.sleep(0.005)
