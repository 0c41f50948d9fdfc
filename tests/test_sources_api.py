"""The source admin API (SPEC §10) over real HTTP: create, list, get, patch, pause, resume, delete;
secrets sealed at rest and shown as "***"; every bad field named, nothing stored for a bad body."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from helpers import ADMIN_KEY, MUNCHKIN
from leadstream.catalog import Catalog
from leadstream.errors import Invalid
from leadstream.security.guard import GuardPolicy
from leadstream.sources.config import parse_new

SECRET = "marketo-client-secret-value"


def source(**fields: object) -> dict[str, object]:
    body: dict[str, object] = {
        "type": "marketo",
        "name": "acme-prod",
        "munchkinId": MUNCHKIN,
        "restUrl": "http://127.0.0.1:9",  # discard: nothing answers (the API is what is tested here)
        "clientId": "client-1",
        "clientSecret": SECRET,
    }
    body.update(fields)
    return body


async def test_create_show_change_pause_resume_delete(server, http, tmp_path) -> None:
    h = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with http.post(f"{server.url}/v1/sources", json=source(activityTypes=[1, "Visit Webpage"]), headers=h) as r:
        assert r.status == 201, await r.text()
        created = await r.json()
    assert created["clientSecret"] == "***" and SECRET not in str(created)
    assert created["activityTypes"] == [1, "Visit Webpage"] and created["quotaShare"] == 0.5
    assert created["callBudget"] == 25_000 and created["state"] == "running"
    assert datetime.fromisoformat(created["startAt"]) > datetime.now(UTC) - timedelta(minutes=1)  # "now", resolved
    sid = created["id"]
    async with http.get(f"{server.url}/v1/sources?munchkinId={MUNCHKIN}", headers=h) as r:
        assert [s["id"] for s in (await r.json())["sources"]] == [sid]
    async with http.get(f"{server.url}/v1/sources?munchkinId=987-XYZ-654", headers=h) as r:
        assert (await r.json())["sources"] == []
    async with http.patch(
        f"{server.url}/v1/sources/{sid}", json={"quotaShare": 0.2, "clientSecret": "***"}, headers=h
    ) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["callBudget"] == 10_000
    stored = await server.services.store.get_source(sid)
    assert server.services.sources.config_of(stored).clientSecret == SECRET  # "***" kept the secret
    assert SECRET.encode() not in stored.config  # sealed at rest
    assert SECRET.encode() not in (tmp_path / "data" / "leadstream.db").read_bytes()
    async with http.patch(f"{server.url}/v1/sources/{sid}", json={"munchkinId": "987-XYZ-654"}, headers=h) as r:
        assert r.status == 422 and (await r.json())["field"] == "munchkinId"
    async with http.post(f"{server.url}/v1/sources/{sid}/pause", headers=h) as r:
        assert (await r.json())["state"] == "paused"
    async with http.get(f"{server.url}/v1/sources/{sid}", headers=h) as r:
        assert (await r.json())["state"] == "paused"
    async with http.post(f"{server.url}/v1/sources/{sid}/resume", headers=h) as r:
        assert (await r.json())["state"] != "paused"
    async with http.delete(f"{server.url}/v1/sources/{sid}", headers=h) as r:
        assert r.status == 200 and (await r.json())["state"] == "deleted"
    async with http.get(f"{server.url}/v1/sources/{sid}", headers=h) as r:
        assert r.status == 404 and r.content_type == "application/problem+json"
    async with http.get(f"{server.url}/v1/audit?action=source", headers=h) as r:
        text = await r.text()
    assert "source.create" in text and "source.pause" in text and SECRET not in text


BAD = [
    ({"munchkinId": "123-abc-456"}, "munchkinId", "not a Munchkin ID"),
    ({"activityTypes": [1, "Attend Nonexistent Webinar"]}, "activityTypes[1]", "not the name of an activity type"),
    ({"activityTypes": [99999]}, "activityTypes[0]", "not an activity type"),
    ({"activityTypes": [1, 2**73]}, "activityTypes[1]", "positive 64-bit integer"),  # not a 500 (the fuzzer's find)
    ({"activityTypes": [-5]}, "activityTypes[0]", "positive 64-bit integer"),
    ({"activityTypes": []}, "activityTypes", "at least one"),
    ({"quotaShare": 0}, "quotaShare", "(0, 1]"),
    ({"quotaShare": 1.5}, "quotaShare", "(0, 1]"),
    ({"startAt": "2020-01-01T00:00:00Z"}, "startAt", "outside retention"),
    ({"startAt": "yesterday"}, "startAt", "RFC 3339"),
    ({"restUrl": "ftp://example.com"}, "restUrl", "https"),
    ({"callsPer20s": 0}, "callsPer20s", ">= 1"),
    ({"type": "hubspot"}, "type", "not a source type"),
    ({"clientSecret": ""}, "clientSecret", "length"),
    ({"pollEvery": 5}, "pollEvery", ""),
]


async def test_bad_sources_are_refused_naming_the_field_and_nothing_is_stored(server, http) -> None:
    h = {"Authorization": f"Bearer {ADMIN_KEY}"}
    for fields, field, words in BAD:
        async with http.post(f"{server.url}/v1/sources", json=source(**fields), headers=h) as r:
            problem = await r.json()
            assert r.status == 422 and r.content_type == "application/problem+json", problem
        assert problem["field"] == field and words in problem["detail"], problem
    async with http.post(f"{server.url}/v1/sources", data=b"{not json", headers=h) as r:
        assert r.status == 400  # a body that is not JSON: 400 on every admin route
    assert await server.services.store.list_sources() == []


async def test_plain_http_is_refused_unless_private_endpoints_are_allowed() -> None:
    strict = GuardPolicy.of(False)
    with pytest.raises(Invalid) as refused:
        await parse_new(source(restUrl="http://mkto.example.com"), Catalog(), strict, now_ms=0, retention_ms=1)
    assert refused.value.extra["field"] == "restUrl" and "https" in str(refused.value)
    with pytest.raises(Invalid) as private:
        await parse_new(source(restUrl="https://10.1.2.3"), Catalog(), strict, now_ms=0, retention_ms=1)
    assert private.value.extra["field"] == "restUrl" and "private" in str(private.value)


async def test_the_sources_commands_against_a_live_server(server) -> None:
    from test_cli import cli

    code, out, err = await cli(
        server, "sources", "create", "--name", "cli-made", "--munchkin", MUNCHKIN, "--rest-url", "http://127.0.0.1:9",
        "--client-id", "c1", "--client-secret", SECRET, "--activity-type", "1", "--activity-type", "Visit Webpage",
        "--quota-share", "0.25", "--json",
    )  # fmt: skip
    assert code == 0, err
    created = orjson.loads(out)
    assert created["clientSecret"] == "***" and created["activityTypes"] == [1, "Visit Webpage"]
    assert created["callBudget"] == 12_500 and SECRET not in out
    code, out, _ = await cli(server, "sources", "list")
    assert code == 0 and "cli-made" in out and created["id"] in out
    for verb, state in (("pause", "paused"), ("delete", "deleted")):
        code, out, err = await cli(server, "sources", verb, created["id"], "--json")
        assert code == 0 and orjson.loads(out)["state"] == state, err
    code, out, err = await cli(server, "sources", "show", created["id"])
    assert code != 0 and "no source" in (out + err)


async def test_every_wrong_field_of_a_source_is_named_at_once(server, http) -> None:
    h = {"Authorization": f"Bearer {ADMIN_KEY}"}
    shape = source(name="", callsPer20s=0, pollEvery=5, deletedLeads="yes")
    del shape["clientId"]
    async with http.post(f"{server.url}/v1/sources", json=shape, headers=h) as r:
        problem = await r.json()
    assert r.status == 422, problem
    by_field = {e["field"]: e["detail"] for e in problem["errors"]}
    assert set(by_field) == {"pollEvery", "name", "clientId", "deletedLeads", "callsPer20s"}, problem
    assert by_field["pollEvery"] == "pollEvery: unknown field"
    assert by_field["clientId"] == "clientId: required field is missing"
    assert problem["detail"] == "; ".join(e["detail"] for e in problem["errors"])
    rules = source(munchkinId="123-abc-456", quotaShare=2, restUrl="ftp://x", startAt="yesterday",
                   activityTypes=[1, "No Such Type", 99999])  # fmt: skip
    async with http.post(f"{server.url}/v1/sources", json=rules, headers=h) as r:
        problem = await r.json()
    assert r.status == 422, problem
    fields = [e["field"] for e in problem["errors"]]
    assert fields == ["startAt", "munchkinId", "quotaShare", "activityTypes[1]", "activityTypes[2]", "restUrl"]
    assert problem["field"] == "startAt"
    assert await server.services.store.list_sources() == []


async def test_list_pages_are_chained_by_next_and_a_tenant_key_sees_only_its_own(server, http) -> None:
    h = {"Authorization": f"Bearer {ADMIN_KEY}"}
    created: dict[str, list[str]] = {MUNCHKIN: [], "987-XYZ-654": []}
    for i in range(5):
        munchkin = MUNCHKIN if i % 2 == 0 else "987-XYZ-654"
        async with http.post(
            f"{server.url}/v1/sources", json=source(name=f"s{i}", munchkinId=munchkin), headers=h
        ) as r:
            assert r.status == 201, await r.text()
            created[munchkin].append((await r.json())["id"])
    async with http.post(
        f"{server.url}/v1/keys", json={"munchkinIds": [MUNCHKIN], "scopes": ["read"], "name": "a"}, headers=h
    ) as r:
        assert r.status == 201, await r.text()
        tenant = {"Authorization": f"Bearer {(await r.json())['key']}"}

    async def every_page(headers: dict[str, str]) -> list[str]:
        seen, path = [], "/v1/sources?limit=2"
        while path:
            async with http.get(server.url + path, headers=headers) as r:
                assert r.status == 200, await r.text()
                page = await r.json()
            assert len(page["sources"]) <= 2
            seen += [s["id"] for s in page["sources"]]
            path = page.get("next")
        return seen

    everyone = await every_page(h)
    assert sorted(everyone) == sorted(created[MUNCHKIN] + created["987-XYZ-654"]) and len(set(everyone)) == 5
    assert await every_page(tenant) == created[MUNCHKIN]  # the other tenant's sources neither shown nor paged
