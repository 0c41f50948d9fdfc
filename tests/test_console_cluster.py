"""Console sessions on two `leadstream serve` nodes sharing one PostgreSQL (SPEC §12: any node
answers any request): signed in on one node, the cookie works on the other; signing out on either,
or revoking the key, ends the session on both; a restarted node still knows it."""

from __future__ import annotations

import re

import aiohttp

from helpers import MUNCHKIN, ServerProcess, wait_until
from leadstream.console.session import COOKIE
from test_cluster import cluster
from throwaway_pg import throwaway_pg  # noqa: F401  (a fixture)


async def sign_in(http: aiohttp.ClientSession, node: ServerProcess, key: str) -> str:
    """The session cookie's value after signing in on ``node``."""
    async with http.post(
        f"{node.url}/ui/sign-in", data={"key": key}, headers={"Origin": node.url}, allow_redirects=False
    ) as r:
        assert r.status == 303, await r.text()
        return r.cookies[COOKIE].value


async def overview(http: aiohttp.ClientSession, node: ServerProcess, session_id: str) -> tuple[int, str]:
    """The overview's status and body, or (303, where it sends the browser)."""
    async with http.get(f"{node.url}/ui/", headers={"Cookie": f"{COOKIE}={session_id}"}, allow_redirects=False) as r:
        return r.status, r.headers["location"] if r.status == 303 else await r.text()


async def ended_on(http: aiohttp.ClientSession, node: ServerProcess, session_id: str) -> bool:
    status, where = await overview(http, node, session_id)
    return status == 303 and where.startswith("/ui/sign-in?reason=ended")


async def test_a_session_made_on_one_node_works_on_the_other_and_signing_out_ends_it_on_both(tmp_path, pg_url):
    async with cluster(tmp_path, pg_url) as (a, b), aiohttp.ClientSession() as http:
        session_id = await sign_in(http, a, a.key)
        status, page = await overview(http, b, session_id)
        assert status == 200, page
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token is not None  # node B knows the session's CSRF token too
        assert (await overview(http, a, session_id))[0] == 200

        async with http.post(
            f"{b.url}/ui/sign-out", data={"csrf_token": token.group(1)},
            headers={"Cookie": f"{COOKIE}={session_id}", "Origin": b.url}, allow_redirects=False,
        ) as r:  # fmt: skip
            assert r.status == 303 and r.headers["location"] == "/ui/sign-in?reason=signed_out"
        assert await ended_on(http, b, session_id)  # at once where it was signed out
        # Node A read the session less than a second ago; it notices within its cache's second.
        await wait_until(lambda: ended_on(http, a, session_id), timeout=5, what="node A to refuse the cookie")
        assert await ended_on(http, a, session_id)  # and stays refused

        # A node restarted (or a new one behind the balancer) still knows the sessions.
        kept = await sign_in(http, b, b.key)
        a.stop()
        await a.start()
        assert (await overview(http, a, kept))[0] == 200


async def test_revoking_a_key_on_one_node_ends_its_sessions_on_the_other(tmp_path, pg_url):
    async with cluster(tmp_path, pg_url) as (a, b), aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {a.key}"}
        async with http.post(
            f"{a.url}/v1/keys", json={"munchkinIds": [MUNCHKIN], "scopes": ["read"]}, headers=headers
        ) as r:
            assert r.status == 201, await r.text()
            key = await r.json()
        session_id = await sign_in(http, a, key["key"])
        other = await sign_in(http, b, a.key)  # the operator's session is not the key's
        assert (await overview(http, b, session_id))[0] == 200

        async with http.delete(f"{b.url}/v1/keys/{key['id']}", headers=headers) as r:
            assert r.status == 200, await r.text()
        assert await ended_on(http, b, session_id)
        await wait_until(
            lambda: ended_on(http, a, session_id), timeout=5, what="node A to end the revoked key's session"
        )
        assert (await overview(http, a, other))[0] == 200


