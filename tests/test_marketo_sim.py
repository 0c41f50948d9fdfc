"""The simulated Marketo instance over real HTTP on loopback: shapes, paging, limits, faults, traffic, controls."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest

from leadstream.catalog import Catalog
from leadstream.events import Validator
from leadstream.sim.marketo import Faults, Limits, MarketoInstance, parse_faults, run_marketo
from leadstream.sim.marketo.paging import BadPagingToken, Cursor, decode
from leadstream.testing import wait_until

MUNCHKIN = "123-ABC-456"
SECRET = "sim-secret"
EPOCH = datetime(2026, 11, 28, 15, 0, tzinfo=UTC).timestamp()  # 09:00 in Chicago
UTC_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
Start = Callable[..., Awaitable[MarketoInstance]]


class FakeClock:
    def __init__(self, now: float = EPOCH) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """start(**options) -> a running instance (rate 0 unless given), stopped at the end."""
    running: list[MarketoInstance] = []

    async def starter(**options: Any) -> MarketoInstance:
        options.setdefault("rate", 0)
        options.setdefault("client_secret", SECRET)
        sim = await MarketoInstance(**options).start()
        running.append(sim)
        return sim

    yield starter
    for sim in running:
        await sim.stop()


async def token_of(session: aiohttp.ClientSession, sim: MarketoInstance) -> str:
    params = {"grant_type": "client_credentials", "client_id": sim.client_id, "client_secret": sim.client_secret}
    async with session.get(f"{sim.url}/identity/oauth/token", params=params) as response:
        assert response.status == 200
        token: str = (await response.json())["access_token"]
        return token


async def rest(
    session: aiohttp.ClientSession, sim: MarketoInstance, path: str, params: Any = (), token: str | None = None
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.get(f"{sim.url}/rest/v1/{path}", params=params, headers=headers) as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body


async def since_token(session: aiohttp.ClientSession, sim: MarketoInstance, token: str) -> str:
    body = await rest(session, sim, "activities/pagingtoken.json", {"sinceDatetime": "2020-01-01"}, token)
    page_token: str = body["nextPageToken"]
    return page_token


def error_code(body: dict[str, Any]) -> str:
    assert body["success"] is False and len(body["errors"]) == 1, body
    code: str = body["errors"][0]["code"]
    return code


async def read_all(
    session: aiohttp.ClientSession,
    sim: MarketoInstance,
    token: str,
    since: str,
    path: str = "activities.json",
    **params: Any,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every record from ``since`` by paging while moreResult; also each page's envelope (without result)."""
    body = await rest(session, sim, "activities/pagingtoken.json", {"sinceDatetime": since}, token)
    page_token = body["nextPageToken"]
    records, pages = [], []
    while True:
        body = await rest(session, sim, path, {"nextPageToken": page_token, **params}, token)
        assert body["success"] is True and isinstance(body["nextPageToken"], str)
        records.extend(body.get("result", []))
        pages.append({k: v for k, v in body.items() if k != "result"} | {"size": len(body.get("result", []))})
        page_token = body["nextPageToken"]
        if not body["moreResult"]:
            return records, pages


# -- identity --------------------------------------------------------------------------------------
async def test_identity_issues_one_token_while_it_is_valid_and_refuses_bad_credentials(start: Start, session):
    clock = FakeClock()
    sim = await start(clock=clock, token_ttl=3600)
    params = {"grant_type": "client_credentials", "client_id": sim.client_id, "client_secret": SECRET}
    async with session.get(f"{sim.url}/identity/oauth/token", params=params) as response:
        first = await response.json()
    assert re.fullmatch(r"[0-9a-f-]{36}:sim", first["access_token"])
    assert first["token_type"] == "bearer" and first["expires_in"] == 3599 and "@" in first["scope"]
    clock.now += 100
    async with session.post(f"{sim.url}/identity/oauth/token", data=params) as response:  # POST works too
        again = await response.json()
    assert again["access_token"] == first["access_token"] and again["expires_in"] == 3500
    clock.now += 3600
    async with session.get(f"{sim.url}/identity/oauth/token", params=params) as response:
        renewed = await response.json()
    assert renewed["access_token"] != first["access_token"]

    async with session.get(f"{sim.url}/identity/oauth/token", params=params | {"client_secret": "wrong"}) as response:
        assert response.status == 401 and (await response.json())["error"] == "invalid_client"
    async with session.get(f"{sim.url}/identity/oauth/token", params=params | {"grant_type": "password"}) as response:
        assert response.status == 400
    assert sim.stats.outcomes("identity") == Counter({"ok": 3, "http401": 1, "http400": 1})


