"""Sample events: every catalog type builds a valid, catalog-shaped event, and POST …/sample
pushes one to a real endpoint the way deliveries go (format, auth, signatures)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from standardwebhooks import Webhook

from helpers import MUNCHKIN, Server
from leadstream import formats, samples
from leadstream.catalog import Catalog
from leadstream.errors import Invalid
from leadstream.security.signing import new_hmac_secret

SCHEMA = json.loads((Path(__file__).parent / "data" / "cloudevents-1.0.schema.json").read_text())
CE_VALIDATOR = jsonschema.Draft7Validator(SCHEMA, format_checker=jsonschema.FormatChecker())


def cloudevent(event: Any) -> dict[str, Any]:
    return formats.cloudevent(event, subscription_id="sub-1")


# -- building events --------------------------------------------------------------------------------


def test_every_activity_type_builds_a_catalog_shaped_event():
    catalog = Catalog()
    for activity in catalog.activity_types.values():
        for requested in (activity.id, activity.name, str(activity.id)):
            event = samples.sample_event(catalog, "activity", requested, MUNCHKIN, seed=7)
            assert event.etype == str(activity.id) and event.type == activity.ce_type
            assert event.position == 0  # not in the log
            ce = cloudevent(event)
            CE_VALIDATOR.validate(ce)
            data = ce["data"]
            assert data["activityTypeId"] == activity.id and data["activityType"] == activity.name
            assert data["leadId"].isdigit()
            assert [a["name"] for a in data["attributes"]] == list(activity.attributes)
            for attribute in data["attributes"]:
                assert attribute["dataType"] == activity.attributes[attribute["name"]].data_type
                assert _fits(attribute["value"], attribute["dataType"]), (activity.name, attribute)
            if activity.primary_attribute is not None:
                assert data["primaryAttributeValue"] and data["primaryAttributeValueId"] is not None


def _fits(value: Any, data_type: str) -> bool:
    """A value of the catalog's data type, as a platform would send it."""
    match data_type:
        case "integer" | "reference":
            return isinstance(value, int) and not isinstance(value, bool)
        case "float" | "currency":
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        case "boolean":
            return isinstance(value, bool)
        case "array":
            return isinstance(value, list)
    return isinstance(value, (str, int))  # string-ish types (Change Score's New Value is a number)


def test_lead_change_and_delete_look_like_the_platform_s():
    catalog = Catalog()
    change = cloudevent(samples.sample_event(catalog, "activity", "Change Data Value", MUNCHKIN))["data"]
    values = {a["name"]: a["value"] for a in change["attributes"]}
    assert change["primaryAttributeValue"] in ("Job Title", "City", "Lead Status", "Company Name")
    assert values["New Value"] != values["Old Value"] and values["Reason"] and values["Source"]
    deleted = cloudevent(samples.sample_event(catalog, "activity", 37, MUNCHKIN))["data"]
    assert deleted["primaryAttributeValueId"] == int(deleted["leadId"])


def test_custom_objects_audit_and_notifications():
    catalog = Catalog()
    co = samples.sample_event(catalog, "activity", "co:car_c", MUNCHKIN)
    assert co.etype == "co:car_c" and co.type == "com.adobe.platform.marketo.customobject.car_c"
    CE_VALIDATOR.validate(cloudevent(co))
    for component, actions in catalog.audit_components.items():
        event = samples.sample_event(catalog, "audit", component, MUNCHKIN)
        assert event.etype.split(":")[0] == component and event.etype.split(":")[1] in actions
        action = sorted(actions)[0]
        exact = samples.sample_event(catalog, "audit", f"{component.upper()}:{action.upper()}", MUNCHKIN)
        assert exact.etype == f"{component}:{action}"
        CE_VALIDATOR.validate(cloudevent(exact))
    for kind in catalog.notification_kinds.values():
        event = samples.sample_event(catalog, "notification", kind.kind, MUNCHKIN)
        data = cloudevent(event)["data"]
        assert event.etype == kind.kind and set(data["eventAction"]) == set(kind.event_action)
        assert data.get("subType") in kind.sub_types


