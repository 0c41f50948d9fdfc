"""Tenant isolation over every route of the OpenAPI document (issue 8).

Tenant A owns a subscription, a key and catalog types. For every operation the document lists:
- without a key: 401;
- with tenant B's key (all scopes): the answer about A's things is exactly the answer about things
  that do not exist (same status, same body once the ids are swapped); a change is refused, and a
  read (a list filtered on A) shows nothing of A's;
- with A's ingest-only key: 403 everywhere but ingest; with A's read-only key: 403 on every change;
- nothing of A's has changed afterwards.
A route added later is covered by the same walk; if it needs a new path parameter or a body, the
test says so.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import aiohttp
import orjson

from helpers import ADMIN_KEY, activity, running_server
from helpers import MUNCHKIN as TENANT_A
from test_delivery_support import receiver

TENANT_B = "987-XYZ-654"
NOBODY = "555-ZZZ-555"  # a tenant that does not exist
PUBLIC = {("GET", "/healthz"), ("GET", "/metrics"), ("GET", "/keys/{name}")}  # no key, by design (no tenant data)
TENANT_PARAMS = {"sub_id", "munchkinId", "key_id", "source_id"}


def bodies(endpoint: str, munchkin: str) -> dict[tuple[str, str], Any]:
    """A valid body for every operation that takes one, about ``munchkin``'s things."""
    return {
        ("PUT", "/v1/catalog/activity/{munchkinId}"): {
            "result": [{"id": 100001, "name": "Attend Webinar", "attributes": []}]
        },
        ("POST", "/v1/catalog/activity/{munchkinId}/custom"): {
            "result": [{"id": 100002, "name": "Watch Demo", "attributes": []}]
        },
        ("POST", "/v1/keys"): {"munchkinIds": [munchkin], "scopes": ["read"]},
        ("POST", "/v1/alerts"): {"endpoint": endpoint},  # operator only: every tenant key gets 403
        ("POST", "/v1/streams/{stream}/events"): [activity(900, munchkin=munchkin)],
        ("POST", "/v1/subscriptions"): {
            "name": "x",
            "munchkinId": munchkin,
            "stream": "activity",
            "endpoint": endpoint,
        },
        ("PATCH", "/v1/subscriptions/{sub_id}"): {"batchSize": 17},
        ("POST", "/v1/sources"): source_body(munchkin),
        ("PATCH", "/v1/sources/{source_id}"): {"quotaShare": 0.25},
        ("POST", "/v1/subscriptions/{sub_id}/replay"): {"from": 0},
        ("POST", "/v1/subscriptions/{sub_id}/sample"): {"type": "Visit Webpage"},
    }


def source_body(munchkin: str) -> dict[str, Any]:
    # port 9 (discard): the walk is about the API; the source's polls fail harmlessly meanwhile
    return {
        "type": "marketo",
        "name": "a-instance",
        "munchkinId": munchkin,
        "restUrl": "http://127.0.0.1:9",
        "clientId": "a-client",
        "clientSecret": "a-client-secret",
    }


class Walk:
    def __init__(self, session: aiohttp.ClientSession, url: str, endpoint: str, owned: dict[str, str]) -> None:
        self.session, self.url, self.endpoint, self.owned = session, url, endpoint, owned
        self.missing = {
            "sub_id": str(uuid.uuid4()),
            "munchkinId": NOBODY,
            "key_id": "0123456789ab",
            "stream": "activity",
            "source_id": "src_00000000000000000000",
            "alert_id": "alr_0123456789abcdef",
        }

    def request(self, method: str, path: str, op: dict[str, Any], target: str) -> tuple[str, Any, dict[str, str]]:
        """URL, body and the ids used, for ``target`` "owned" (A's things) or "missing"."""
        ids = self.owned if target == "owned" else self.missing
        params = set(re.findall(r"{(\w+)}", path))
        unknown = params - set(ids)
        assert not unknown, f"{method} {path}: the test has no value for {unknown}; add one"
        url = self.url + re.sub(r"{(\w+)}", lambda m: ids[m.group(1)], path)
        query_names = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
        if "munchkinId" in query_names:
            url += f"?munchkinId={ids['munchkinId']}"
        body = None
        if "requestBody" in op:
            known = bodies(self.endpoint, ids["munchkinId"])
            assert (method, path) in known, f"{method} {path} takes a body: add one to bodies()"
            body = known[(method, path)]
        return url, body, ids

    async def send(self, method: str, url: str, body: Any, key: str | None) -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        data = orjson.dumps(body) if body is not None else None
        if data is not None:
            headers["Content-Type"] = "application/json"
        async with self.session.request(method, url, data=data, headers=headers) as r:
            return r.status, await r.text()

    def normalized(self, text: str, ids: dict[str, str]) -> str:
        for name in TENANT_PARAMS:
            text = text.replace(ids[name], f"<{name}>")
        return text


async def make_key(session: aiohttp.ClientSession, url: str, munchkins: list[str], scopes: list[str]) -> dict[str, Any]:
    async with session.post(
        f"{url}/v1/keys",
        json={"munchkinIds": munchkins, "scopes": scopes},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    ) as r:
        assert r.status == 201
        return await r.json()


