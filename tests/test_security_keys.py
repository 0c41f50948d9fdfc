"""Tenant API keys and scopes (issue 8): create, list, revoke, last-used, 401s, 403s, 404s, audit."""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

import aiohttp

from helpers import ADMIN_KEY, MUNCHKIN, activity, running_server
from leadstream.catalog import Catalog
from leadstream.events import Validator, validate_records
from leadstream.security import apikeys
from leadstream.security import principals as auth
from leadstream.security.apikeys import ApiKeys
from leadstream.security.audit import AuditLog, redact
from leadstream.security.principals import OPERATOR, Principal, restrict_to_tenants
from leadstream.store import open_store

OTHER = "987-XYZ-654"
OPERATOR_HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def call(
    session: aiohttp.ClientSession, method: str, url: str, key: str | None = ADMIN_KEY, **kwargs: Any
) -> tuple[int, Any]:
    headers = bearer(key) if key is not None else {}
    async with session.request(method, url, headers=headers, **kwargs) as r:
        return r.status, await r.json(content_type=None)


async def make_key(
    session: aiohttp.ClientSession, url: str, munchkins: list[str], scopes: list[str], name: str = ""
) -> dict[str, Any]:
    status, body = await call(
        session, "POST", f"{url}/v1/keys", json={"munchkinIds": munchkins, "scopes": scopes, "name": name}
    )
    assert status == 201, body
    return body


async def test_create_list_revoke_and_the_key_is_shown_once(tmp_path):
    async with running_server(data_dir=tmp_path / "data") as server, aiohttp.ClientSession() as s:
        created = await make_key(s, server.url, [MUNCHKIN], ["ingest"], "producer")
        secret = created["key"]
        assert secret.startswith("lst_") and created["id"] in secret
        assert created["scopes"] == ["ingest"] and created["munchkinIds"] == [MUNCHKIN] and created["revokedAt"] is None

        status, listed = await call(s, "GET", f"{server.url}/v1/keys")
        assert status == 200 and [k["id"] for k in listed["keys"]] == [created["id"]]
        status, one = await call(s, "GET", f"{server.url}/v1/keys/{created['id']}")
        assert status == 200 and "key" not in one and "hash" not in one
        assert secret not in str(listed) + str(one)

        status, published = await call(
            s, "POST", f"{server.url}/v1/streams/activity/events", secret, json=[activity(1)]
        )
        assert status == 200 and published["accepted"] == 1

        status, revoked = await call(s, "DELETE", f"{server.url}/v1/keys/{created['id']}")
        assert status == 200 and revoked["revokedAt"] is not None
        status, problem = await call(s, "POST", f"{server.url}/v1/streams/activity/events", secret, json=[activity(2)])
        assert status == 401 and problem["detail"] == "the API key is not valid"
        status, _ = await call(s, "DELETE", f"{server.url}/v1/keys/nope")
        assert status == 404
    # Only the hash is stored: the secret part of the key is nowhere in the data directory.
    secret_part = secret.split(".", 1)[1].encode()
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():
            assert secret_part not in path.read_bytes(), path


async def test_last_used_is_kept_written_at_most_once_a_minute_and_survives_a_restart(tmp_path):
    data_dir = tmp_path / "data"
    async with running_server(data_dir=data_dir) as server, aiohttp.ClientSession() as s:
        created = await make_key(s, server.url, [MUNCHKIN], ["read"])
        assert created["lastUsedAt"] is None
        status, _ = await call(s, "GET", f"{server.url}/v1/catalog/activity", created["key"])
        assert status == 200
        _, first = await call(s, "GET", f"{server.url}/v1/keys/{created['id']}")
        assert first["lastUsedAt"] is not None
        status, _ = await call(s, "GET", f"{server.url}/v1/catalog/audit", created["key"])
        assert status == 200
        _, second = await call(s, "GET", f"{server.url}/v1/keys/{created['id']}")
        assert second["lastUsedAt"] == first["lastUsedAt"]  # the same minute: not updated again
    async with running_server(data_dir=data_dir) as server, aiohttp.ClientSession() as s:
        _, after = await call(s, "GET", f"{server.url}/v1/keys/{created['id']}")
        assert after["lastUsedAt"] == first["lastUsedAt"] and after["revokedAt"] is None
        status, _ = await call(s, "GET", f"{server.url}/v1/catalog/activity", created["key"])
        assert status == 200  # keys survive restarts


