"""The Adobe I/O challenge against real endpoints on 127.0.0.1: what passes, and that every
failure says what came back."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from helpers import MUNCHKIN, Server, free_port
from leadstream.errors import Invalid
from leadstream.subscriptions.challenge import challenge_url, verify_challenge

Handler = Callable[[web.Request], Awaitable[web.StreamResponse] | web.StreamResponse]


@pytest.fixture
async def endpoint() -> AsyncIterator[Callable[[Handler], Awaitable[tuple[str, list[web.Request]]]]]:
    """Start an endpoint answering GETs with ``handler``; returns its URL and the requests it saw."""
    servers: list[TestServer] = []

    async def start(handler: Handler) -> tuple[str, list[web.Request]]:
        seen: list[web.Request] = []

        async def recorded(request: web.Request) -> web.StreamResponse:
            seen.append(request)
            answer = handler(request)
            return await answer if inspect.isawaitable(answer) else answer

        app = web.Application()
        app.router.add_get("/hook", recorded)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("/hook")), seen

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


async def echo_text(request: web.Request) -> web.Response:
    return web.Response(text=request.query["challenge"])


async def echo_json(request: web.Request) -> web.Response:
    return web.json_response({"challenge": request.query["challenge"]})


async def failure(session: aiohttp.ClientSession, url: str, timeout: float = 10.0) -> Invalid:
    with pytest.raises(Invalid) as caught:
        await verify_challenge(session, url, timeout=timeout)
    assert caught.value.status == 422
    assert caught.value.extra["field"] == "endpoint"
    return caught.value


async def test_text_and_json_echoes_pass(endpoint, session):
    for handler in (echo_text, echo_json):
        url, seen = await endpoint(handler)
        await verify_challenge(session, url)
        assert len(seen) == 1 and seen[0].method == "GET"
        assert len(seen[0].query["challenge"]) >= 24  # random, not guessable


async def test_each_challenge_is_a_new_value(endpoint, session):
    url, seen = await endpoint(echo_text)
    await verify_challenge(session, url)
    await verify_challenge(session, url)
    assert seen[0].query["challenge"] != seen[1].query["challenge"]


async def test_text_echo_may_end_with_a_newline(endpoint, session):
    url, _ = await endpoint(lambda r: echo(r, lambda value: value + "\n"))
    await verify_challenge(session, url)


async def echo(request: web.Request, shape: Callable[[str], str], status: int = 200) -> web.Response:
    return web.Response(text=shape(request.query["challenge"]), status=status)


async def test_an_existing_query_is_kept_as_it_was(endpoint, session):
    url, seen = await endpoint(echo_text)
    await verify_challenge(session, url + "?tenant=a%20b&x=1#fragment")
    raw = seen[0].rel_url.raw_query_string
    assert raw.startswith("tenant=a%20b&x=1&challenge=")
    assert seen[0].query["tenant"] == "a b"


def test_challenge_url_forms():
    assert str(challenge_url("https://h.example/p", "v")) == "https://h.example/p?challenge=v"
    assert str(challenge_url("https://h.example/p?", "v")) == "https://h.example/p?challenge=v"
    assert str(challenge_url("https://h.example/p?a=1&", "v")) == "https://h.example/p?a=1&challenge=v"
    assert str(challenge_url("https://h.example/p?a=%2F#top", "v")) == "https://h.example/p?a=%2F&challenge=v"


async def test_wrong_value_says_what_came_back(endpoint, session):
    url, _ = await endpoint(lambda r: echo(r, lambda value: "nope"))
    error = await failure(session, url)
    assert "HTTP 200 with 'nope'" in error.detail
    assert "challenge" in error.detail


async def test_json_without_the_value_fails(endpoint, session):
    for document in ({"challenge": "other"}, {"value": "x"}, ["x"]):
        url, _ = await endpoint(lambda r, d=document: web.json_response(d))
        error = await failure(session, url)
        assert "HTTP 200 with" in error.detail


async def test_empty_answer_fails(endpoint, session):
    url, _ = await endpoint(lambda r: web.Response(status=204))
    assert "HTTP 204 with an empty body" in (await failure(session, url)).detail


async def test_error_status_with_the_start_of_the_body(endpoint, session):
    url, _ = await endpoint(lambda r: echo(r, lambda value: value + " but " + "x" * 5000, status=500))
    error = await failure(session, url)
    assert "HTTP 500" in error.detail
    assert "but xxx" in error.detail
    assert len(error.detail) < 600  # a snippet, not the whole body


async def test_a_redirect_is_not_followed(endpoint, session):
    target, seen_target = await endpoint(echo_text)
    url, _ = await endpoint(lambda r: _redirect(r, target))
    error = await failure(session, url)
    assert "HTTP 302" in error.detail
    assert seen_target == []


async def _redirect(request: web.Request, target: str) -> web.Response:
    raise web.HTTPFound(f"{target}?{request.rel_url.raw_query_string}")


async def test_timeout(endpoint, session):
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return await echo_text(request)

    url, seen = await endpoint(slow)
    started = asyncio.get_running_loop().time()
    error = await failure(session, url, timeout=0.3)
    release.set()
    assert "no answer within 0.3 s" in error.detail
    assert asyncio.get_running_loop().time() - started < 3
    assert len(seen) == 1


async def test_connection_refused(session):
    url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    error = await failure(session, url)
    assert "connection refused" in error.detail.lower()


async def test_the_query_stays_out_of_the_message(endpoint, session):
    url, _ = await endpoint(lambda r: echo(r, lambda value: "no", status=403))
    error = await failure(session, url + "?token=s3cret-in-query")
    assert "s3cret" not in error.detail
    assert "HTTP 403" in error.detail and url in error.detail


# -- through the admin API ---------------------------------------------------------------------------


async def create(session: aiohttp.ClientSession, server: Server, endpoint_url: str, **settings: Any) -> tuple[int, Any]:
    document = {
        "name": "challenged",
        "munchkinId": MUNCHKIN,
        "stream": "activity",
        "endpoint": endpoint_url,
        **settings,
    }
    async with session.post(f"{server.url}/v1/subscriptions", json=document, headers=server.headers) as r:
        return r.status, await r.json(content_type=None)


async def subscription_ids(session: aiohttp.ClientSession, server: Server) -> list[str]:
    async with session.get(f"{server.url}/v1/subscriptions", headers=server.headers) as r:
        return [s["id"] for s in (await r.json())["subscriptions"]]


async def test_create_challenges_cloudevents_and_adobe_io_endpoints(server, endpoint, session):
    url, seen = await endpoint(echo_json)
    for fmt in ("cloudevents", "adobe_io"):
        status, body = await create(session, server, url, format=fmt)
        assert status == 201, body
        assert body["challenge"] is True  # it ran and passed: the view says so
    assert len(seen) == 2


async def test_a_failed_challenge_is_422_and_creates_nothing(server, endpoint, session):
    url, seen = await endpoint(lambda r: echo(r, lambda value: "<html>wrong app</html>", status=404))
    status, body = await create(session, server, url, format="cloudevents")
    assert status == 422
    assert body["field"] == "endpoint" and "HTTP 404" in body["detail"] and "wrong app" in body["detail"]
    assert len(seen) == 1 and await subscription_ids(session, server) == []


async def test_legacy_is_challenged_only_when_asked(server, endpoint, session):
    url, seen = await endpoint(echo_text)
    status, body = await create(session, server, url, format="legacy")
    assert status == 201 and seen == [] and body["challenge"] is False
    status, body = await create(session, server, url, format="legacy", challenge=True)
    assert status == 201 and len(seen) == 1 and body["challenge"] is True


async def test_changing_the_endpoint_challenges_the_new_one(server, endpoint, session):
    good, seen_good = await endpoint(echo_text)
    bad, seen_bad = await endpoint(lambda r: echo(r, lambda value: "nope"))
    status, created = await create(session, server, good, format="cloudevents")
    assert status == 201
    path = f"{server.url}/v1/subscriptions/{created['id']}"
    async with session.patch(path, json={"batchSize": 100}, headers=server.headers) as r:
        assert r.status == 200 and len(seen_good) == 1  # the endpoint did not change: no challenge
    async with session.patch(path, json={"endpoint": bad}, headers=server.headers) as r:
        body = await r.json(content_type=None)
        assert r.status == 422 and "'nope'" in body["detail"] and len(seen_bad) == 1
    async with session.get(path, headers=server.headers) as r:
        assert (await r.json())["endpoint"] == good  # unchanged
    other_good, seen_other = await endpoint(echo_json)
    async with session.patch(path, json={"endpoint": other_good}, headers=server.headers) as r:
        assert r.status == 200 and len(seen_other) == 1


async def test_a_patch_that_starts_to_need_the_challenge_challenges_the_same_endpoint(server, endpoint, session):
    refuses, seen = await endpoint(lambda r: echo(r, lambda value: "nope"))
    status, created = await create(session, server, refuses, format="legacy")
    assert status == 201 and seen == []  # legacy: no challenge unless asked
    path = f"{server.url}/v1/subscriptions/{created['id']}"
    for change in ({"format": "cloudevents"}, {"challenge": True}):
        async with session.patch(path, json=change, headers=server.headers) as r:
            assert r.status == 422, change
    assert len(seen) == 2
    async with session.get(path, headers=server.headers) as r:
        assert (await r.json())["format"] == "legacy"
