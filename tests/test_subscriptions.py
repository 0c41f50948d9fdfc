"""The subscription admin API (SPEC §3) on a real server: defaults, validation that names the
field, secrets never echoed, list/get/patch/delete, pause/resume/replay, the attempt log."""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp
import jsonschema
import pytest

from helpers import MUNCHKIN, activity, publish, running_server, wait_until
from leadstream import positions
from test_delivery_support import bench, receiver, wait_ids

DEFAULTS = {
    "eventTypes": ["*"], "customObjects": False, "delivery": "batch", "auth": {"type": "none"},
    "batchSize": 500, "maxBatchBytes": 2097152, "pushIntervalMs": 2000, "timeoutMs": 20000,
    "retryAttempts": 3, "retryIntervalMs": 180000, "probeIntervalMs": 180000, "startAt": "now",
    "signing": None, "filter": None,
}  # fmt: skip
STATUS = {
    "state",
    "pausedReason",
    "delivered",
    "pending",
    "expired",
    "deadLettered",
    "lagSeconds",
    "cursor",
    "consecutiveFailures",
    "lastSuccessAt",
    "lastAttemptAt",
    "lastError",
    "nextAttemptAt",
}


class Api:
    def __init__(self, http: aiohttp.ClientSession, server) -> None:
        self.http, self.server = http, server

    async def call(self, method: str, path: str, body=None, **kwargs):
        async with self.http.request(
            method, f"{self.server.url}/v1/subscriptions{path}", json=body, headers=self.server.headers, **kwargs
        ) as r:
            return r.status, await r.json(content_type=None), r.headers.get("content-type", "")


@pytest.fixture
def api(http, server):
    return Api(http, server)


def minimal(endpoint: str, **extra) -> dict:
    return {"name": "crm-sync", "munchkinId": MUNCHKIN, "stream": "activity", "endpoint": endpoint, **extra}


async def test_create_fills_in_every_default_and_shows_live_status(api):
    async with receiver() as r:
        status, body, _ = await api.call("POST", "", minimal(r.url))
        assert status == 201
        assert {k: body[k] for k in DEFAULTS} == DEFAULTS
        assert body["format"] == "legacy" and body["id"] and body["createdAt"].endswith("Z")
        assert set(body) >= STATUS
        assert (body["state"], body["delivered"], body["pending"], body["consecutiveFailures"]) == ("active", 0, 0, 0)

        status, audit, _ = await api.call("POST", "", minimal(r.url, stream="audit", eventTypes=["Email"]))
        assert status == 201 and audit["format"] == "adobe_io"  # the default of the other streams (challenge passed)

        status, got, _ = await api.call("GET", f"/{body['id']}")
        assert status == 200 and got["name"] == "crm-sync" and got["state"] == "active"


INVALID = [
    ({"batchSize": 0}, "batchSize"),
    ({"batchSize": 501}, "batchSize"),
    ({"pushIntervalMs": 5}, "pushIntervalMs"),
    ({"stream": "leads"}, "stream"),
    ({"munchkinId": "123-abc-456"}, "munchkinId"),
    ({"endpoint": "ftp://example.com/x"}, "endpoint"),
    ({"endpoint": "http://user:pw@127.0.0.1/x"}, "endpoint"),
    ({"format": "xml"}, "format"),
    ({"stream": "audit", "format": "legacy", "eventTypes": ["*"]}, "format"),
    ({"delivery": "single"}, "delivery"),  # legacy has no single form
    ({"stream": "notification", "customObjects": True}, "customObjects"),
    ({"eventTypes": ["Visit Webpage", "Teleport"]}, "eventTypes[1]"),
    ({"eventTypes": [99999]}, "eventTypes[0]"),
    ({"eventTypes": []}, "eventTypes"),
    ({"stream": "audit", "eventTypes": ["Email:fly"]}, "eventTypes[0]"),
    ({"stream": "notification", "eventTypes": ["campaign_oops"]}, "eventTypes[0]"),
    ({"auth": {"type": "token"}}, "auth.token"),
    ({"auth": {"type": "oauth2", "tokenUrl": "x", "clientId": "a", "clientSecret": "b"}}, "auth.tokenUrl"),
    ({"auth": {"type": "basic"}}, "auth.type"),
    ({"startAt": "yesterday"}, "startAt"),
    ({"colour": "blue"}, "colour"),
    ({"signing": {"hmacSecret": "nope"}}, "signing.hmacSecret"),
    ({"filter": {"type": [{"prefix": 1}]}}, "filter"),
]