MALFORMED = [
    None,
    "",
    "Bearer",
    "Bearer ",
    "Basic dGVzdDp0ZXN0",
    "bearer lst_",
    "Bearer lst_abc",
    "Bearer lst_abc.def",
    f"Bearer {ADMIN_KEY}x",
    f"Bearer {ADMIN_KEY[:-1]}",
    "Bearer " + "A" * 5000,
    "Bearer lst_" + "é" * 10 + ".x",
]


async def test_missing_and_malformed_keys_are_401_everywhere(tmp_path):
    async with running_server(data_dir=tmp_path / "data") as server, aiohttp.ClientSession() as s:
        for header in MALFORMED:
            headers = {} if header is None else {"Authorization": header}
            for method, path in [
                ("GET", "/v1/catalog/activity"),
                ("POST", "/v1/streams/activity/events"),
                ("GET", "/v1/keys"),
                ("GET", "/v1/audit"),
                ("PUT", f"/v1/catalog/activity/{MUNCHKIN}"),
            ]:
                async with s.request(method, server.url + path, headers=headers, json=[]) as r:
                    assert r.status == 401, (header, method, path, await r.text())
                    assert r.headers["WWW-Authenticate"] == "Bearer"
                    assert r.content_type == "application/problem+json"


async def test_a_key_with_a_wrong_secret_is_401_even_with_a_real_id(tmp_path):
    async with running_server(data_dir=tmp_path / "data") as server, aiohttp.ClientSession() as s:
        created = await make_key(s, server.url, [MUNCHKIN], ["read"])
        forged = f"lst_{created['id']}.{'x' * 43}"
        status, _ = await call(s, "GET", f"{server.url}/v1/catalog/activity", forged)
        assert status == 401


async def test_keys_are_compared_as_digests_in_constant_time(tmp_path, monkeypatch):
    compared: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    monkeypatch.setattr(apikeys.hmac, "compare_digest", spy)
    async with running_server(data_dir=tmp_path / "data") as server, aiohttp.ClientSession() as s:
        created = await make_key(s, server.url, [MUNCHKIN], ["read"])
        compared.clear()
        for key in (created["key"], ADMIN_KEY, "short", "lst_" + created["id"] + ".wrong"):
            await call(s, "GET", f"{server.url}/v1/catalog/activity", key)
    # Every presented key went through compare_digest, always as two 32-byte SHA-256 digests,
    # whatever the length of what was sent.
    assert len(compared) >= 4 and set(compared) == {(32, 32)}


async def test_scopes(tmp_path):
    async with running_server(data_dir=tmp_path / "data") as server, aiohttp.ClientSession() as s:
        producer = (await make_key(s, server.url, [MUNCHKIN], ["ingest"]))["key"]
        reader = (await make_key(s, server.url, [MUNCHKIN], ["read"]))["key"]
        manager = (await make_key(s, server.url, [MUNCHKIN], ["subscriptions"]))["key"]
        types = {"result": [{"id": 100001, "name": "Attend Webinar", "attributes": []}]}
        url = server.url

        # a producer publishes and nothing else
        assert (await call(s, "POST", f"{url}/v1/streams/activity/events", producer, json=[activity(1)]))[0] == 200
        status, problem = await call(s, "GET", f"{url}/v1/catalog/activity", producer)
        assert status == 403 and "ingest" in problem["detail"]
        assert (await call(s, "GET", f"{url}/v1/audit", producer))[0] == 403
        # a reader reads, and neither publishes nor changes
        assert (await call(s, "GET", f"{url}/v1/catalog/activity?munchkinId={MUNCHKIN}", reader))[0] == 200
        assert (await call(s, "POST", f"{url}/v1/streams/activity/events", reader, json=[activity(2)]))[0] == 403
        assert (await call(s, "PUT", f"{url}/v1/catalog/activity/{MUNCHKIN}", reader, json=types))[0] == 403
        # subscriptions: reads and changes its own tenant's things
        assert (await call(s, "PUT", f"{url}/v1/catalog/activity/{MUNCHKIN}", manager, json=types))[0] == 200
        assert (await call(s, "GET", f"{url}/v1/catalog/activity?munchkinId={MUNCHKIN}", manager))[0] == 200
        # another tenant's things are 404, as if they did not exist
        for key in (reader, manager):
            status, problem = await call(s, "GET", f"{url}/v1/catalog/activity?munchkinId={OTHER}", key)
            assert status == 404, problem
        assert (await call(s, "PUT", f"{url}/v1/catalog/activity/{OTHER}", manager, json=types))[0] == 404
        # API keys are the operator's alone
        for key in (producer, reader, manager):
            assert (await call(s, "GET", f"{url}/v1/keys", key))[0] == 403
            assert (await call(s, "POST", f"{url}/v1/keys", key, json={"munchkinIds": [MUNCHKIN], "scopes": ["read"]}))[
                0
            ] == 403
        # the operator does everything
        assert (await call(s, "GET", f"{url}/v1/catalog/activity?munchkinId={OTHER}"))[0] == 200


