"""SPEC §12 on real PostgreSQL with `leadstream serve` nodes: read-your-writes on every node,
failover within the lease TTL plus 2 s, SIGTERM behaviour, appends from several nodes that no
reader skips, and a real PostgreSQL restart (a throwaway server of the test's own)."""

from __future__ import annotations

import aiohttp

from test_cluster import HEADERS, call, cluster
from test_delivery_support import receiver

ROUNDS = 200


async def test_what_one_node_writes_every_node_answers_at_once(tmp_path, pg_url):
    async with cluster(tmp_path, pg_url) as (a, b), aiohttp.ClientSession() as session, receiver() as r:
        for n in range(ROUNDS):
            munchkin = f"{n:03d}-RYW-{n:03d}"
            document = {"name": f"s{n}", "munchkinId": munchkin, "stream": "activity", "endpoint": r.url}
            status, created = await call(session, "POST", f"{a.url}/v1/subscriptions", document)
            assert status == 201, created
            sub = created["id"]
            on_a, on_b = f"{a.url}/v1/subscriptions/{sub}", f"{b.url}/v1/subscriptions/{sub}"

            status, view = await call(session, "GET", on_b)
            assert (status, view["id"], view["name"]) == (200, sub, f"s{n}"), (n, view)
            status, page = await call(session, "GET", f"{b.url}/v1/subscriptions?munchkinId={munchkin}")
            assert status == 200 and [s["id"] for s in page["subscriptions"]] == [sub], (n, page)
            status, journal = await call(session, "GET", on_b + "/journal?latest=true")
            assert status in (200, 204), (n, journal)

            status, view = await call(session, "PATCH", on_b, {"name": f"renamed{n}"})
            assert status == 200 and view["name"] == f"renamed{n}", (n, view)
            status, view = await call(session, "GET", on_a)
            assert view["name"] == f"renamed{n}", (n, view)

            status, view = await call(session, "POST", on_b + "/pause")
            assert status == 200 and (view["state"], view["pausedReason"]) == ("paused", "manual"), (n, view)
            for node_url in (on_a, on_b):  # whichever node delivers it answers with the pause
                status, view = await call(session, "GET", node_url)
                assert (view["state"], view["pausedReason"]) == ("paused", "manual"), (n, node_url, view)

            status, view = await call(session, "POST", on_a + "/resume")
            assert status == 200 and view["state"] == "active", (n, view)
            status, view = await call(session, "GET", on_b)
            assert view["state"] == "active", (n, view)

            status, view = await call(session, "DELETE", on_b)
            assert status == 200 and view["state"] == "deprovisioned", (n, view)
            status, view = await call(session, "GET", on_a)
            assert view["state"] == "deprovisioned", (n, view)


async def test_an_api_key_made_on_one_node_works_and_shows_on_every_node_at_once(tmp_path, pg_url):
    async with cluster(tmp_path, pg_url) as (a, b), aiohttp.ClientSession() as session:
        for n in range(20):
            munchkin = f"{n:03d}-KEY-{n:03d}"
            body = {"name": f"k{n}", "munchkinIds": [munchkin], "scopes": ["read", "ingest"]}
            status, made = await call(session, "POST", f"{a.url}/v1/keys", body)
            assert status == 201, made
            status, shown = await call(session, "GET", f"{b.url}/v1/keys/{made['id']}")
            assert status == 200 and shown["name"] == f"k{n}", shown
            status, listed = await call(session, "GET", f"{b.url}/v1/keys?munchkinId={munchkin}")
            assert [k["id"] for k in listed["keys"]] == [made["id"]], listed
            tenant = {"Authorization": f"Bearer {made['key']}"}
            async with session.get(f"{b.url}/v1/subscriptions", headers=tenant) as answer:
                assert answer.status == 200, await answer.text()

            status, revoked = await call(session, "DELETE", f"{b.url}/v1/keys/{made['id']}")
            assert status == 200 and revoked["revokedAt"], revoked
            status, shown = await call(session, "GET", f"{a.url}/v1/keys/{made['id']}")
            assert shown["revokedAt"] == revoked["revokedAt"], shown
        async with session.get(f"{b.url}/v1/keys/000000000000", headers=HEADERS) as answer:
            assert answer.status == 404  # a key nobody made is still not found