async def test_rest_calls_need_a_valid_bearer_token(start: Start, session):
    clock = FakeClock()
    sim = await start(clock=clock, token_ttl=10)
    token = await token_of(session, sim)
    assert (await rest(session, sim, "activities/types.json", token=token))["success"] is True
    assert error_code(await rest(session, sim, "activities/types.json")) == "601"  # no token
    assert error_code(await rest(session, sim, "activities/types.json", token="nope:sim")) == "601"
    # the access_token query parameter is no longer accepted (removed 2026-08-31)
    assert error_code(await rest(session, sim, "activities/types.json", {"access_token": token})) == "601"
    assert sim.stats.token_in_query == 1
    clock.now += 10
    assert error_code(await rest(session, sim, "activities/types.json", token=token)) == "602"
    sim.revoke_tokens()
    assert error_code(await rest(session, sim, "activities/types.json", token=token)) == "601"
    assert sim.limits.quota_used == 1  # 601 and 602 are not counted


# -- activity types ---------------------------------------------------------------------------------
async def test_activity_types_lists_the_standard_catalog_and_custom_types(start: Start, session):
    custom = {
        "id": 100001,
        "name": "Watched Demo Video",
        "primaryAttribute": {"name": "Video", "dataType": "string"},
        "attributes": [{"name": "Seconds Watched", "dataType": "integer"}],
    }
    sim = await start(custom_types=[custom])
    body = await rest(session, sim, "activities/types.json", token=await token_of(session, sim))
    result = {t["id"]: t for t in body["result"]}
    assert set(result) == set(Catalog().activity_types) | {100001}
    assert result[100001]["attributes"] == [{"name": "Seconds Watched", "dataType": "integer"}]
    assert result[1]["name"] == "Visit Webpage"
    assert result[1]["primaryAttribute"] == {"name": "Webpage ID", "dataType": "integer"}
    assert re.fullmatch(r"[0-9a-f]+#[0-9a-f]+", body["requestId"])
    with pytest.raises(ValueError, match="ids >= 100000"):
        MarketoInstance(custom_types=[custom | {"id": 99}])


# -- paging ------------------------------------------------------------------------------------------
async def test_paging_reads_every_activity_once_with_short_pages_while_more_result(start: Start, session):
    sim = await start(short_page_rate=0.5, seed=3)
    type_ids = [1, 6, 7, 10, 12, 13, 22, 24, 46, 110]
    sim.inject(3000, [*type_ids, 2, 3, 37])
    token = await token_of(session, sim)
    wanted = ",".join(map(str, type_ids))
    records, pages = await read_all(session, sim, token, "2020-01-01T00:00:00Z", activityTypeIds=wanted)

    expected = sim.truth(type_ids)
    assert [r["marketoGUID"] for r in records] == [r["marketoGUID"] for r in expected]  # all, once, in id order
    assert all(p["size"] <= 300 for p in pages)
    short_while_more = [p for p in pages if p["moreResult"] and p["size"] < 300]
    assert short_while_more, pages  # the client must page on through short pages
    assert not pages[-1]["moreResult"]

    # the last token is the cursor: later activities, and only those, are read from it
    cursor = pages[-1]["nextPageToken"]
    later = sim.inject(40, [10])
    body = await rest(session, sim, "activities.json", {"nextPageToken": cursor, "activityTypeIds": "10"}, token)
    assert [r["marketoGUID"] for r in body["result"]] == [r["marketoGUID"] for r in later]


