"""SPEC §10.1's catalog refresh: Get Activity Types is loaded again every
LEADSTREAM_SOURCE_CATALOG_REFRESH, so a type new on the instance reaches the tenant's catalog, and a
source of every type ("*") reads its activities too. A `leadstream serve` process against the
simulated instance on loopback."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import aiohttp

from helpers import ServerProcess, wait_until
from leadstream.catalog.model import parse_activity_type
from leadstream.sim.marketo import Limits, MarketoInstance

NEW_TYPE = {"id": 100007, "name": "Attended Demo Day", "attributes": [{"name": "Booth", "dataType": "string"}]}


def stored_ids(data_dir: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(f"file:{data_dir / 'leadstream.db'}?mode=ro", uri=True)) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM events")}


async def test_a_type_new_on_the_instance_reaches_the_catalog_and_is_read(tmp_path: Path) -> None:
    limits = Limits(calls_per_window=100_000, max_concurrent=50, daily_quota=10_000_000)
    env = {"LEADSTREAM_SOURCE_FOLLOW_INTERVAL": "0.05", "LEADSTREAM_SOURCE_CATALOG_REFRESH": "0.3"}
    async with MarketoInstance(rate=0, limits=limits) as sim, aiohttp.ClientSession() as http:
        server = await ServerProcess(tmp_path / "data", env=env).start()
        try:
            body = {"type": "marketo", "name": "sim", "munchkinId": sim.munchkin_id, "restUrl": sim.url,
                    "clientId": sim.client_id, "clientSecret": sim.client_secret, "activityTypes": ["*"],
                    "deletedLeads": False, "pollIntervalMs": 20}  # fmt: skip
            async with http.post(f"{server.url}/v1/sources", json=body, headers=server.headers) as r:
                assert r.status == 201, await r.text()
            catalog = f"{server.url}/v1/catalog/activity?munchkinId={sim.munchkin_id}"

            async def listed() -> set[int]:
                async with http.get(catalog, headers=server.headers) as r:
                    return {t["id"] for t in (await r.json())["types"]}

            await wait_until(lambda: sim.stats.outcomes("activities")["ok"], 30, what="a first poll")
            assert 1 in await listed() and NEW_TYPE["id"] not in await listed()
            before = sim.stats.outcomes("types")["ok"]
            await wait_until(lambda: sim.stats.outcomes("types")["ok"] > before, 30, what="a refresh")
            assert NEW_TYPE["id"] not in await listed()  # refreshed, and nothing new yet

            sim.types[NEW_TYPE["id"]] = parse_activity_type(NEW_TYPE)  # the instance's admin adds a type
            new = sim.inject(3, [NEW_TYPE["id"]])

            async def has_new_type() -> bool:
                return NEW_TYPE["id"] in await listed()

            await wait_until(has_new_type, 30, what="the new type in the catalog")
            wanted = {r["marketoGUID"] for r in new}
            await wait_until(lambda: wanted <= stored_ids(tmp_path / "data"), 30, what="its activities in the log")
        finally:
            server.stop()
