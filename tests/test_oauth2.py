"""OAuth2 client credentials against a real token endpoint on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import unquote_plus

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from leadstream.delivery.auth import OAuth2ClientCredentials, TokenEndpointError

CLIENT_ID = "leadstream client"
SECRET = "s3cr3t-value/with:odd+chars %é"


class TokenEndpoint:
    """A token endpoint that checks Basic auth and the form, and counts requests."""

    def __init__(self) -> None:
        self.requests = 0
        self.forms: list[dict[str, str]] = []
        self.expires_in: Any = 3600
        self.delay = 0.0
        self.answer: Callable[[], web.Response] | None = None  # overrides the good answer

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.answer is not None:
            return self.answer()
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        client_id, _, secret = base64.b64decode(credentials).decode().partition(":") if scheme == "Basic" else "::"
        # RFC 6749 §2.3.1: both are form-encoded inside the Basic credentials
        if (unquote_plus(client_id), unquote_plus(secret)) != (CLIENT_ID, SECRET):
            return web.json_response({"error": "invalid_client"}, status=401)
        if request.content_type != "application/x-www-form-urlencoded":
            return web.json_response({"error": "invalid_request"}, status=400)
        form = dict(await request.post())
        self.forms.append({k: str(v) for k, v in form.items()})
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        answer: dict[str, Any] = {"access_token": f"token-{self.requests}", "token_type": "bearer"}
        if self.expires_in is not None:
            answer["expires_in"] = self.expires_in
        return web.json_response(answer)


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[TokenEndpoint, str]]:
    state = TokenEndpoint()
    app = web.Application()
    app.router.add_post("/oauth/token", state.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield state, str(server.make_url("/oauth/token"))
    await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.01)


async def test_basic_auth_form_and_scope(endpoint: tuple[TokenEndpoint, str], session: aiohttp.ClientSession) -> None:
    state, url = endpoint
    assert await OAuth2ClientCredentials(url, CLIENT_ID, SECRET, "leads:read").token(session) == "token-1"
    assert await OAuth2ClientCredentials(url, CLIENT_ID, SECRET).token(session) == "token-2"
    assert state.forms == [
        {"grant_type": "client_credentials", "scope": "leads:read"},
        {"grant_type": "client_credentials"},
    ]


async def test_token_is_cached(endpoint: tuple[TokenEndpoint, str], session: aiohttp.ClientSession) -> None:
    state, url = endpoint
    client = OAuth2ClientCredentials(url, CLIENT_ID, SECRET)
    assert {await client.token(session) for _ in range(20)} == {"token-1"}
    assert state.requests == 1


async def test_without_expires_in_cached_until_invalidated(
    endpoint: tuple[TokenEndpoint, str], session: aiohttp.ClientSession
) -> None:
    state, url = endpoint
    state.expires_in = None
    client = OAuth2ClientCredentials(url, CLIENT_ID, SECRET, refresh_margin=0.0)
    assert [await client.token(session) for _ in range(5)] == ["token-1"] * 5
    client.invalidate("token-1")
    assert await client.token(session) == "token-2"
    assert state.requests == 2


async def test_expiry_fetches_a_new_token(endpoint: tuple[TokenEndpoint, str], session: aiohttp.ClientSession) -> None:
    state, url = endpoint
    state.expires_in = 0.3  # fresh for 0.3 - 0.1 s
    client = OAuth2ClientCredentials(url, CLIENT_ID, SECRET, refresh_margin=0.1)
    first = await client.token(session)

    async def refreshed() -> bool:
        return await client.token(session) != first

    await until(refreshed)
    assert state.requests == 2


async def test_lifetime_shorter_than_the_margin_is_still_cached(
    endpoint: tuple[TokenEndpoint, str], session: aiohttp.ClientSession
) -> None:
    state, url = endpoint
    state.expires_in = "4"  # some endpoints send a string; under the 60 s margin: cached for half of it
    client = OAuth2ClientCredentials(url, CLIENT_ID, SECRET)
    assert [await client.token(session) for _ in range(5)] == ["token-1"] * 5
    assert state.requests == 1


async def test_single_flight(endpoint: tuple[TokenEndpoint, str], session: aiohttp.ClientSession) -> None:
    state, url = endpoint
    state.delay = 0.1  # all 50 callers arrive while the request is out
    client = OAuth2ClientCredentials(url, CLIENT_ID, SECRET)
    tokens = await asyncio.gather(*(client.token(session) for _ in range(50)))
    assert set(tokens) == {"token-1"}
    assert state.requests == 1


async def test_single_flight_shares_the_failure_too(
    endpoint: tuple[TokenEndpoint, str], session: aiohttp.ClientSession
) -> None:
    state, url = endpoint
    state.delay = 0.1
    state.answer = lambda: web.Response(status=500, text="database down")
    client = OAuth2ClientCredentials(url, CLIENT_ID, SECRET)
    results = await asyncio.gather(*(client.token(session) for _ in range(50)), return_exceptions=True)
    assert all(isinstance(r, TokenEndpointError) for r in results)
    assert state.requests == 1
    state.answer = None  # the next call tries again
    assert await client.token(session) == "token-2"


async def test_a_cancelled_caller_does_not_cancel_the_others(
    endpoint: tuple[TokenEndpoint, str], session: aiohttp.ClientSession
) -> None:
    state, url = endpoint
    state.delay = 0.2
    client = OAuth2ClientCredentials(url, CLIENT_ID, SECRET)
    impatient = asyncio.ensure_future(client.token(session))
    patient = asyncio.ensure_future(client.token(session))
    await until(lambda: _true_if(state.requests == 1))
    impatient.cancel()
    assert await patient == "token-1"
    assert impatient.cancelled() and state.requests == 1


async def _true_if(value: bool) -> bool:
    return value


async def test_invalidate_only_the_current_token(
    endpoint: tuple[TokenEndpoint, str], session: aiohttp.ClientSession
) -> None:
    state, url = endpoint
    client = OAuth2ClientCredentials(url, CLIENT_ID, SECRET)
    assert await client.token(session) == "token-1"
    client.invalidate("token-1")
    assert await client.token(session) == "token-2"
    client.invalidate("token-1")  # a late 401 for the old token: keep the new one
    assert await client.token(session) == "token-2"
    assert state.requests == 2


@pytest.mark.parametrize(
    "answer, reason",
    [
        (lambda: web.Response(status=500, text="Internal <b>error</b>"), "HTTP 500 Internal <b>error</b>"),
        (lambda: web.Response(status=200, text="<html>login</html>"), "answer is not JSON: <html>login</html>"),
        (lambda: web.json_response({"token_type": "bearer"}), "answer has no access_token"),
        (lambda: web.json_response({"access_token": ""}), "answer has no access_token"),
        (lambda: web.json_response({"error": "invalid_client", "echo": SECRET}, status=401),
         'HTTP 401 {"error": "invalid_client", "echo": "***"}'),
    ],
)  # fmt: skip
async def test_endpoint_failures_are_named(
    endpoint: tuple[TokenEndpoint, str], session: aiohttp.ClientSession, answer: Any, reason: str
) -> None:
    state, url = endpoint
    state.answer = answer
    client = OAuth2ClientCredentials(url, CLIENT_ID, SECRET)
    with pytest.raises(TokenEndpointError) as raised:
        await client.token(session)
    assert str(raised.value) == f"token endpoint {url} failed: {reason}"
    assert SECRET not in str(raised.value) and SECRET not in repr(client)


async def test_connection_refused(session: aiohttp.ClientSession) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/oauth/token"
    with pytest.raises(TokenEndpointError) as raised:
        await OAuth2ClientCredentials(url, CLIENT_ID, SECRET).token(session)
    assert str(raised.value) == f"token endpoint {url} failed: connection refused"


async def test_timeout(endpoint: tuple[TokenEndpoint, str], session: aiohttp.ClientSession) -> None:
    state, url = endpoint
    state.delay = 5
    with pytest.raises(TokenEndpointError, match=r"failed: no answer within 0.2 s$"):
        await OAuth2ClientCredentials(url, CLIENT_ID, SECRET, timeout=0.2).token(session)


def test_repr_hides_the_secret() -> None:
    client = OAuth2ClientCredentials("https://idp.example.com/token", CLIENT_ID, SECRET, "s")
    assert repr(client) == (
        "OAuth2ClientCredentials(token_url='https://idp.example.com/token', client_id='leadstream client', scope='s')"
    )