async def test_paging_token_starts_at_its_date(start: Start, session):
    clock = FakeClock()
    sim = await start(clock=clock)
    before = sim.inject(5, [10])
    clock.now += 60
    after = sim.inject(5, [10])
    token = await token_of(session, sim)
    since = datetime.fromtimestamp(clock.now, UTC).isoformat()  # with an offset, +00:00
    records, _ = await read_all(session, sim, token, since, activityTypeIds="10")
    assert [r["id"] for r in records] == [r["id"] for r in after]
    assert before[-1]["id"] < records[0]["id"]


async def test_a_paging_token_is_the_position_itself():
    cursor = Cursor(int(EPOCH), 400_000_123)
    token = cursor.encode()
    assert re.fullmatch(r"[A-Z2-7]+", token)  # base32, as Marketo's tokens
    assert decode(token) == cursor and decode(token.lower()) == cursor
    with pytest.raises(BadPagingToken):
        decode("not-a-token")


async def test_type_ids_comma_separated_or_repeated_and_at_most_ten(start: Start, session):
    sim = await start()
    sim.inject(200, [1, 2, 3, 6, 7])
    token = await token_of(session, sim)
    since = await since_token(session, sim, token)
    comma = await rest(session, sim, "activities.json", {"nextPageToken": since, "activityTypeIds": "1,2"}, token)
    repeated = await rest(
        session,
        sim,
        "activities.json",
        [("nextPageToken", since), ("activityTypeIds", "1"), ("activityTypeIds", "2")],
        token,
    )
    assert comma["result"] == repeated["result"] and {r["activityTypeId"] for r in comma["result"]} == {1, 2}

    eleven = ",".join(str(t) for t in [1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13])
    body = await rest(session, sim, "activities.json", {"nextPageToken": since, "activityTypeIds": eleven}, token)
    assert error_code(body) == "1003" and "at most 10" in body["errors"][0]["message"]
    cases = [
        ({"nextPageToken": since}, "701"),
        ({"activityTypeIds": "1"}, "701"),
        ({"nextPageToken": "garbage", "activityTypeIds": "1"}, "1003"),
        ({"nextPageToken": since, "activityTypeIds": "1", "batchSize": "301"}, "1003"),
        ({"nextPageToken": since, "activityTypeIds": "99999"}, "1003"),
        ({"nextPageToken": since, "activityTypeIds": "x"}, "1003"),
    ]
    for params, code in cases:
        assert error_code(await rest(session, sim, "activities.json", params, token)) == code, params
    bad_date = await rest(session, sim, "activities/pagingtoken.json", {"sinceDatetime": "yesterday"}, token)
    assert error_code(bad_date) == "704"
    params = {"nextPageToken": since, "activityTypeIds": "1,2,3", "batchSize": "7"}
    small = await rest(session, sim, "activities.json", params, token)
    assert 1 <= len(small["result"]) <= 7 and small["moreResult"] is True


async def test_deleted_leads_come_only_from_get_deleted_leads(start: Start, session):
    sim = await start()
    sim.inject(300, [10, 37, 13])
    token = await token_of(session, sim)
    deleted, _ = await read_all(session, sim, token, "2020-01-01T00:00:00Z", "activities/deletedleads.json")
    assert [r["id"] for r in deleted] == [r["id"] for r in sim.truth([37])] and len(deleted) == 100
    assert {r["primaryAttributeValueId"] for r in deleted} == {r["leadId"] for r in deleted}
    others, _ = await read_all(session, sim, token, "2020-01-01T00:00:00Z", activityTypeIds="10,37,13")
    assert {r["activityTypeId"] for r in others} == {10, 13}