async def test_every_route_keeps_tenants_apart(tmp_path):
    async with (
        running_server(data_dir=tmp_path / "data") as server,
        receiver() as endpoint,
        aiohttp.ClientSession() as s,
    ):
        operator = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with s.post(
            f"{server.url}/v1/subscriptions",
            headers=operator,
            json={
                "name": "a-sync",
                "munchkinId": TENANT_A,
                "stream": "activity",
                "endpoint": endpoint.url,
                "auth": {"type": "token", "token": "tenant-a-token"},
                "pushIntervalMs": 20,
            },
        ) as r:
            assert r.status == 201, await r.text()
            sub_a = await r.json()
        async with s.post(f"{server.url}/v1/sources", headers=operator, json=source_body(TENANT_A)) as r:
            assert r.status == 201, await r.text()
            source_a = await r.json()
        key_a = await make_key(s, server.url, [TENANT_A], ["subscriptions"])
        ingest_a = (await make_key(s, server.url, [TENANT_A], ["ingest"]))["key"]
        read_a = (await make_key(s, server.url, [TENANT_A], ["read"]))["key"]
        key_b = (await make_key(s, server.url, [TENANT_B], ["ingest", "subscriptions", "read"]))["key"]
        async with s.post(f"{server.url}/v1/streams/activity/events", headers=operator, json=[activity(1)]) as r:
            assert r.status == 200

        async with s.get(f"{server.url}/openapi.json") as r:
            document = await r.json()
        owned = {
            "sub_id": sub_a["id"],
            "munchkinId": TENANT_A,
            "key_id": key_a["id"],
            "stream": "activity",
            "source_id": source_a["id"],
            "alert_id": "alr_0123456789abcdef",
        }
        walk = Walk(s, server.url, endpoint.url, owned)
        operations = [(m.upper(), p, op) for p, ops in document["paths"].items() for m, op in ops.items()]
        assert len(operations) >= 20  # the whole admin API is in the document
        checked = []
        for method, path, op in operations:
            if (method, path) in PUBLIC:
                continue
            url, body, ids = walk.request(method, path, op, "owned")
            status, text = await walk.send(method, url, body, None)
            assert status == 401, (method, path, status, text)

            if path != "/v1/streams/{stream}/events":  # publishing: see test_security_keys (per record)
                status, text = await walk.send(method, url, body, key_b)
                missing_url, missing_body, missing_ids = walk.request(method, path, op, "missing")
                missing_status, missing_text = await walk.send(method, missing_url, missing_body, key_b)
                if (
                    set(re.findall(r"{(\w+)}", path)) & TENANT_PARAMS
                    or (body is not None and TENANT_A in orjson.dumps(body).decode())
                    or "?munchkinId=" in url
                ):
                    assert (status, walk.normalized(text, ids)) == (
                        missing_status,
                        walk.normalized(missing_text, missing_ids),
                    ), (method, path, text, missing_text)
                    if method != "GET" or status < 300:  # a change is refused; a read may be an empty list
                        assert status in (403, 404) or (sub_a["id"] not in text and TENANT_A not in text), (
                            method,
                            path,
                            status,
                            text,
                        )
                else:  # a list: 200, with nothing of A's in it
                    assert sub_a["id"] not in text and key_a["id"] not in text and TENANT_A not in text, (
                        method,
                        path,
                        text,
                    )

            # scopes: an ingest key does nothing else, a read key changes nothing
            status, text = await walk.send(method, url, body, ingest_a)
            if path == "/v1/streams/{stream}/events":
                assert status == 200, text
            else:
                assert status == 403, (method, path, "ingest key", status, text)
            if method != "GET":
                status, text = await walk.send(method, url, body, read_a)
                assert status == 403, (method, path, "read key", status, text)
            checked.append((method, path))

        # A's own key reads A's things: the walk above was not refused for some other reason.
        for path in (
            f"/v1/subscriptions/{sub_a['id']}",
            f"/v1/subscriptions/{sub_a['id']}/attempts",
            f"/v1/subscriptions/{sub_a['id']}/journal",
            f"/v1/subscriptions?munchkinId={TENANT_A}",
            f"/v1/sources/{source_a['id']}",
            "/v1/audit",
        ):
            status, text = await walk.send("GET", server.url + path, None, key_a["key"])
            assert status in (200, 204), (path, status, text)

        # Nothing of A's changed under B's hands.
        async with s.get(f"{server.url}/v1/subscriptions/{sub_a['id']}", headers=operator) as r:
            after = await r.json()
        assert (
            after["state"] == "active" and after["batchSize"] == sub_a["batchSize"] and after["auth"]["token"] == "***"
        )
        async with s.get(f"{server.url}/v1/sources/{source_a['id']}", headers=operator) as r:
            source_after = await r.json()
        assert source_after["quotaShare"] == 0.5 and source_after["clientSecret"] == "***"
        async with s.get(f"{server.url}/v1/keys/{key_a['id']}", headers=operator) as r:
            assert (await r.json())["revokedAt"] is None
        async with s.get(f"{server.url}/v1/catalog/activity?munchkinId={TENANT_A}", headers=operator) as r:
            assert "Watch Demo" not in await r.text()
        assert len(checked) == len(operations) - len(PUBLIC)