async def test_invalid_subscriptions_are_refused_naming_the_field(api):
    for change, field in INVALID:
        document = {**minimal("http://127.0.0.1:9/hook"), **change}
        status, body, content_type = await api.call("POST", "", document)
        assert status == 422, (change, body)
        assert content_type.startswith("application/problem+json")
        assert body["detail"].startswith(field), (change, body["detail"])
    assert (await api.call("GET", ""))[1]["subscriptions"] == []


async def test_missing_fields_and_bad_json_are_named(api, http, server):
    status, body, _ = await api.call("POST", "", {"name": "x", "munchkinId": MUNCHKIN, "stream": "activity"})
    assert (status, body["detail"]) == (422, "endpoint: required field is missing")
    async with http.post(f"{server.url}/v1/subscriptions", data=b"{nope", headers=server.headers) as r:
        assert r.status == 400 and "not valid JSON" in (await r.json(content_type=None))["detail"]


async def test_secrets_are_stored_never_shown_and_kept_when_sent_back_redacted(api):
    secret = "t0p-s3cret-token"
    async with receiver() as r:
        status, created, _ = await api.call(
            "POST", "", minimal(r.url, auth={"type": "token", "token": secret}, pushIntervalMs=10)
        )
        assert status == 201 and created["auth"] == {"type": "token", "token": "***"}
        sub_id = created["id"]
        status, patched, _ = await api.call("PATCH", f"/{sub_id}", {"auth": created["auth"], "batchSize": 100})
        assert status == 200 and patched["batchSize"] == 100 and patched["auth"]["token"] == "***"
        for path in ("", f"/{sub_id}"):
            status, body, _ = await api.call("GET", path)
            assert secret not in str(body)
        await publish(api.http, api.server, "activity", [activity(1)])
        await wait_ids(r, ["guid-1"])
        assert r.requests[0].headers["authorization"] == f"Bearer {secret}"  # the stored secret, kept

        status, created, _ = await api.call("POST", "", minimal(r.url, signing={"hmac": True}))
        assert status == 201 and created["signing"]["hmacSecret"].startswith("whsec_")  # shown this once
        status, body, _ = await api.call("GET", f"/{created['id']}")
        assert body["signing"] == {"hmacSecret": "***"}


async def test_list_filters_by_tenant_and_unknown_ids_are_404(api):
    async with receiver() as r:
        await api.call("POST", "", minimal(r.url))
        await api.call("POST", "", minimal(r.url, munchkinId="999-XYZ-111", name="other"))
        status, everything, _ = await api.call("GET", "")
        assert status == 200 and len(everything["subscriptions"]) == 2
        status, one, _ = await api.call("GET", "", params={"munchkinId": "999-XYZ-111"})
        assert [s["name"] for s in one["subscriptions"]] == ["other"]
        for method, path in (
            ("GET", "/nope"),
            ("PATCH", "/nope"),
            ("DELETE", "/nope"),
            ("POST", "/nope/pause"),
            ("GET", "/nope/attempts"),
        ):
            status, _body, _ = await api.call(method, path, {} if method != "GET" else None)
            assert status == 404, (method, path)


async def test_the_admin_key_is_required(http, server):
    async with http.get(f"{server.url}/v1/subscriptions") as r:
        assert r.status == 401