# -- records -------------------------------------------------------------------------------------------
async def test_records_have_the_documented_shape_and_pass_the_ingest_validator(start: Start, session):
    sim = await start(seed=5)
    catalog = Catalog()
    sim.inject(len(catalog.activity_types) * 4, sorted(catalog.activity_types))
    validator = Validator(catalog)
    records = sim.truth()
    for record in records:
        assert {"id", "marketoGUID", "leadId", "activityDate", "activityTypeId", "attributes"} <= record.keys()
        assert UTC_Z.match(record["activityDate"])
        assert all(a["value"] not in ("", None, []) for a in record["attributes"])  # empty attributes are omitted
        validator.event("activity", orjson.dumps({"munchkinId": MUNCHKIN, **record}))  # raises on a rejection
    assert len({r["marketoGUID"] for r in records}) == len(records)
    emails = [r for r in records if r["activityTypeId"] in (6, 7, 10, 11)]
    assert emails and all("campaignId" in r and r["primaryAttributeValue"] for r in emails)


async def test_traffic_keeps_lead_ids_consistent():
    clock = FakeClock()
    sim = MarketoInstance(rate=200, seed=11, clock=clock, client_secret=SECRET)
    initial = {lead.id for lead in sim.factory.tenant.leads}
    clock.now += 60
    records = sim.truth()
    assert len(records) == 200 * 60
    created: set[int] = set()
    gone: set[int] = set()
    for record in records:
        lead, kind = record["leadId"], record["activityTypeId"]
        assert lead not in gone, f"activity {record['id']} of lead {lead} after its deletion"
        if kind == 12:
            assert lead not in initial | created
            created.add(lead)
        else:
            assert lead in initial | created, f"activity {record['id']} of lead {lead} before its New Lead"
        attributes = {a["name"]: a["value"] for a in record["attributes"]}
        if kind == 13:
            assert {"New Value", "Old Value", "Reason", "Source"} <= attributes.keys()
            assert attributes["New Value"] != attributes["Old Value"]
            assert record["primaryAttributeValue"] in {
                "Email Address",
                "Job Title",
                "Phone Number",
                "Company Name",
                "City",
                "Lead Score",
                "Lead Status",
            }
        if kind == 37:
            gone.add(lead)
        if kind == 32:
            gone.update(attributes["Merge IDs"])
    assert created and gone
    assert {r["activityTypeId"] for r in records} >= {1, 6, 7, 10, 12, 13, 37}


async def test_traffic_follows_the_rate_and_the_seed():
    def instance(seed: int) -> tuple[MarketoInstance, FakeClock]:
        clock = FakeClock()
        sim = MarketoInstance(rate=20, seed=seed, clock=clock, activity_type_ids=[1, 10, 13], client_secret=SECRET)
        return sim, clock

    (a, clock_a), (b, clock_b), (c, clock_c) = instance(1), instance(1), instance(2)
    for clock in (clock_a, clock_b, clock_c):
        clock.now += 30
    records = a.truth()
    assert len(records) == 600 and {r["activityTypeId"] for r in records} == {1, 10, 13}
    dates = [datetime.fromisoformat(r["activityDate"]).timestamp() for r in records]
    assert dates == sorted(dates) and dates[0] >= EPOCH and dates[-1] <= EPOCH + 30
    assert b.truth() == records
    assert c.truth() != records


# -- limits ------------------------------------------------------------------------------------------
async def test_rate_window_answers_606_and_opens_again_after_the_window(start: Start, session):
    clock = FakeClock()
    sim = await start(clock=clock, limits=Limits(calls_per_window=5, window_seconds=20))
    token = await token_of(session, sim)
    for _ in range(5):
        assert (await rest(session, sim, "activities/types.json", token=token))["success"]
    clock.now += 19.9
    refused = await rest(session, sim, "activities/types.json", token=token)
    assert error_code(refused) == "606"
    assert refused["errors"][0]["message"] == "Max rate limit '5' exceeded with in '20' secs"
    clock.now += 0.2
    assert (await rest(session, sim, "activities/types.json", token=token))["success"]
    assert sim.stats.max_in_window == 5 and sim.stats.outcomes("types") == Counter({"ok": 6, "606": 1})


