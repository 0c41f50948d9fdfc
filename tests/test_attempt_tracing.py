"""Debug tracing: each attempt keeps what was sent (secrets masked) and what came back (SPEC §11)."""

from __future__ import annotations

import orjson
from aiohttp import web

from helpers import activity, wait_until
from test_delivery_support import Received, bench, receiver

TOKEN = "s3cret-token-value"
HMAC_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # 24 bytes of key


async def attempts(b, sub_id: str, count: int) -> list[dict]:
    async def enough() -> list[dict] | None:
        found = orjson.loads(await b.subscriptions.attempts(sub_id, 100))["attempts"]
        return found if len(found) >= count else None

    return await wait_until(enough, what=f"{count} attempts in the log")


async def test_a_failed_attempt_shows_the_request_and_the_answer_with_secrets_masked(tmp_path):
    def answer(seen: Received) -> web.Response:
        # An endpoint that echoes what it was sent, as some error pages do: the token must not come back.
        echoed = f"<h1>down</h1><pre>{seen.headers.get('authorization')}</pre>"
        return web.Response(status=500, text=echoed, headers={"X-Upstream": "db-3", "Retry-Hint": "later"})

    async with bench(tmp_path) as b, receiver(answer=answer) as r:
        sub = await b.subscribe(
            r.url, auth={"type": "token", "token": TOKEN}, signing={"hmacSecret": HMAC_SECRET}, retryAttempts=0
        )
        await b.publish("activity", [activity(1)])
        [attempt] = await attempts(b, sub["id"], 1)
        assert r.requests[0].headers["authorization"] == f"Bearer {TOKEN}"  # it was sent…

        assert attempt["status"] == 500 and attempt["outcome"] == "failed"
        sent = attempt["trace"]["request"]["headers"]
        assert sent["Authorization"] == "***" and sent["webhook-signature"] == "***"  # …but is not kept
        assert sent["X-Leadstream-Subscription"] == sub["id"]
        assert sent["X-Leadstream-Delivery"] == attempt["batchId"]
        assert sent["webhook-id"] == attempt["batchId"] and sent["User-Agent"].startswith("leadstream/")
        got = attempt["trace"]["response"]
        assert got["status"] == 500 and got["headers"]["X-Upstream"] == "db-3"
        assert got["body"] == "<h1>down</h1><pre>Bearer ***</pre>" and got["bodyTruncated"] is False
        stored = b"".join(await b.store.list_attempts(sub["id"], 10))
        assert TOKEN.encode() not in stored and HMAC_SECRET.encode() not in stored


async def test_a_body_over_64kB_is_cut_and_a_refused_connection_has_no_response(tmp_path):
    big = "é" + "x" * (80 * 1024)

    async with bench(tmp_path) as b, receiver(answer=lambda seen: web.Response(status=502, text=big)) as r:
        sub = await b.subscribe(r.url, retryAttempts=0)
        await b.publish("activity", [activity(1)])
        [attempt] = await attempts(b, sub["id"], 1)
        got = attempt["trace"]["response"]
        assert got["bodyTruncated"] is True
        assert len(got["body"].encode()) == 64 * 1024 and got["body"].startswith("éxxx")

        await r.close()  # nothing listens there any more
        await b.subscriptions.resume(sub["id"])
        newest = (await attempts(b, sub["id"], 2))[0]
        assert newest["status"] is None and "cannot connect" in newest["error"]
        assert newest["trace"]["response"] is None
        assert newest["trace"]["request"]["headers"]["X-Leadstream-Delivery"] == attempt["batchId"]


async def test_a_delivered_attempt_keeps_the_answer_too(tmp_path):
    async with bench(tmp_path) as b, receiver() as r:
        sub = await b.subscribe(r.url)
        await b.publish("activity", [activity(1)])
        [attempt] = await attempts(b, sub["id"], 1)
        assert attempt["outcome"] == "delivered"
        assert attempt["trace"]["response"]["status"] == 200 and attempt["trace"]["response"]["body"] == "ok"
        assert "Authorization" not in attempt["trace"]["request"]["headers"]  # no auth: none sent
