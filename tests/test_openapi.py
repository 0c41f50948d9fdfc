"""/openapi.json describes every operation fully, and /docs works offline.

The walk below is the rule for every route, today's and tomorrow's: a request body has a schema
and an example; every 2xx answer but 204 has a schema with something in it and an example; every
error is problem+json (leadstream.api.openapi adds the shared ones; a route gives its success
answer with ``openapi.ok``).
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import aiohttp
import pytest

from leadstream.api import create_app, openapi
from leadstream.errors import Invalid
from leadstream.security.signing import check_hmac_secret

pytest_plugins = ["browser"]  # chromium, open_browser

DOCUMENT = create_app().openapi()
OPERATIONS = [
    (method.upper(), path, operation)
    for path, operations in DOCUMENT["paths"].items()
    for method, operation in operations.items()
]


def resolved(schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return DOCUMENT["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]  # type: ignore[no-any-return]
    return schema


def has_content(schema: dict[str, Any]) -> bool:
    """Not ``{}``, nor an object that says nothing but "any properties"."""
    schema = resolved(schema)
    if not schema:
        return False
    if "oneOf" in schema or "anyOf" in schema or "items" in schema:
        return True
    if schema.get("type") == "object":
        return bool(schema.get("properties"))
    return "type" in schema


def has_example(media: dict[str, Any]) -> bool:
    schema = resolved(media.get("schema", {}))
    return any(key in media for key in ("example", "examples")) or "examples" in schema or "example" in schema


def test_there_is_an_operation_for_each_route():
    assert len(OPERATIONS) >= 30
    assert "HTTPValidationError" not in json.dumps(DOCUMENT)  # the server never answers {"detail": [...]}


@pytest.mark.parametrize("method, path, operation", OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS])
def test_every_operation_has_its_request_and_answer_schemas_examples_and_real_errors(method, path, operation):
    if "requestBody" in operation:
        for media_type, media in operation["requestBody"]["content"].items():
            assert has_content(media.get("schema", {})), f"request {media_type}: no schema"
            assert has_example(media), f"request {media_type}: no example"
    responses = operation["responses"]
    successes = [code for code in responses if code.startswith("2")]
    assert successes, "no success answer"
    for code in successes:
        if code == "204":
            continue
        content = responses[code].get("content")
        assert content, f"{code}: no content"
        for media_type, media in content.items():
            assert has_content(media.get("schema", {})), f"{code} {media_type}: no real schema"
            assert has_example(media), f"{code} {media_type}: no example"
    secured = operation.get("security", DOCUMENT.get("security")) != []
    if secured:
        assert {"401", "403", "503"} <= set(responses), "a keyed operation documents 401, 403 and 503"
    if "{" in path:
        assert "404" in responses
    for code, response in responses.items():
        if code[0] in "45":
            if path == "/v1/streams/{stream}/events" and code == "422":
                assert "rejected" in json.dumps(response)  # every record rejected, record by record
                continue
            media = response["content"]["application/problem+json"]
            assert media["schema"] == {"$ref": "#/components/schemas/Problem"}
            assert media["example"]["status"] == int(code)


def test_ingest_describes_the_records_of_each_stream():
    body = DOCUMENT["paths"]["/v1/streams/{stream}/events"]["post"]["requestBody"]["content"]
    titles = {schema["title"] for schema in body["application/json"]["schema"]["items"]["oneOf"]}
    assert titles == {"ActivityRecord", "CustomObjectRecord", "AuditRecord", "NotificationRecord"}
    activity = next(s for s in body["application/json"]["schema"]["items"]["oneOf"] if s["title"] == "ActivityRecord")
    assert {"munchkinId", "marketoGUID", "leadId", "activityDate", "activityTypeId"} <= set(activity["required"])


def body_schema(method: str, path: str) -> dict[str, Any]:
    return resolved(DOCUMENT["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"])


def test_the_rules_the_server_checks_are_in_the_request_schemas():
    """What schemathesis found refused though the schema let it through (ST202), said in the schema."""
    munchkin = re.compile(openapi.MUNCHKIN_PATTERN)
    patterns = [
        body_schema("post", "/v1/keys")["properties"]["munchkinIds"]["items"]["pattern"],
        body_schema("post", "/v1/sources")["properties"]["munchkinId"]["pattern"],
        body_schema("post", "/v1/subscriptions")["properties"]["munchkinId"]["pattern"],
        DOCUMENT["paths"]["/v1/catalog/activity/{munchkinId}"]["put"]["parameters"][0]["schema"]["pattern"],
    ]
    assert patterns == [openapi.MUNCHKIN_PATTERN] * 4
    assert munchkin.fullmatch("123-ABC-456") and not munchkin.fullmatch("123-abc-456")
    custom = body_schema("post", "/v1/catalog/activity/{munchkinId}/custom")["properties"]["result"]
    assert custom["minItems"] == 1 and custom["items"]["properties"]["id"]["minimum"] == 100_000
    assert body_schema("post", "/v1/sources")["properties"]["quotaShare"]["exclusiveMinimum"] == 0
    urls = [
        body_schema("post", "/v1/sources")["properties"]["restUrl"]["pattern"],
        body_schema("post", "/v1/subscriptions")["properties"]["endpoint"]["pattern"],
        body_schema("post", "/v1/alerts")["properties"]["endpoint"]["pattern"],
    ]
    assert urls == [openapi.URL_PATTERN] * 3
    assert [bool(re.match(openapi.URL_PATTERN, u)) for u in ("https://h.example.com", "http://[::1]/", "", "h.io")] == [
        True, True, False, False
    ]  # fmt: skip
    assert body_schema("post", "/v1/alerts")["properties"]["events"]["minItems"] == 1
    for signing in (
        body_schema("post", "/v1/alerts")["properties"]["signing"],
        body_schema("post", "/v1/subscriptions")["properties"]["signing"]["anyOf"][0],
    ):
        assert {"required": ["hmacSecret"]} in signing["anyOf"]  # or hmac: true; {"hmac": false} alone is refused
    # a patch may send the masked "***" back, so only a new subscription's secret has the pattern
    assert (
        "pattern"
        not in body_schema("patch", "/v1/subscriptions/{sub_id}")["properties"]["signing"]["anyOf"][0]["properties"][
            "hmacSecret"
        ]
    )


@pytest.mark.parametrize("key_bytes", [16, 23, 24, 25, 26, 40, 62, 63, 64, 65])
def test_the_hmac_secret_pattern_takes_only_what_the_server_takes(key_bytes):
    secret = "whsec_" + base64.b64encode(bytes(range(key_bytes))).decode()
    try:
        check_hmac_secret(secret)
        taken = True
    except Invalid:
        taken = False
    matches = re.fullmatch(openapi.HMAC_SECRET_PATTERN, secret) is not None
    assert matches == taken, (key_bytes, taken, matches)


def test_409_is_documented_on_each_change_to_a_subscription_or_source():
    for path, operations in DOCUMENT["paths"].items():
        for method, operation in operations.items():
            changing = method != "get" and path.startswith(("/v1/subscriptions/{", "/v1/sources/{"))
            assert ("409" in operation["responses"]) == (changing or path.endswith("/journal")), (method, path)


async def test_docs_and_its_assets_are_served_by_leadstream_itself(server):
    async with aiohttp.ClientSession() as session:
        async with session.get(server.url + "/docs") as r:
            assert r.status == 200
            page = await r.text()
        urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", page)
        assert urls and all(url.startswith("/") for url in urls), urls  # nothing from another host
        for url in urls:
            async with session.get(server.url + url) as r:
                assert r.status == 200, url
        async with session.get(server.url + "/redoc") as r:
            assert r.status == 200 and "cdn" not in (await r.text()).lower()


def test_docs_render_every_operation_with_no_network_but_loopback(open_browser, tmp_path):
    import asyncio
    import threading

    from helpers import ServerProcess

    server = ServerProcess(tmp_path / "data")
    # Playwright's sync API runs an event loop in this thread: the server starts from another one
    starting = threading.Thread(target=lambda: asyncio.run(server.start()))
    starting.start()
    starting.join()
    try:
        page = open_browser()
        outside: list[str] = []

        def only_loopback(route: Any) -> None:
            if route.request.url.startswith(server.url):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        page.route("**/*", only_loopback)
        page.goto(server.url + "/docs")
        page.wait_for_selector(".opblock-summary")
        shown = page.locator(".opblock").count()
        assert shown == len(OPERATIONS) and outside == [] and page.script_errors == []
    finally:
        server.stop()