async def test_daily_quota_answers_607_until_midnight_in_chicago(start: Start, session):
    clock = FakeClock(datetime(2026, 11, 29, 5, 59, 0, tzinfo=UTC).timestamp())  # 23:59 in Chicago (CST)
    sim = await start(clock=clock, limits=Limits(daily_quota=3))
    token = await token_of(session, sim)
    for _ in range(3):
        assert (await rest(session, sim, "activities/types.json", token=token))["success"]
    assert error_code(await rest(session, sim, "activities/types.json", token=token)) == "607"
    clock.now += 59  # 23:59:59
    assert error_code(await rest(session, sim, "activities/types.json", token=token)) == "607"
    clock.now += 1  # 00:00 America/Chicago
    assert (await rest(session, sim, "activities/types.json", token=token))["success"]
    for _ in range(2):
        await rest(session, sim, "activities/types.json", token=token)
    assert error_code(await rest(session, sim, "activities/types.json", token=token)) == "607"
    async with session.post(f"{sim.url}/_sim/reset-day") as response:  # the tests' reset, any time
        assert (await response.json())["quotaUsed"] == 0
    assert (await rest(session, sim, "activities/types.json", token=token))["success"]


async def test_concurrent_calls_over_the_limit_get_615(start: Start, session):
    sim = await start(limits=Limits(max_concurrent=2), latency=0.5)
    token = await token_of(session, sim)
    answers = await asyncio.gather(*(rest(session, sim, "activities/types.json", token=token) for _ in range(5)))
    codes = Counter("ok" if a["success"] else error_code(a) for a in answers)
    assert codes == Counter({"ok": 2, "615": 3})
    assert sim.stats.max_in_flight == 2 and sim.limits.quota_used == 2  # refused calls are not counted


async def test_calls_failing_with_the_uncounted_codes_are_not_counted(start: Start, session):
    sim = await start()
    token = await token_of(session, sim)
    sim.faults.queue("601", "602", "604", "608", "611")
    for code in ("601", "602", "604", "608", "611"):
        assert error_code(await rest(session, sim, "activities/types.json", token=token)) == code
    assert sim.limits.quota_used == 0 and sim.stats.counted == 0
    sim.faults.queue("713")
    assert error_code(await rest(session, sim, "activities/types.json", token=token)) == "713"
    assert sim.limits.quota_used == 1  # 713 is counted
    headers = {"Authorization": f"Bearer {token}"}
    async with session.post(f"{sim.url}/rest/v1/activities/types.json", headers=headers) as response:
        assert error_code(await response.json()) == "605"  # POST without _method=GET
    assert sim.limits.quota_used == 1


# -- faults ------------------------------------------------------------------------------------------
async def test_injected_5xx_and_timeout(start: Start, session):
    sim = await start(hang_seconds=1.0)
    token = await token_of(session, sim)
    sim.faults.queue("5xx", "timeout")
    headers = {"Authorization": f"Bearer {token}"}
    async with session.get(f"{sim.url}/rest/v1/activities/types.json", headers=headers) as response:
        assert response.status == 503 and response.content_type == "text/html"
    with pytest.raises(asyncio.TimeoutError):
        async with session.get(
            f"{sim.url}/rest/v1/activities/types.json", headers=headers, timeout=aiohttp.ClientTimeout(total=0.2)
        ):
            pass
    assert sim.limits.in_flight == 1  # the hanging call holds its slot after the client gave up
    await wait_until(lambda: sim.stats.outcomes("types")["timeout"] == 1, timeout=5, what="the hang to end")
    assert sim.limits.in_flight == 0


