"""Secrets never leak (issue 8): a run of `leadstream serve` that uses every kind of subscriber
secret — a bearer token, an OAuth2 client secret and the access tokens it brings, a given HMAC
secret, a generated one — against endpoints that fail for a while and echo what they were sent.
Then everything the server wrote is searched for the secret values: its answers, its log (JSON,
debug level), the attempt log, /metrics, the audit trail and every file in its data directory.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from helpers import ADMIN_KEY, MUNCHKIN, ServerProcess, activity, wait_until
from test_delivery_support import Received, receiver

OPERATOR = {"Authorization": f"Bearer {ADMIN_KEY}"}
FAST = {"pushIntervalMs": 20, "retryIntervalMs": 50, "probeIntervalMs": 100, "timeoutMs": 2000, "retryAttempts": 2}


@dataclass
class Secrets:
    token: str = field(default_factory=lambda: "tok-" + secrets.token_hex(16))
    client_secret: str = field(default_factory=lambda: "cs-" + secrets.token_hex(16))
    hmac: str = field(default_factory=lambda: "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode())
    access_tokens: list[str] = field(default_factory=list)
    generated_hmac: str = ""

    def values(self) -> list[str]:
        found = [self.token, self.client_secret, self.hmac, self.hmac.removeprefix("whsec_"), *self.access_tokens]
        if self.generated_hmac:
            found += [self.generated_hmac, self.generated_hmac.removeprefix("whsec_")]
        return found


@contextlib.asynccontextmanager
async def identity_provider(known: Secrets, echo: bool) -> AsyncIterator[str]:
    """An OAuth2 token endpoint that fails twice (echoing the credentials it got when ``echo``), then issues tokens."""
    calls = 0

    async def token(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        basic = base64.b64decode(request.headers["Authorization"].split(" ", 1)[1]).decode()
        if calls <= 2:
            echoed = f": got {basic} / {request.headers['Authorization']}" if echo else ""
            return web.Response(status=401, text=f"invalid_client{echoed}")
        known.access_tokens.append("at-" + secrets.token_hex(16))
        return web.json_response({"access_token": known.access_tokens[-1], "token_type": "bearer", "expires_in": 3600})

    app = web.Application()
    app.router.add_post("/token", token)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/token"  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


def refuse_then_accept(failures: int, echo: bool):
    """An endpoint answer: the first ``failures`` requests get a 401 — echoing the credentials they
    brought when ``echo``, as careless or hostile endpoints do."""
    seen = 0

    def answer(request: Received) -> web.Response | None:
        nonlocal seen
        seen += 1
        if seen <= failures:
            echoed = {k: v for k, v in request.headers.items() if k in ("authorization", "webhook-signature")}
            return web.Response(status=401, text=f"rejected: {echoed}" if echo else "rejected")
        return None

    return answer


@dataclass
class Run:
    secrets: Secrets
    answers: list[str]  # every response body the server sent (bar the one create answer that shows a generated secret)
    log: str
    data_dir: Path


async def run_with_secrets(tmp_path: Path, *, echo: bool = False) -> Run:
    known = Secrets()
    answers: list[str] = []
    server = ServerProcess(tmp_path / "data", "--log-format", "json", env={"LEADSTREAM_LOG_LEVEL": "debug"})
    await server.start()
    try:
        async with (
            identity_provider(known, echo) as token_url,
            receiver(answer=refuse_then_accept(3, echo)) as plain,
            receiver(answer=refuse_then_accept(2, echo)) as oauth_endpoint,
            receiver(answer=refuse_then_accept(1, echo)) as signed,
            aiohttp.ClientSession() as s,
        ):

            async def call(method: str, path: str, body: Any = None, keep: bool = True) -> Any:
                async with s.request(method, server.url + path, json=body, headers=OPERATOR) as r:
                    text = await r.text()
                    assert r.status < 300, (method, path, r.status, text)
                    if keep:
                        answers.append(text)
                    return await r.json(content_type=None) if text else None

            base = {"munchkinId": MUNCHKIN, "stream": "activity", **FAST}
            subs = [
                await call(
                    "POST",
                    "/v1/subscriptions",
                    {**base, "name": "token", "endpoint": plain.url, "auth": {"type": "token", "token": known.token}},
                ),
                await call(
                    "POST",
                    "/v1/subscriptions",
                    {
                        **base,
                        "name": "oauth",
                        "endpoint": oauth_endpoint.url,
                        "auth": {
                            "type": "oauth2",
                            "tokenUrl": token_url,
                            "clientId": "client-1",
                            "clientSecret": known.client_secret,
                        },
                    },
                ),
                await call(
                    "POST",
                    "/v1/subscriptions",
                    {**base, "name": "hmac", "endpoint": signed.url, "signing": {"hmacSecret": known.hmac}},
                ),
            ]
            generated = await call(
                "POST",
                "/v1/subscriptions",
                {**base, "name": "hmac-generated", "endpoint": signed.url, "signing": {"hmac": True}},
                keep=False,
            )
            known.generated_hmac = generated["signing"]["hmacSecret"]
            subs.append(generated)

            await call("POST", "/v1/streams/activity/events", [activity(i) for i in range(20)])
            await wait_until(
                lambda: len(plain.ids()) >= 20 and len(oauth_endpoint.ids()) >= 20 and len(signed.ids()) >= 40,
                timeout=20,
                what="every subscription to deliver (after its failures)",
            )
            # Patching with the secrets sent back as "***" keeps them; a sample and a replay use them again.
            await call(
                "PATCH",
                f"/v1/subscriptions/{subs[0]['id']}",
                {"auth": {"type": "token", "token": "***"}, "batchSize": 5},
            )
            await call("POST", f"/v1/subscriptions/{subs[1]['id']}/sample", {"type": "Visit Webpage"})
            await call("POST", f"/v1/subscriptions/{subs[2]['id']}/replay", {"from": 0})
            for sub in subs:
                await call("GET", f"/v1/subscriptions/{sub['id']}")
                await call("GET", f"/v1/subscriptions/{sub['id']}/attempts?limit=1000")
                await call("GET", f"/v1/subscriptions/{sub['id']}/journal?seek=-PT1H")
            await call("GET", "/v1/subscriptions")
            await call("GET", "/v1/audit?limit=1000")
            async with s.get(server.url + "/metrics") as r:
                answers.append(await r.text())
            assert any('"status":401' in a or '"status": 401' in a for a in answers)  # the echoing failures were logged
            assert known.access_tokens  # OAuth2 was really used
    finally:
        server.stop()
    return Run(known, answers, server.log.read_text(), server.data_dir)


async def test_secret_values_never_appear_in_answers_logs_attempts_or_metrics(tmp_path):
    run = await run_with_secrets(tmp_path)
    assert "delivery engine started" in run.log  # the log was written, at debug level
    for value in run.secrets.values():
        for answer in run.answers:
            assert value not in answer, f"a secret is in an answer: {answer[:300]}"
        assert value not in run.log, "a secret is in the server log"


async def test_endpoints_that_echo_credentials_do_not_get_them_into_the_attempt_log(tmp_path):
    run = await run_with_secrets(tmp_path, echo=True)
    assert any("rejected: {" in answer for answer in run.answers)  # the echoes were recorded…
    for value in run.secrets.values():
        for answer in run.answers:
            assert value not in answer, f"a secret is in an answer: {answer[:300]}"  # …without the secrets
        assert value not in run.log


async def test_the_data_directory_holds_only_ciphertext_for_secrets(tmp_path):
    run = await run_with_secrets(tmp_path)
    files = [p for p in run.data_dir.rglob("*") if p.is_file()]
    assert any(p.name.startswith("leadstream.db") for p in files)
    stored = b"".join(p.read_bytes() for p in files)
    assert b"lsenc:v1:" in stored  # the secrets are there, sealed
    for value in run.secrets.values():
        assert value.encode() not in stored, f"a secret is stored in clear: {value[:6]}…"


async def test_subscription_admin_actions_are_in_the_audit_trail(tmp_path):
    run = await run_with_secrets(tmp_path)
    trail = next(a for a in reversed(run.answers) if '"entries"' in a)
    for action in ("subscription.create", "subscription.update", "subscription.replay"):
        assert action in trail, action