async def test_creating_a_key_checks_its_fields(tmp_path):
    async with running_server(data_dir=tmp_path / "data") as server, aiohttp.ClientSession() as s:
        for body, field in [
            ({"munchkinIds": ["bad"], "scopes": ["read"]}, "munchkinIds[0]"),
            ({"munchkinIds": [MUNCHKIN], "scopes": ["admin"]}, "scopes"),
            ({"munchkinIds": [], "scopes": ["read"]}, "munchkinIds"),
            ({"munchkinIds": [MUNCHKIN], "scopes": ["read"], "extra": 1}, "extra"),
        ]:
            status, problem = await call(s, "POST", f"{server.url}/v1/keys", json=body)
            assert status == 422 and field in problem["detail"], problem


async def test_a_tenant_key_publishes_only_its_own_tenants_records():
    """The decision: each other tenant's record is rejected on its own (naming the Munchkin ID);
    the key's own records in the same request are stored."""
    validator = Validator(Catalog())
    records = [
        activity(0),
        activity(1, munchkin=OTHER),
        {"munchkinId": MUNCHKIN},
        activity(3),
        activity(4, munchkin=OTHER),
    ]
    import orjson

    events, rejected = validate_records(validator, "activity", [orjson.dumps(r) for r in records])
    producer = Principal("k1", frozenset({MUNCHKIN}), frozenset({"ingest"}))
    kept, refused = restrict_to_tenants(producer, events, rejected)
    assert [e.id for e in kept] == ["guid-0", "guid-3"]
    assert [r.index for r in refused] == [1, 2, 4]
    assert "987-XYZ-654" in refused[0].errors[0] and "munchkinId" in refused[0].errors[0]
    assert restrict_to_tenants(OPERATOR, events, rejected) == (events, rejected)


async def test_a_producer_cannot_publish_another_tenants_records_over_http(tmp_path):
    async with running_server(data_dir=tmp_path / "data") as server, aiohttp.ClientSession() as s:
        producer = (await make_key(s, server.url, [MUNCHKIN], ["ingest"]))["key"]
        status, body = await call(
            s,
            "POST",
            f"{server.url}/v1/streams/activity/events",
            producer,
            json=[activity(1), activity(2, munchkin=OTHER)],
        )
        assert status == 200 and body["accepted"] == 1 and body["rejected"][0]["index"] == 1
        stored = await server.services.store.read(0, 100)
        assert {e.munchkin_id for e in stored} == {MUNCHKIN}


async def test_a_revocation_reaches_another_node_sharing_the_store(store):
    """Two ApiKeys over one store are two nodes: node B learns of keys made and revoked on A."""
    node_a, node_b = ApiKeys(store, refresh=0.05), ApiKeys(store, refresh=0.05)
    await node_a.load()
    await node_b.load()
    record, secret = await node_a.create([MUNCHKIN], ["read"], created_by="operator")
    assert node_a.identify(secret) is not None
    await node_b.sync()
    assert node_b.identify(secret) is not None
    await node_a.revoke(record.id)
    assert node_a.identify(secret) is None  # at once where it was revoked
    await node_b.sync()
    assert node_b.identify(secret) is None
    assert [k.id for k in node_b.find(MUNCHKIN)] == [record.id] and node_b.find(MUNCHKIN, include_revoked=False) == []


