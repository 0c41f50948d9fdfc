"""`leadstream serve`'s log tells each state move of a source with its reason, the return to
`running` included, and why a source stopped; never the client secret."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from helpers import ServerProcess, wait_until
from leadstream.sim.marketo import Limits, MarketoInstance

FAST_ENV = {
    "LEADSTREAM_SOURCE_FOLLOW_INTERVAL": "0.05",
    "LEADSTREAM_SOURCE_BACKOFF_BASE": "0.05",
    "LEADSTREAM_SOURCE_AUTH_RETRY": "0.2",
}


def log_lines(server: ServerProcess, event: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line["event"] == event]


async def test_the_log_tells_each_source_state_move_with_its_reason(tmp_path) -> None:
    limits = Limits(calls_per_window=100_000, max_concurrent=50, daily_quota=10_000_000)
    async with MarketoInstance(rate=20, limits=limits) as sim, aiohttp.ClientSession() as http:
        server = await ServerProcess(tmp_path / "data", "--log-format", "json", env=FAST_ENV).start()
        secret = sim.client_secret
        try:
            body = {"type": "marketo", "name": "sim", "munchkinId": sim.munchkin_id, "restUrl": sim.url,
                    "clientId": sim.client_id, "clientSecret": secret, "activityTypes": [1, 2],
                    "deletedLeads": False, "pollIntervalMs": 20}  # fmt: skip
            async with http.post(f"{server.url}/v1/sources", json=body, headers=server.headers) as r:
                assert r.status == 201, await r.text()
                source_id = (await r.json())["id"]

            def moves() -> list[tuple[str, str, str]]:
                return [
                    (line["was"], line["state"], line["reason"])
                    for line in log_lines(server, "source state changed")
                    if line["source"] == source_id
                ]

            await wait_until(lambda: sim.stats.outcomes("activities")["ok"], 30, what="a first poll")
            assert moves() == []  # running from the start: no move yet
            sim.client_secret = "rotated-on-the-instance"  # the credentials stop working
            sim.revoke_tokens()
            await wait_until(lambda: moves(), 30, what="the move to failing in the log")
            sim.client_secret = secret  # fixed on the instance: the next try succeeds
            await wait_until(lambda: len(moves()) == 2, 30, what="the return to running in the log")
            (was, failing, why), (_, running, back) = moves()
            assert (was, failing, running) == ("running", "failing", "running")
            assert "identity refused the client credentials" in why and "HTTP 401" in why
            assert "Marketo answered again" in back
            async with http.post(f"{server.url}/v1/sources/{source_id}/pause", headers=server.headers) as r:
                assert r.status == 200
            await wait_until(lambda: log_lines(server, "source stopped"), 30, what="the stop in the log")
            assert [line["reason"] for line in log_lines(server, "source stopped")] == ["paused"]
            assert secret not in server.log.read_text()
        finally:
            server.stop()
