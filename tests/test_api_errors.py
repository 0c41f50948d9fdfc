"""One error style on every admin route: problem+json naming every wrong field, in our words."""

from __future__ import annotations

import json

import orjson
import pytest

from helpers import MUNCHKIN

PYDANTIC_WORDS = ("Input should", "Extra inputs", "valid dictionary", "List should", "JSON decode error")


async def call(http, server, method: str, path: str, body: bytes | None):
    headers = {**server.headers, "Content-Type": "application/json"}
    async with http.request(method, server.url + path, data=body, headers=headers) as r:
        assert r.content_type == "application/problem+json", await r.text()
        document = await r.json(content_type=None)
        assert not any(words in str(document) for words in PYDANTIC_WORDS), document
        assert document["status"] == r.status
        return r.status, document


BODY_ROUTES = [
    ("POST", "/v1/subscriptions"),
    ("PATCH", "/v1/subscriptions/{sub}"),
    ("POST", "/v1/subscriptions/{sub}/replay"),
    ("POST", "/v1/subscriptions/{sub}/sample"),
    ("POST", "/v1/keys"),
    ("PUT", f"/v1/catalog/activity/{MUNCHKIN}"),
    ("POST", f"/v1/catalog/activity/{MUNCHKIN}/custom"),
]


@pytest.fixture
async def sub_id(http, server) -> str:
    body = {"name": "e", "munchkinId": MUNCHKIN, "stream": "activity", "endpoint": "https://hooks.example.com/x"}
    async with http.post(f"{server.url}/v1/subscriptions", json=body, headers=server.headers) as r:
        assert r.status == 201
        return str((await r.json())["id"])


@pytest.mark.parametrize("method, path", BODY_ROUTES)
async def test_malformed_json_is_400_on_every_admin_route(http, server, sub_id, method, path):
    for body, says in ((b'{"name": ', "not valid JSON"), (b"[1, 2]", "must be a JSON object")):
        status, problem = await call(http, server, method, path.format(sub=sub_id), body)
        assert (status, problem["field"], problem["title"]) == (400, "body", "Bad Request")
        assert says in problem["detail"]


async def test_every_wrong_field_of_a_subscription_is_named_and_choices_are_listed(http, server):
    body = (b'{"name": "", "munchkinId": "%s", "stream": "clicks", "endpoint": "https://hooks.example.com/x",'
            b' "format": "xml", "auth": {"type": "basic"}, "batchSize": 0, "colour": "red"}') % MUNCHKIN.encode()  # fmt: skip
    status, problem = await call(http, server, "POST", "/v1/subscriptions", body)
    assert status == 422
    by_field = {e["field"]: e["detail"] for e in problem["errors"]}
    assert set(by_field) == {"colour", "name", "stream", "format", "auth.type", "batchSize"}
    assert by_field["stream"] == "stream: expected one of activity, audit, notification, got 'clicks'"
    assert by_field["format"] == "format: expected one of adobe_io, cloudevents, legacy, got 'xml'"
    assert by_field["auth.type"] == "auth.type: expected one of none, token, oauth2, got 'basic'"
    assert by_field["colour"] == "colour: unknown field"
    assert problem["detail"] == "; ".join(e["detail"] for e in problem["errors"])


async def test_key_errors_name_each_field_and_the_allowed_scopes(http, server):
    status, problem = await call(
        http, server, "POST", "/v1/keys", b'{"munchkinIds": [], "scopes": ["read", "write"], "extra": 1}'
    )
    assert status == 422
    assert {e["field"]: e["detail"] for e in problem["errors"]} == {
        "munchkinIds": "munchkinIds: must have at least 1 item(s)",
        "scopes[1]": "scopes[1]: expected one of ingest, subscriptions, read, got 'write'",
        "extra": "extra: unknown field",
    }


async def test_query_errors_are_problems_naming_each_parameter(http, server):
    status, problem = await call(http, server, "GET", "/v1/keys?limit=0&offset=x", None)
    assert status == 422 and [e["field"] for e in problem["errors"]] == ["limit", "offset"]
    assert problem["errors"][1]["detail"] == "offset: expected an integer, got 'x'"


@pytest.mark.parametrize(
    "path, allowed",
    [("/v1/subscriptions/{sub}", "DELETE, GET, PATCH"), ("/v1/keys", "GET, POST"), ("/healthz", "GET")],
)
async def test_405_names_every_method_of_the_path_in_allow(http, server, sub_id, path, allowed):
    status, problem = await call(http, server, "PUT", path.format(sub=sub_id), b"{}")
    assert status == 405, problem
    async with http.put(server.url + path.format(sub=sub_id), headers=server.headers) as r:
        assert r.headers["Allow"] == allowed


async def test_dead_letters_of_a_deprovisioned_subscription_are_404_and_its_record_stays(http, server, sub_id):
    path = f"{server.url}/v1/subscriptions/{sub_id}"
    async with http.get(path + "/dead-letters", headers=server.headers) as r:
        assert r.status == 200 and await r.json() == {"deadLetters": []}
    async with http.delete(path, headers=server.headers) as r:
        assert r.status == 200
    status, problem = await call(http, server, "GET", f"/v1/subscriptions/{sub_id}/dead-letters", None)
    assert status == 404 and "deprovisioned" in problem["detail"]
    async with http.get(path, headers=server.headers) as r:
        assert r.status == 200 and (await r.json())["state"] == "deprovisioned"
    status, problem = await call(http, server, "POST", f"/v1/subscriptions/{sub_id}/pause", None)
    assert status == 409 and "deprovisioned" in problem["detail"]


@pytest.mark.parametrize("wrong", [{"attributes": {}}, {"primaryAttribute": {}}])
async def test_a_catalog_type_with_an_empty_object_for_its_attributes_is_refused(http, server, wrong):
    body = {"result": [{"id": 100001, "name": "Attend Webinar", **wrong}]}
    status, problem = await call(http, server, "PUT", f"/v1/catalog/activity/{MUNCHKIN}", orjson.dumps(body))
    assert status == 422 and "result[0]" in problem["detail"], problem
    async with http.get(f"{server.url}/v1/catalog/activity?munchkinId={MUNCHKIN}", headers=server.headers) as r:
        assert 100001 not in [t["id"] for t in (await r.json())["types"]]  # nothing loaded


async def test_numbers_past_64_bits_are_422_not_a_server_error(http, server):
    huge = 2**64
    status, problem = await call(http, server, "GET", f"/v1/audit?before={huge}", None)
    assert status == 422 and problem["field"] == "before"
    body = b'{"result": [{"id": %d, "name": "Attend Webinar"}]}' % huge  # orjson cannot write it
    status, problem = await call(http, server, "PUT", f"/v1/catalog/activity/{MUNCHKIN}", body)
    assert status == 422 and "64-bit" in problem["detail"], problem


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/alerts", {"endpoint": "http://N\u0095t0[\u0084"}),  # schemathesis found it: a 500
        ("/v1/subscriptions", {"name": "x", "munchkinId": MUNCHKIN, "stream": "activity", "endpoint": "https://[bad/x"}),
        ("/v1/sources", {"type": "marketo", "name": "x", "munchkinId": MUNCHKIN, "restUrl": "https://[bad",
                         "clientId": "id", "clientSecret": "secret"}),
    ],
)  # fmt: skip
async def test_a_url_python_cannot_split_is_422_naming_the_field(http, server, path, body):
    status, problem = await call(http, server, "POST", path, json.dumps(body).encode())
    assert status == 422, problem
    assert "URL" in str(problem), problem