async def test_two_nodes_writing_keys_and_audit_entries_at_once_lose_nothing(store_url):
    """Two nodes, each its own store connection to one database (or file): keys created and
    revoked, and audit entries appended, on both at the same time — every write is there after."""
    async with open_store(store_url, node_id="a") as store_a, open_store(store_url, node_id="b") as store_b:
        nodes = [(ApiKeys(store_a), AuditLog(store_a)), (ApiKeys(store_b), AuditLog(store_b))]

        async def work(keys: ApiKeys, log: AuditLog, node: int) -> list[str]:
            made = []
            for i in range(15):
                record, _ = await keys.create([MUNCHKIN], ["read"], name=f"{node}-{i}", created_by="operator")
                made.append(record.id)
                if i % 3 == 0:
                    await keys.revoke(record.id)
                await log.record("operator", "key.create", record.id, None, [MUNCHKIN])
            return made

        made = await asyncio.gather(*(work(keys, log, n) for n, (keys, log) in enumerate(nodes)))
        for keys, _ in nodes:
            await keys.load()
            listed = {k.id: k for k in keys.find()}
            assert set(listed) == set(made[0]) | set(made[1])
            assert {k for k, record in listed.items() if record.revokedAt} == {
                ids[i] for ids in made for i in range(0, 15, 3)
            }
        entries, _ = await nodes[0][1].entries(limit=1000)
        assert sorted(e.target for e in entries) == sorted(made[0] + made[1])
        assert len({e.seq for e in entries}) == 30


async def test_the_audit_trail_records_key_actions_without_secrets(tmp_path):
    async with running_server(data_dir=tmp_path / "data") as server, aiohttp.ClientSession() as s:
        mine = await make_key(s, server.url, [MUNCHKIN], ["subscriptions"], "mine")
        theirs = await make_key(s, server.url, [OTHER], ["read"], "theirs")
        await call(s, "DELETE", f"{server.url}/v1/keys/{theirs['id']}")
        status, trail = await call(s, "GET", f"{server.url}/v1/audit")
        assert status == 200
        assert [(e["action"], e["target"], e["actor"]) for e in trail["entries"]] == [
            ("key.revoke", theirs["id"], "operator"),
            ("key.create", theirs["id"], "operator"),
            ("key.create", mine["id"], "operator"),
        ]
        assert mine["key"] not in str(trail) and theirs["key"] not in str(trail)
        # a tenant key sees its own tenants' entries only, and another tenant's filter is 404
        status, own = await call(s, "GET", f"{server.url}/v1/audit", mine["key"])
        assert status == 200 and [e["target"] for e in own["entries"]] == [mine["id"]]
        assert (await call(s, "GET", f"{server.url}/v1/audit?munchkinId={OTHER}", mine["key"]))[0] == 404
        status, filtered = await call(s, "GET", f"{server.url}/v1/audit?action=key.revoke")
        assert [e["target"] for e in filtered["entries"]] == [theirs["id"]]


async def test_audit_pages_back_through_every_entry_and_keeps_a_bounded_ring(store, monkeypatch):
    log = AuditLog(store, keep=29)  # entries 22..50 of 50
    for i in range(50):
        await log.record(
            "operator",
            "subscription.update",
            f"sub-{i}",
            {"auth": {"type": "token", "token": f"secret-{i}"}},
            [MUNCHKIN if i % 2 else OTHER],
        )
    seen: list[int] = []
    before = None
    while True:
        page, before = await log.entries(limit=4, before=before)
        seen += [e.seq for e in page]
        if before is None:
            break
    assert seen == list(range(50, 21, -1))  # newest first, each once, down to the oldest kept
    mine, _ = await log.entries(limit=100, tenants=frozenset({MUNCHKIN}))
    assert mine and all(e.munchkinIds == [MUNCHKIN] for e in mine)
    assert all(e.changes == {"auth": {"type": "token", "token": "***"}} for e in mine)


def test_redaction_finds_secrets_by_name_and_by_shape():
    document = {
        "name": "crm",
        "auth": {"type": "oauth2", "clientId": "id", "clientSecret": "s3cret"},
        "signing": {"hmacSecret": "whsec_abc", "hmac": True},
        "note": "lsenc:v1:abcd:xyz",
        "tls": {"clientKey": "-----BEGIN PRIVATE KEY-----", "caBundle": "pem"},
        "list": [{"token": "t"}, "lst_a.b"],
    }
    assert redact(document) == {
        "name": "crm",
        "auth": {"type": "oauth2", "clientId": "id", "clientSecret": "***"},
        "signing": {"hmacSecret": "***", "hmac": True},
        "note": "***",
        "tls": {"clientKey": "***", "caBundle": "pem"},
        "list": [{"token": "***"}, "***"],
    }