def test_a_tenant_s_own_types_can_be_sampled():
    catalog = Catalog()
    catalog.load_activity_types(MUNCHKIN, {"result": [{"id": 100001, "name": "Attend Webinar", "primaryAttribute":
                                {"name": "Webinar ID", "dataType": "integer"}, "attributes": [{"name": "Minutes", "dataType": "integer"}]}]})  # fmt: skip
    event = samples.sample_event(catalog, "activity", "attend webinar", MUNCHKIN)
    assert event.type == "com.adobe.platform.marketo.activity.custom"
    with pytest.raises(Invalid):
        samples.sample_event(catalog, "activity", 100001, "234-BCD-567")  # another tenant has no such type


def test_seeded_samples_repeat_their_values():
    catalog = Catalog()
    one = cloudevent(samples.sample_event(catalog, "activity", 1, MUNCHKIN, seed=3))["data"]
    two = cloudevent(samples.sample_event(catalog, "activity", 1, MUNCHKIN, seed=3))["data"]
    assert one["attributes"] == two["attributes"] and one["leadId"] == two["leadId"]


@pytest.mark.parametrize(
    "stream, requested",
    [("activity", 99_999), ("activity", "Fly To Moon"), ("activity", "co:"), ("audit", "Email:fly"),
     ("audit", "Rocket"), ("audit", 5), ("notification", "nope"), ("notification", 1)],
)  # fmt: skip
def test_unknown_types_are_invalid_naming_type(stream, requested):
    with pytest.raises(Invalid) as caught:
        samples.sample_event(Catalog(), stream, requested, MUNCHKIN)
    assert caught.value.detail.startswith("type: ") and caught.value.extra["field"] == "type"


# -- POST …/sample ------------------------------------------------------------------------------------