async def test_patch_cannot_change_tenant_or_stream_and_deprovisioned_is_final(api):
    async with receiver() as r:
        _, created, _ = await api.call("POST", "", minimal(r.url))
        sub_id = created["id"]
        status, body, _ = await api.call("PATCH", f"/{sub_id}", {"stream": "audit"})
        assert status == 422 and body["detail"].startswith("stream: cannot be changed")
        status, body, _ = await api.call("PATCH", f"/{sub_id}", {"eventTypes": ["Open Email"], "pushIntervalMs": 50})
        assert status == 200 and body["eventTypes"] == ["Open Email"] and body["pushIntervalMs"] == 50
        status, body, _ = await api.call("DELETE", f"/{sub_id}")
        assert status == 200 and body["state"] == "deprovisioned"
        assert (await api.call("PATCH", f"/{sub_id}", {"batchSize": 5}))[0] == 409
        assert (await api.call("POST", f"/{sub_id}/resume"))[0] == 409
        status, body, _ = await api.call("GET", f"/{sub_id}")
        assert body["state"] == "deprovisioned"


async def test_pause_resume_replay_and_the_attempt_log_over_http(api):
    async with receiver() as r:
        _, created, _ = await api.call("POST", "", minimal(r.url, pushIntervalMs=10, startAt="earliest"))
        sub_id = created["id"]
        before = datetime.now(UTC).isoformat()
        await publish(api.http, api.server, "activity", [activity(i) for i in range(10)])
        await wait_ids(r, list(range(10)))

        status, body, _ = await api.call("POST", f"/{sub_id}/pause")
        assert (status, body["state"], body["pausedReason"]) == (200, "paused", "manual")
        await publish(api.http, api.server, "activity", [activity(i) for i in range(10, 15)])
        status, body, _ = await api.call("POST", f"/{sub_id}/resume")
        assert (status, body["state"]) == (200, "active")
        await wait_ids(r, list(range(15)))

        status, body, _ = await api.call("POST", f"/{sub_id}/replay", {"from": before})
        assert status == 200 and body["cursor"] == positions.encode(0)
        await wait_ids(r, list(range(30)))
        assert r.ids() == [f"guid-{i}" for i in range(15)] * 2  # everything again, in order

        status, body, _ = await api.call("POST", f"/{sub_id}/replay", {"from": positions.encode(10)})
        assert status == 200 and body["cursor"] == positions.encode(10)
        await wait_ids(r, list(range(35)))
        status, body, _ = await api.call("POST", f"/{sub_id}/replay", {"from": 10_000})
        assert status == 422 and body["detail"].startswith("from: replay moves the cursor back")
        status, body, _ = await api.call("POST", f"/{sub_id}/replay", {"from": True})
        assert status == 422 and body["detail"].startswith("from:")

        status, body, _ = await api.call("GET", f"/{sub_id}/attempts", params={"limit": 2})
        assert status == 200 and len(body["attempts"]) == 2
        latest = body["attempts"][0]
        assert {"time", "batchId", "events", "status", "error", "durationMs", "retryCount"} <= set(latest)
        assert latest["status"] == 200 and latest["events"] == 5 and latest["retryCount"] == 0
        # As /openapi.json documents them: the positions are the journal's tokens (strings), and replay takes them.
        async with api.http.get(f"{api.server.url}/openapi.json") as r:
            operation = (await r.json())["paths"]["/v1/subscriptions/{sub_id}/attempts"]["get"]
        schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
        jsonschema.Draft202012Validator(schema).validate(body)
        first, last = (positions.decode_or_none(latest[k]) for k in ("firstPosition", "lastPosition"))
        assert first is not None and last is not None and last - first == latest["events"] - 1
        assert schema["properties"]["attempts"]["items"]["properties"]["firstPosition"]["type"] == "string"