async def test_ingest_rate_limit_answers_429_with_retry_after_and_loses_nothing(tmp_path):
    import asyncio

    async with (
        running_server(data_dir=tmp_path / "data", ingest_rate_limit=20, ingest_burst=20) as server,
        aiohttp.ClientSession() as s,
    ):
        producer = (await make_key(s, server.url, [MUNCHKIN], ["ingest"]))["key"]

        async def send(n: int) -> tuple[int, Any, str | None]:
            async with s.post(
                f"{server.url}/v1/streams/activity/events",
                headers=bearer(producer),
                json=[activity(n * 10 + j) for j in range(10)],
            ) as r:
                return r.status, await r.json(content_type=None), r.headers.get("Retry-After")

        results = await asyncio.gather(*(send(n) for n in range(50)))
        statuses = [status for status, _, _ in results]
        assert statuses.count(200) >= 20 and statuses.count(429) >= 10, statuses
        waits = [int(retry) for status, _, retry in results if status == 429]  # type: ignore[arg-type]
        assert all(w >= 1 for w in waits)
        assert all(body["title"] == "Too Many Requests" for status, body, _ in results if status == 429)
        accepted = sum(body["accepted"] for status, body, _ in results if status == 200)
        assert accepted == 10 * statuses.count(200)
        stored = await server.services.store.read(0, 1000)
        assert len(stored) == accepted  # every accepted record is in the log; refused ones are not

        # The producer waits as told and sends the refused requests again: all of them land.
        pending = [n for n, (status, _, _) in enumerate(results) if status == 429]
        deadline = asyncio.get_running_loop().time() + 10
        while pending:
            assert asyncio.get_running_loop().time() < deadline, "the refused requests never got through"
            await asyncio.sleep(max(waits))
            again = await asyncio.gather(*(send(n) for n in pending))
            pending = [n for n, (status, _, _) in zip(pending, again) if status == 429]
        stored = await server.services.store.read(0, 1000)
        assert len({e.id for e in stored}) == 500

        # The operator key is not limited.
        operator = await asyncio.gather(
            *(
                call(s, "POST", f"{server.url}/v1/streams/activity/events", ADMIN_KEY, json=[activity(1000 + n)])
                for n in range(30)
            )
        )
        assert [status for status, _ in operator] == [200] * 30


def test_the_keys_commands_create_list_and_revoke_through_the_api(tmp_path):
    """`leadstream keys create|list|revoke` as a user runs them, against `leadstream serve`."""
    import asyncio
    import json

    from typer.testing import CliRunner

    from helpers import ServerProcess
    from leadstream.cli.keys import keys

    server = ServerProcess(tmp_path / "data")
    asyncio.run(server.start())
    try:
        cli = CliRunner()
        common = ["--server", server.url, "--key", ADMIN_KEY]
        created = cli.invoke(
            keys, ["create", "--munchkin", MUNCHKIN, "--scope", "ingest", "--scope", "read", "--name", "etl", *common],
            env={"COLUMNS": "200"},
        )  # fmt: skip
        assert created.exit_code == 0, created.output
        secret = created.output.rsplit("shown once, keep it now): ", 1)[1].strip()
        assert "ingest" in created.output.split("API key (shown once")[0]  # the record, as a table
        key_id = secret.removeprefix("lst_").split(".")[0]
        assert key_id in created.output.split("API key (shown once")[0]

        listed = cli.invoke(keys, ["list", "--munchkin", MUNCHKIN, *common], env={"COLUMNS": "200"})
        assert listed.exit_code == 0 and key_id in listed.output and secret not in listed.output
        listed = cli.invoke(keys, ["list", "--munchkin", MUNCHKIN, "--json", *common])
        record = json.loads(listed.output)[0]
        assert record["id"] == key_id and record["scopes"] == ["ingest", "read"]

        revoked = cli.invoke(keys, ["revoke", key_id, "--json", *common])
        assert revoked.exit_code == 0 and json.loads(revoked.output)["revokedAt"] is not None
        refused = cli.invoke(keys, ["list", "--server", server.url, "--key", secret])
        assert refused.exit_code == 1 and "401" in refused.output
    finally:
        server.stop()
    assert secret not in server.log.read_text()