class Endpoint:
    """A real endpoint on 127.0.0.1 that records requests and answers ``status``."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        self.token_requests = 0

    async def hook(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        return web.Response(status=self.status, text="ok" if self.status < 300 else "refused: bad day")

    async def challenge(self, request: web.Request) -> web.Response:
        return web.Response(text=request.query["challenge"])

    async def token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        return web.json_response({"access_token": "oauth-token-1", "expires_in": 3600})


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[Endpoint, str]]:
    recorder = Endpoint()
    app = web.Application()
    app.router.add_post("/hook", recorder.hook)
    app.router.add_get("/hook", recorder.challenge)
    app.router.add_post("/token", recorder.token)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield recorder, str(server.make_url(""))
    await server.close()


@pytest.fixture
def subscribe(server, http):
    """Create a subscription through the admin API; returns its id."""

    async def create(**settings: Any) -> str:
        document = {"name": "samples", "munchkinId": MUNCHKIN, "stream": "activity", **settings}
        async with http.post(f"{server.url}/v1/subscriptions", json=document, headers=server.headers) as r:
            created = await r.json()
            assert r.status == 201, created
        return created["id"]

    return create


async def sample(http: aiohttp.ClientSession, server: Server, sub_id: str, body: Any) -> tuple[int, Any]:
    async with http.post(f"{server.url}/v1/subscriptions/{sub_id}/sample", json=body, headers=server.headers) as r:
        return r.status, await r.json(content_type=None)


def rsa_valid(pem: bytes, body: bytes, signature: str) -> bool:
    key = serialization.load_pem_public_key(pem)
    try:
        key.verify(base64.b64decode(signature), body, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr]
    except Exception:
        return False
    return True


async def test_sample_goes_out_as_a_delivery(server, http, endpoint, subscribe):
    recorder, base = endpoint
    secret = new_hmac_secret()
    sub_id = await subscribe(endpoint=f"{base}/hook", format="cloudevents", eventTypes=[10],
                             auth={"type": "token", "token": "tok-123"}, signing={"hmacSecret": secret})  # fmt: skip
    last_before = await server.services.store.last_position()
    status, answer = await sample(http, server, sub_id, {"type": "Open Email"})
    assert status == 200, answer
    assert answer["delivered"] is True and answer["status"] == 200 and answer["error"] is None
    headers, body = recorder.requests[-1]
    events = orjson.loads(body)
    assert isinstance(events, list) and len(events) == 1  # a batch of one, as batch delivery sends
    assert events[0]["type"] == "com.adobe.platform.marketo.activity.standard.openemail"
    assert events[0]["eventid"] == answer["event"]["eventid"] and events[0]["recipientclientid"] == sub_id
    CE_VALIDATOR.validate(events[0])
    assert headers["Authorization"] == "Bearer tok-123"
    assert headers["X-Leadstream-Subscription"] == sub_id and headers["X-Leadstream-Sample"] == "true"
    assert headers["User-Agent"].startswith("leadstream/")
    Webhook(secret).verify(body, headers)  # raises if the HMAC does not verify
    assert headers["webhook-id"] == headers["X-Leadstream-Delivery"]
    for n in (1, 2):
        async with http.get(server.url + headers[f"x-adobe-public-key{n}-path"]) as r:
            pem = await r.read()
        assert rsa_valid(pem, body, headers[f"x-adobe-digital-signature-{n}"])
        assert not rsa_valid(pem, body + b" ", headers[f"x-adobe-digital-signature-{n}"])
    assert await server.services.store.last_position() == last_before  # outside the log


async def test_single_delivery_and_oauth2(server, http, endpoint, subscribe):
    recorder, base = endpoint
    sub_id = await subscribe(endpoint=f"{base}/hook", format="adobe_io", delivery="single",
                             auth={"type": "oauth2", "tokenUrl": f"{base}/token", "clientId": "c", "clientSecret": "s"})  # fmt: skip
    status, answer = await sample(http, server, sub_id, {"type": 1})
    assert status == 200 and answer["delivered"], answer
    headers, body = recorder.requests[-1]
    event = orjson.loads(body)
    assert isinstance(event, dict) and event["event_id"] == answer["event"]["eventid"]
    assert headers["x-adobe-event-id"] == event["event_id"]
    assert headers["Authorization"] == "Bearer oauth-token-1" and recorder.token_requests == 1


async def test_legacy_sample_and_custom_objects(server, http, endpoint, subscribe):
    recorder, base = endpoint
    sub_id = await subscribe(endpoint=f"{base}/hook", format="legacy", customObjects=True)
    status, answer = await sample(http, server, sub_id, {"type": "co:car_c"})
    assert status == 200 and answer["delivered"], answer
    headers, body = recorder.requests[-1]
    legacy = orjson.loads(body)
    assert legacy["munchkinId"] == MUNCHKIN and legacy["activities"] == []
    assert legacy["customObjects"][0]["apiName"] == "car_c"
    assert "x-adobe-digital-signature-1" not in headers  # legacy pushes carry no Adobe signatures


async def test_the_endpoint_s_refusal_is_reported(server, http, endpoint, subscribe):
    recorder, base = endpoint
    recorder.status = 500
    sub_id = await subscribe(endpoint=f"{base}/hook", format="cloudevents")
    status, answer = await sample(http, server, sub_id, {"type": 10})
    assert status == 200
    assert answer["delivered"] is False and answer["status"] == 500 and "refused: bad day" in answer["error"]


async def test_unreachable_endpoint_is_reported(server, http, subscribe):
    sub_id = await subscribe(endpoint="http://127.0.0.1:9/hook", format="legacy")  # legacy: no challenge
    status, answer = await sample(http, server, sub_id, {"type": 10})
    assert status == 200 and answer["status"] is None and "cannot connect" in answer["error"]


async def test_types_the_subscription_does_not_take_are_refused(server, http, endpoint, subscribe):
    _, base = endpoint
    sub_id = await subscribe(endpoint=f"{base}/hook", format="cloudevents", eventTypes=[10])
    for body in ({"type": 1}, {"type": "co:car_c"}, {"type": "Nope"}, {"type": None}, {}, {"type": True}):
        status, answer = await sample(http, server, sub_id, body)
        assert status == 422, (body, answer)
        assert answer["detail"].startswith("type:")
    status, _ = await sample(http, server, "no-such-subscription", {"type": 10})
    assert status == 404