async def test_store_sessions_expire_idle_or_old_and_write_last_seen_only_now_and_then(store):
    from leadstream.console.pages.sessions import StoreSessionStore
    from leadstream.console.session import digest_of
    from leadstream.security.principals import Principal

    now = [1000.0]
    sessions = StoreSessionStore(lambda: store, idle=100, absolute=250, cache_seconds=0, clock=lambda: now[0])
    tenant = Principal("k1", frozenset({MUNCHKIN}), frozenset({"read"}))
    session_id, made = await sessions.create(tenant)
    record, created_at, seen_at = await store.console_session(digest_of(session_id))
    assert session_id.encode() not in record and (created_at, seen_at) == (1000.0, 1000.0)

    now[0] = 1030.0  # within touch_every (60 s): read, nothing written
    read = await sessions.get(session_id)
    assert read is not None and read.identity == tenant and read.csrf_token == made.csrf_token
    assert (await store.console_session(digest_of(session_id)))[2] == 1000.0
    now[0] = 1090.0
    assert await sessions.get(session_id) is not None
    assert (await store.console_session(digest_of(session_id)))[2] == 1090.0  # renewed
    now[0] = 1180.0
    assert await sessions.get(session_id) is not None  # 90 s idle: still on
    now[0] = 1251.0  # 250 s after sign-in: over, however busy
    assert await sessions.get(session_id) is None
    assert await store.console_session(digest_of(session_id)) is None

    idle_id, _ = await sessions.create(Principal("operator"))
    operator = await sessions.get(idle_id)
    assert operator is not None and operator.is_operator
    now[0] += 100  # idle as long as allowed
    assert await sessions.get(idle_id) is None

    # A revocation elsewhere (rows deleted in the store) ends the session at the next read.
    revoked_id, _ = await sessions.create(tenant)
    assert await store.delete_console_sessions(key_id="k1") == 1
    assert await sessions.get(revoked_id) is None


async def test_with_the_database_away_a_page_says_so_and_the_session_survives(tmp_path, throwaway_pg):  # noqa: F811
    import asyncio

    node = await ServerProcess(tmp_path / "data", env={"LEADSTREAM_DATABASE_URL": throwaway_pg.url}).start()
    try:
        async with aiohttp.ClientSession() as http:
            session_id = await sign_in(http, node, node.key)
            await asyncio.to_thread(throwaway_pg.stop, "fast")

            async def refused() -> tuple[int, str, str | None] | None:
                async with http.get(f"{node.url}/ui/", headers={"Cookie": f"{COOKIE}={session_id}"}) as r:
                    answer = (r.status, await r.text(), r.headers.get("set-cookie"))
                return answer if r.status != 200 else None  # the cache's second may still answer

            status, page, set_cookie = await wait_until(refused, timeout=10, what="the page without its database")
            assert status == 503 and "PostgreSQL is unreachable" in page and set_cookie is None, (status, page)
            await asyncio.to_thread(throwaway_pg.start)
            await wait_until(
                lambda: _answers(http, node, session_id), timeout=20, what="the same session once the database is back"
            )
    finally:
        node.stop()


async def _answers(http: aiohttp.ClientSession, node: ServerProcess, session_id: str) -> bool:
    return (await overview(http, node, session_id))[0] == 200


async def test_operator_sessions_end_when_the_operator_key_changes(store):
    from leadstream.console.pages.sessions import StoreSessionStore
    from leadstream.console.session import digest_of
    from leadstream.security.principals import Principal

    operator_key = ["first-operator-key"]
    sessions = StoreSessionStore(lambda: store, lambda: operator_key[0], cache_seconds=0)
    session_id, _ = await sessions.create(Principal("operator"))
    tenant_id, _ = await sessions.create(Principal("k1", frozenset({MUNCHKIN}), frozenset({"read"})))
    record, _, _ = await store.console_session(digest_of(session_id))
    assert b"first-operator-key" not in record  # a mark of it only, under the session's id
    assert await sessions.get(session_id) is not None

    operator_key[0] = "second-operator-key"  # changed (and the nodes restarted with it)
    assert await sessions.get(session_id) is None
    assert await store.console_session(digest_of(session_id)) is None
    assert await sessions.get(tenant_id) is not None  # a tenant key's session does not depend on it
