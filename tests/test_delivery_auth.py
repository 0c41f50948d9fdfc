"""Endpoint auth on the push (SPEC §4.2): bearer tokens and OAuth2 client credentials."""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web

from helpers import activity, wait_until
from test_delivery_support import Received, bench, receiver, wait_ids


@dataclass
class TokenServer:
    """An OAuth2 token endpoint: client credentials in HTTP Basic, tokens tok-1, tok-2, …"""

    expires_in: int = 3600
    fail: bool = False
    issued: list[str] = field(default_factory=list)
    forms: list[dict[str, str]] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)
    url: str = ""

    async def token(self, request: web.Request) -> web.Response:
        if self.fail:
            return web.Response(status=500, text="idp down")
        basic = base64.b64decode(request.headers["Authorization"].split(" ", 1)[1]).decode()
        if basic != "client-1:s3cret":
            return web.json_response({"error": "invalid_client"}, status=401)
        self.forms.append(dict(await request.post()))
        self.issued.append(f"tok-{len(self.issued) + 1}")
        return web.json_response(
            {"access_token": self.issued[-1], "token_type": "bearer", "expires_in": self.expires_in}
        )

    def accepts(self, seen: Received) -> web.Response | None:
        token = seen.headers.get("authorization", "").removeprefix("Bearer ")
        if token not in self.issued or token in self.revoked:
            return web.Response(status=401, text="bad token")
        return None


@contextlib.asynccontextmanager
async def token_server(**kwargs: object) -> AsyncIterator[TokenServer]:
    server = TokenServer(**kwargs)  # type: ignore[arg-type]
    app = web.Application()
    app.router.add_post("/token", server.token)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/token"  # type: ignore[union-attr]
    try:
        yield server
    finally:
        await runner.cleanup()


def oauth(idp: TokenServer, scope: str | None = "events") -> dict[str, object]:
    return {"type": "oauth2", "tokenUrl": idp.url, "clientId": "client-1", "clientSecret": "s3cret", "scope": scope}


def bearers(r) -> list[str]:
    return [x.headers.get("authorization") for x in r.requests]


async def test_static_token_is_sent_as_bearer(tmp_path):
    async with bench(tmp_path) as b, receiver() as r:
        sub = await b.subscribe(r.url, auth={"type": "token", "token": "t0ps3cret"})
        assert sub["auth"] == {"type": "token", "token": "***"}
        await b.publish("activity", [activity(i) for i in range(5)])
        await wait_ids(r, list(range(5)))
        assert set(bearers(r)) == {"Bearer t0ps3cret"}


async def test_oauth2_token_is_cached_then_renewed_after_expiry(tmp_path):
    # expires_in 1 s: with the 60 s margin the token is used for half its life, 0.5 s
    async with bench(tmp_path) as b, token_server(expires_in=1) as idp, receiver() as r:
        r.answer = idp.accepts
        sub = await b.subscribe(r.url, auth=oauth(idp), batchSize=10)
        assert sub["auth"]["clientSecret"] == "***"
        await b.publish("activity", [activity(i) for i in range(30)])
        await wait_ids(r, list(range(30)))
        assert idp.issued == ["tok-1"]  # three batches, one token
        assert idp.forms == [{"grant_type": "client_credentials", "scope": "events"}]
        expired_at = time.monotonic() + 0.6
        await wait_until(lambda: time.monotonic() > expired_at, what="the token to go stale")
        await b.publish("activity", [activity(i) for i in range(30, 40)])
        await wait_ids(r, list(range(40)))
        assert idp.issued == ["tok-1", "tok-2"]
        assert bearers(r)[-1] == "Bearer tok-2"
        assert all(x.status == 200 for x in r.requests)
        assert (await b.status(sub["id"]))["consecutiveFailures"] == 0


async def test_oauth2_401_renews_the_token_and_resends_without_a_failure(tmp_path):
    async with bench(tmp_path) as b, token_server() as idp, receiver() as r:
        r.answer = idp.accepts
        sub = await b.subscribe(r.url, auth=oauth(idp, scope=None))
        await b.publish("activity", [activity(i) for i in range(5)])
        await wait_ids(r, list(range(5)))
        idp.revoked.add("tok-1")  # the endpoint stops taking the cached token
        await b.publish("activity", [activity(i) for i in range(5, 10)])
        await wait_ids(r, list(range(10)))
        refused, resent = r.requests[-2], r.requests[-1]
        assert (refused.status, resent.status) == (401, 200)
        assert refused.headers["x-leadstream-delivery"] == resent.headers["x-leadstream-delivery"]
        assert "x-leadstream-retry-count" not in resent.headers  # resent at once, not a retry
        assert resent.headers["authorization"] == "Bearer tok-2"
        assert idp.forms[0] == {"grant_type": "client_credentials"}
        view = await b.status(sub["id"])
        assert (view["state"], view["consecutiveFailures"], view["lastError"]) == ("active", 0, None)
        attempts = (await b.subscriptions.attempts(sub["id"], 10)).decode()
        assert '"outcome":"renewed_token"' in attempts


async def test_failing_token_endpoint_is_a_failed_attempt_that_says_so(tmp_path):
    async with bench(tmp_path) as b, token_server(fail=True) as idp, receiver() as r:
        sub = await b.subscribe(r.url, auth=oauth(idp), retryIntervalMs=5000)
        await b.publish("activity", [activity(0)])
        view = await b.wait_status(sub["id"], "a failed attempt", state="retrying")
        assert view["consecutiveFailures"] == 1
        assert "token endpoint" in view["lastError"] and "HTTP 500" in view["lastError"]
        assert "s3cret" not in view["lastError"]
        assert r.requests == []  # nothing went to the endpoint without a token


async def test_an_endpoint_that_echoes_the_token_does_not_get_it_into_errors(tmp_path):
    def echo(seen: Received) -> web.Response:
        return web.Response(status=500, text=f"bad request with {seen.headers['authorization']}")

    async with bench(tmp_path) as b, token_server() as idp, receiver(answer=echo) as r:
        sub = await b.subscribe(r.url, auth=oauth(idp), retryIntervalMs=5000)
        await b.publish("activity", [activity(0)])
        view = await b.wait_status(sub["id"], "a failed attempt", state="retrying")
        assert view["lastError"] == "HTTP 500 bad request with Bearer ***"
        assert "tok-1" not in (await b.subscriptions.attempts(sub["id"], 10)).decode()