async def test_replay_of_an_expired_position_is_410(tmp_path):
    async with running_server(data_dir=tmp_path, retention=0.2, purge_interval=0.05) as server:
        async with aiohttp.ClientSession() as http, receiver() as r:
            api = Api(http, server)
            _, created, _ = await api.call("POST", "", minimal(r.url, pushIntervalMs=10))
            await publish(http, server, "activity", [activity(i) for i in range(5)])
            await wait_ids(r, list(range(5)))
            store = server.services.store
            await wait_until(lambda: _empty(store), what="every event to expire")
            status, body, _ = await api.call("POST", f"/{created['id']}/replay", {"from": 1})
            assert status == 410 and "expired" in body["detail"]
            # a time before retention is clamped to what is left: nothing to send, not an error
            status, body, _ = await api.call("POST", f"/{created['id']}/replay", {"from": "2020-01-01T00:00:00Z"})
            assert status == 200


async def _empty(store) -> bool:
    return await store.first_position() > await store.last_position()


async def test_a_challenge_that_fails_refuses_the_subscription(api):
    async with receiver() as r:
        r_url = r.url.replace("/hook", "/elsewhere")  # 404 on the challenge GET
        status, body, _ = await api.call("POST", "", minimal(r_url, format="cloudevents"))
        assert status == 422 and "challenge" in body["detail"] and "404" in body["detail"]


async def test_private_endpoints_are_refused_unless_allowed(tmp_path):
    async with bench(tmp_path, allow_private_endpoints=False) as b:
        for url in (
            "http://127.0.0.1:8080/x",
            "http://localhost/x",
            "http://10.1.2.3/x",
            "http://192.168.0.9/x",
            "http://169.254.169.254/latest",
            "http://[::1]:80/x",
            "http://0.0.0.0/x",
            "http://[fe80::1]/x",
            "http://[::ffff:127.0.0.1]/x",
        ):
            with pytest.raises(Exception) as refused:
                await b.subscribe(url, format="legacy")
            assert refused.value.detail.startswith("endpoint:") and "private" in refused.value.detail, url
        with pytest.raises(Exception) as refused:
            await b.subscribe(
                "https://93.184.216.34/x",
                auth={"type": "oauth2", "tokenUrl": "http://127.0.0.1/t", "clientId": "a", "clientSecret": "b"},
            )
        assert refused.value.detail.startswith("auth.tokenUrl:")
        # a public address is accepted (nothing is published, so nothing is sent there)
        created = await b.subscribe("https://93.184.216.34/hook", format="legacy")
        assert created["endpoint"] == "https://93.184.216.34/hook"


async def test_delivery_metrics_are_exposed(api, http, server):
    async with receiver() as r:
        _, created, _ = await api.call("POST", "", minimal(r.url, pushIntervalMs=10))
        await publish(http, server, "activity", [activity(i) for i in range(7)])
        await wait_ids(r, list(range(7)))
        async with http.get(f"{server.url}/metrics") as answer:
            text = await answer.text()
        label = f'subscription="{created["id"]}"'
        assert f"leadstream_delivered_events_total{{{label}}} 7.0" in text
        assert f"leadstream_delivery_lag_seconds{{{label}}} 0.0" in text
        assert "leadstream_batch_latency_seconds_bucket" in text and "leadstream_delivery_attempt_seconds_count" in text
        assert "leadstream_delivery_failed_attempts_total" in text


async def test_list_pages_are_bounded_and_chained_by_next(api, http, server):
    async with receiver() as r:
        created = [(await api.call("POST", "", minimal(r.url, name=f"s{i}")))[1]["id"] for i in range(5)]
        seen, path = [], "/v1/subscriptions?limit=2"
        while path:
            async with http.get(server.url + path, headers=server.headers) as response:
                page = await response.json()
            assert len(page["subscriptions"]) <= 2
            seen += [s["id"] for s in page["subscriptions"]]
            path = page.get("next")
        assert seen == created
        status, body, _ = await api.call("GET", "", params={"limit": 5000})
        assert status == 422 and "limit" in body["detail"]