async def test_faults_at_a_rate_follow_the_seed():
    def draws(seed: int) -> list[str | None]:
        faults = Faults(parse_faults("606,611,5xx,timeout"), 0.3, seed)
        return [faults.draw() for _ in range(200)]

    assert draws(4) == draws(4) != draws(5)
    drawn = Counter(draws(4))
    assert 30 < sum(n for kind, n in drawn.items() if kind) < 90
    assert set(drawn) == {None, "606", "611", "5xx", "timeout"}
    with pytest.raises(ValueError, match="'999' is not a fault"):
        parse_faults("606,999")


async def test_long_uris_get_414_and_the_same_call_as_post_works(start: Start, session):
    sim = await start(max_uri_length=200)
    sim.inject(50, [1, 2])
    token = await token_of(session, sim)
    since = await since_token(session, sim, token)
    params = {"nextPageToken": since, "activityTypeIds": ",".join(["1", "2"] * 40)}
    headers = {"Authorization": f"Bearer {token}"}
    async with session.get(f"{sim.url}/rest/v1/activities.json", params=params, headers=headers) as response:
        assert response.status == 414
    form = {"_method": "GET", **params}
    async with session.post(f"{sim.url}/rest/v1/activities.json", data=form, headers=headers) as response:
        body = await response.json()
    assert body["success"] and len(body["result"]) == 50
    assert sim.stats.outcomes("activities") == Counter({"http414": 1, "ok": 1}) and sim.limits.quota_used == 2


# -- controls -----------------------------------------------------------------------------------------
async def test_sim_routes_report_and_steer(start: Start, session):
    sim = await start(limits=Limits(calls_per_window=50))
    token = await token_of(session, sim)
    async with session.post(f"{sim.url}/_sim/inject", json={"count": 30, "typeIds": [1, 10]}) as response:
        assert (await response.json())["injected"] == 30
    async with session.post(f"{sim.url}/_sim/inject", json={"count": 3, "typeIds": [424242]}) as response:
        assert response.status == 422 and "424242" in (await response.json())["error"]
    async with session.post(f"{sim.url}/_sim/faults", json={"queue": ["611"]}) as response:
        assert response.status == 200
    assert error_code(await rest(session, sim, "activities/types.json", token=token)) == "611"
    async with session.post(f"{sim.url}/_sim/expire-tokens") as response:
        assert response.status == 200
    assert error_code(await rest(session, sim, "activities/types.json", token=token)) == "602"
    async with session.get(f"{sim.url}/_sim/stats") as response:
        stats = await response.json()
    assert stats["calls"]["types"] == {"611": 1, "602": 1} and stats["calls"]["identity"] == {"ok": 1}
    assert stats["activities"] == 30 and stats["limits"]["callsPerWindow"] == 50 and stats["quotaUsed"] == 0


async def test_run_marketo_serves_until_stopped_and_prints_the_credentials():
    lines: list[str] = []
    stop = asyncio.Event()
    running = run_marketo(port=0, rate=5, client_secret="printed-secret", echo=lines.append, stop=stop)
    task = asyncio.create_task(running)
    await wait_until(lambda: len(lines) >= 4, timeout=5, what="run_marketo to print where it listens")
    url = re.search(r"http://127\.0\.0\.1:\d+", lines[0])
    assert url and any("printed-secret" in line for line in lines) and any("leadstream-sim" in line for line in lines)
    async with aiohttp.ClientSession() as s:
        params = {"grant_type": "client_credentials", "client_id": "leadstream-sim", "client_secret": "printed-secret"}
        async with s.get(f"{url.group(0)}/identity/oauth/token", params=params) as response:
            assert response.status == 200
    stop.set()
    await asyncio.wait_for(task, 5)
    with pytest.raises(ValueError, match="loopback only"):
        await run_marketo(host="0.0.0.0", port=0)
    with pytest.raises(ValueError, match="not a Munchkin ID"):
        await run_marketo(port=0, munchkin="acme")
