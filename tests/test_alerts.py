"""Operator alerts (SPEC §11): /v1/alerts, the CloudEvents an operator endpoint receives — signed,
once per transition, retried with backoff, kept across a restart."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator

import orjson
from aiohttp import web
from standardwebhooks import Webhook

from helpers import MUNCHKIN, activity, publish, running_server, wait_until
from test_delivery_support import Received, bench, receiver

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PAUSED = "com.leadstream.subscription.paused"
REACTIVATED = "com.leadstream.subscription.reactivated"
EXPIRING = "com.leadstream.subscription.expiring"
LAGGING = "com.leadstream.subscription.lagging"
FAST_ALERTS = {"alert_retry_interval": 0.1, "alert_poll_interval": 0.05, "alert_lag_check_interval": 0.05}
FAST_SUB = {"pushIntervalMs": 20, "retryAttempts": 1, "retryIntervalMs": 50, "probeIntervalMs": 100, "timeoutMs": 2000}


def verified(seen: Received, secret: str = SECRET) -> dict:
    """The CloudEvent, once its Standard Webhooks signature checks out (raises otherwise)."""
    Webhook(secret).verify(seen.body, seen.headers)
    return orjson.loads(seen.body)


def types(r) -> list[str]:
    return [orjson.loads(x.body)["type"] for x in r.requests]


class Switch:
    """An endpoint answer that fails while ``down``."""

    def __init__(self, status: int = 500) -> None:
        self.down, self.status = True, status

    def __call__(self, seen: Received) -> web.Response | None:
        return web.Response(status=self.status, text="endpoint down") if self.down else None


async def test_an_endpoint_gets_paused_once_and_reactivated_once_with_valid_signatures(tmp_path, http):
    subscriber = Switch()
    async with (
        running_server(data_dir=tmp_path, **FAST_ALERTS) as server,
        receiver() as ops,
        receiver(answer=subscriber) as endpoint,
    ):
        async with http.post(
            f"{server.url}/v1/alerts", headers=server.headers,
            json={"endpoint": ops.url, "events": [PAUSED, REACTIVATED], "signing": {"hmacSecret": SECRET}},
        ) as r:  # fmt: skip
            assert r.status == 201
            alert = await r.json()
        assert alert["signing"] == {"hmacSecret": "***"} and alert["events"] == sorted([PAUSED, REACTIVATED])

        document = {"name": "crm", "munchkinId": MUNCHKIN, "stream": "activity", "endpoint": endpoint.url, **FAST_SUB}
        async with http.post(f"{server.url}/v1/subscriptions", headers=server.headers, json=document) as r:
            sub = await r.json()
        await publish(http, server, "activity", [activity(i) for i in range(3)])
        await wait_until(lambda: len(ops.requests) == 1, what="the paused alert")
        await wait_until(lambda: len(endpoint.requests) >= 5, what="probes while paused")  # failures go on…
        subscriber.down = False
        await wait_until(lambda: len(ops.requests) == 2, what="the reactivated alert")
        await wait_until(lambda: endpoint.delivered, what="the backlog delivered")
        await publish(http, server, "activity", [activity(i) for i in range(3, 6)])  # more successes…
        await wait_until(lambda: len(endpoint.delivered) >= 2, what="the next batch")

        assert types(ops) == [PAUSED, REACTIVATED]  # …and still one alert each
        paused, reactivated = (verified(seen) for seen in ops.requests)
        assert paused["specversion"] == "1.0" and paused["subject"] == sub["id"]
        assert paused["data"]["subscriptionId"] == sub["id"] and paused["data"]["name"] == "crm"
        assert paused["data"]["pausedReason"] == "failures" and "HTTP 500" in paused["data"]["lastError"]
        assert reactivated["data"]["state"] == "active" and reactivated["id"] != paused["id"]
        assert ops.requests[0].headers["webhook-id"] == paused["id"]
        assert ops.requests[0].headers["content-type"].startswith("application/cloudevents+json")

        async with http.get(f"{server.url}/v1/alerts/recent", headers=server.headers) as r:
            recent = (await r.json())["alerts"]
        assert [a["type"] for a in recent] == [REACTIVATED, PAUSED]
        assert recent[0]["deliveries"] == [
            {"alert": alert["id"], "state": "sent", "attempts": 1, "lastError": None, "nextAttemptAt": None}
        ]


async def test_a_failing_alert_endpoint_gets_the_same_alert_again_with_backoff(tmp_path, http):
    answers = iter([500, 503, 200])

    def flaky(seen: Received) -> web.Response:
        return web.Response(status=next(answers, 200), text="ops hook")

    async with running_server(data_dir=tmp_path, **FAST_ALERTS) as server, receiver(answer=flaky) as ops:
        async with http.post(f"{server.url}/v1/alerts", headers=server.headers, json={"endpoint": ops.url}) as r:
            secret = (await r.json())["signing"]["hmacSecret"]  # generated, shown this once
        assert secret.startswith("whsec_")
        server.services.alert_dispatcher.raise_alert(PAUSED, "sub-1", {"subscriptionId": "sub-1"})
        await wait_until(lambda: any(x.ok for x in ops.requests), what="the alert, at last")

        assert [x.status for x in ops.requests] == [500, 503, 200]
        assert len({x.headers["webhook-id"] for x in ops.requests}) == 1  # one alert, sent three times
        assert all(verified(x, secret)["subject"] == "sub-1" for x in ops.requests)
        first, second = (b - a for a, b in itertools.pairwise(x.at for x in ops.requests))
        assert first >= 0.09 and second >= 0.19  # retry_interval, then twice that
        async with http.get(f"{server.url}/v1/alerts", headers=server.headers) as r:
            assert (await r.json())["alerts"][0]["signing"] == {"hmacSecret": "***"}
        [shown] = await server.services.alerts.recent(10)
        assert shown["deliveries"][0]["state"] == "sent" and shown["deliveries"][0]["attempts"] == 3


async def test_an_alert_is_given_up_after_its_attempts(tmp_path):
    async with (
        bench(tmp_path, alert_retry_attempts=2, **FAST_ALERTS) as b,
        receiver(answer=lambda seen: web.Response(status=500)) as ops,
    ):
        await b.runtime.alerts.create({"endpoint": ops.url})
        b.runtime.alert_dispatcher.raise_alert(PAUSED, "sub-1", {})

        async def given_up() -> dict | None:
            [shown] = await b.runtime.alerts.recent(10) or [None]
            return shown if shown and shown["deliveries"][0]["state"] == "failed" else None

        shown = await wait_until(given_up, what="the alert given up")
        assert shown["deliveries"][0]["attempts"] == 2 and "HTTP 500" in shown["deliveries"][0]["lastError"]
        assert len(ops.requests) == 2


async def test_bad_alert_registrations_are_refused_naming_the_field_and_nothing_is_stored(tmp_path, http):
    async with running_server(data_dir=tmp_path) as server:
        cases = [
            ({"endpoint": "ftp://ops.example.com/hook"}, "endpoint"),
            ({"events": ["*"]}, "endpoint"),
            ({"endpoint": "https://ops.example.com/hook", "events": ["subscription.nope"]}, "events[0]"),
            ({"endpoint": "https://ops.example.com/hook", "events": []}, "events"),
            ({"endpoint": "https://ops.example.com/hook", "signing": {"hmacSecret": "s3cret"}}, "signing.hmacSecret"),
            ({"endpoint": "https://ops.example.com/hook", "signing": {}}, "signing"),
            ({"endpoint": "https://ops.example.com/hook", "colour": "red"}, "colour"),
        ]
        for body, field in cases:
            async with http.post(f"{server.url}/v1/alerts", headers=server.headers, json=body) as r:
                problem = await r.json()
                assert r.status == 422, (body, problem)
                assert problem["field"] == field and field in problem["detail"], (body, problem)
        async with http.post(f"{server.url}/v1/alerts", headers=server.headers, data=b"[1, 2") as r:
            assert r.status == 400 and "not valid JSON" in (await r.json())["detail"]

        _, tenant_key = await server.services.api_keys.create(
            [MUNCHKIN], ["subscriptions", "read"], created_by="operator"
        )
        tenant = {"Authorization": f"Bearer {tenant_key}"}
        async with http.post(f"{server.url}/v1/alerts", headers=tenant, json={"endpoint": "https://o.example"}) as r:
            assert r.status == 403
        async with http.get(f"{server.url}/v1/alerts", headers=tenant) as r:
            assert r.status == 403
        async with http.get(f"{server.url}/v1/alerts", headers=server.headers) as r:
            assert (await r.json()) == {"alerts": []}
        async with http.delete(f"{server.url}/v1/alerts/alr_nope", headers=server.headers) as r:
            assert r.status == 404

        async with http.post(
            f"{server.url}/v1/alerts",
            headers=server.headers,
            json={"endpoint": "https://o.example", "signing": {"hmacSecret": SECRET}},
        ) as r:
            created = await r.json()
        async with http.delete(f"{server.url}/v1/alerts/{created['id']}", headers=server.headers) as r:
            assert r.status == 200 and (await r.json())["signing"] == {"hmacSecret": "***"}
        async with http.get(f"{server.url}/v1/audit?action=alert", headers=server.headers) as r:
            entries = (await r.json())["entries"]
        assert [e["action"] for e in entries] == ["alert.delete", "alert.create"]
        assert SECRET not in orjson.dumps(entries).decode()
        assert await server.services.store.alerts() == []


async def test_a_pending_alert_survives_a_restart_and_is_sent_after_it(tmp_path):
    ops_switch = Switch(status=503)
    subscriber = Switch()
    async with (
        bench(tmp_path, **FAST_ALERTS) as b,
        receiver(answer=ops_switch) as ops,
        receiver(answer=subscriber) as endpoint,
    ):
        await b.runtime.alerts.create({"endpoint": ops.url, "signing": {"hmacSecret": SECRET}})
        assert SECRET.encode() not in b"".join(record for _, record in await b.store.alerts())  # sealed
        sub = await b.subscribe(endpoint.url, retryAttempts=0)
        await b.publish("activity", [activity(1)])
        await wait_until(lambda: ops.requests, what="a first try of the paused alert")

        await b.restart()  # the alert is still pending: its endpoint has not taken it
        ops_switch.down = False
        await wait_until(lambda: any(x.ok for x in ops.requests), what="the alert, after the restart")
        assert len({x.headers["webhook-id"] for x in ops.requests}) == 1
        assert types(ops) == [PAUSED] * len(ops.requests)  # the restart raised nothing new
        assert verified(ops.requests[-1])["data"]["subscriptionId"] == sub["id"]


async def test_lagging_and_expiring_are_told_once_each(tmp_path):
    subscriber = Switch()
    async with (
        bench(tmp_path, alert_lag_threshold=0.3, retention=0.5, purge_interval=0.1, **FAST_ALERTS) as b,
        receiver() as ops,
        receiver(answer=subscriber) as endpoint,
    ):
        await b.runtime.alerts.create(
            {"endpoint": ops.url, "events": [LAGGING, EXPIRING], "signing": {"hmacSecret": SECRET}}
        )
        sub = await b.subscribe(endpoint.url, retryAttempts=0, probeIntervalMs=50)
        await b.publish("activity", [activity(0)])  # the batch in flight: kept (it will be delivered)
        await b.wait_status(sub["id"], "paused", state="paused")
        await b.publish("activity", [activity(i) for i in range(1, 4)])  # behind it: these expire
        await wait_until(lambda: len(ops.requests) == 2, what="lagging and expiring")
        await b.wait_status(sub["id"], "the events behind the batch expired", expired=3)
        await b.publish("activity", [activity(i) for i in range(4, 7)])  # more is lost…
        await b.wait_status(sub["id"], "the later events expired too", expired=6)
        assert sorted(types(ops)) == sorted([LAGGING, EXPIRING])  # …but each was told once
        by_type = {e["type"]: e for e in (verified(x) for x in ops.requests)}
        assert by_type[LAGGING]["data"]["lagSeconds"] >= 0.3 and by_type[LAGGING]["data"]["thresholdSeconds"] == 0.3
        assert by_type[EXPIRING]["data"]["newlyExpired"] >= 1 and by_type[EXPIRING]["subject"] == sub["id"]


async def test_a_source_with_refused_credentials_is_told_failing_once_then_recovered(tmp_path, http):
    from test_source_marketo import FAST as FAST_SOURCES
    from test_source_marketo import H, create, instance, source_body, status

    async with (
        instance() as sim,
        running_server(data_dir=tmp_path, **FAST_SOURCES, **FAST_ALERTS) as server,
        receiver() as ops,
    ):
        await server.services.alerts.create({"endpoint": ops.url, "signing": {"hmacSecret": SECRET}})
        source = await create(http, server.url, source_body(sim, clientSecret="not-the-secret", activityTypes=[1]))
        sim.inject(5, [1])
        await wait_until(lambda: ops.requests, what="the failing alert")

        def failed_again() -> bool:
            return (server.services.source_runner.live(source["id"]) or {}).get("failures", 0) >= 3

        await wait_until(failed_again, what="more refused tries")  # still one alert (checked below)
        async with http.patch(
            f"{server.url}/v1/sources/{source['id']}", json={"clientSecret": sim.client_secret}, headers=H
        ) as r:
            assert r.status == 200
        await wait_until(lambda: len(ops.requests) >= 2, what="the recovered alert")
        assert (await status(http, server.url, source["id"]))["state"] == "running"

        assert types(ops) == ["com.leadstream.source.failing", "com.leadstream.source.recovered"]
        failing, recovered = (verified(x) for x in ops.requests)
        assert failing["subject"] == source["id"] and failing["data"]["munchkinId"] == source["munchkinId"]
        assert "identity refused" in failing["data"]["lastError"] and sim.client_secret not in str(failing)
        assert recovered["data"]["state"] == "running" and recovered["data"]["lastError"] is None


@contextlib.asynccontextmanager
async def two_nodes(pg_url: str, ops_url: str) -> AsyncIterator[list]:
    """Two nodes' alert dispatchers (without delivery) on one PostgreSQL database, one alert endpoint."""
    import aiohttp

    from leadstream.alerts.dispatch import AlertDispatcher, DispatchOptions
    from leadstream.alerts.service import Alerts
    from leadstream.security.guard import GuardPolicy
    from leadstream.security.secretbox import SecretBox, new_master_key
    from leadstream.store import open_store

    box, policy = SecretBox([new_master_key()]), GuardPolicy(allow_private=True)
    options = DispatchOptions(poll_interval=0.02, retry_interval=0.05, lag_check_interval=0.05)
    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())
        nodes = []
        for n in (1, 2):
            store = await stack.enter_async_context(open_store(pg_url, node_id=f"node-{n}"))
            nodes.append(AlertDispatcher(store, Alerts(store, box, policy), session, options))
        await nodes[0].alerts.create({"endpoint": ops_url, "signing": {"hmacSecret": SECRET}})
        for node in nodes:
            await node.start()
            stack.push_async_callback(node.stop)
        yield nodes


async def all_sent(store, count: int) -> bool:
    rows = await store.alert_messages(100)
    return len(rows) == count and all(row.state == "sent" for row in rows)


async def test_two_nodes_on_one_database_send_each_alert_once(pg_url):
    async with receiver() as ops, two_nodes(pg_url, ops.url) as nodes:
        for n in range(40):  # raised on both nodes (each by the node that saw it)
            nodes[n % 2].raise_alert(PAUSED, f"sub-{n}", {"n": n})
        await wait_until(lambda: all_sent(nodes[0].store, 40), what="40 alerts sent")
        subjects = [verified(x)["subject"] for x in ops.requests]
        assert sorted(subjects) == sorted(f"sub-{n}" for n in range(40))  # each once, from one node or the other


async def test_a_mark_set_on_one_node_keeps_another_from_telling_it_again(pg_url):
    from leadstream.delivery.engine import Expiry

    async with receiver() as ops, two_nodes(pg_url, ops.url) as (first, second):
        first.on_expired(Expiry("sub-1", MUNCHKIN, newly=3, total=3))
        await wait_until(lambda: "expiring" in second.flags.get("sub-1", ()), what="the mark, seen by the other node")
        second.on_expired(Expiry("sub-1", MUNCHKIN, newly=2, total=5))  # the lease moved: still expiring
        second.on_expired(Expiry("sub-2", MUNCHKIN, newly=1, total=1))  # another one starts expiring
        await wait_until(lambda: all_sent(first.store, 2), what="two alerts sent")
        assert sorted(verified(x)["subject"] for x in ops.requests) == ["sub-1", "sub-2"]


async def test_rotating_the_master_key_reseals_alert_secrets(tmp_path):
    from leadstream.alerts import model
    from leadstream.security.secretbox import SecretBox, new_master_key, rotate_master
    from leadstream.store import open_store

    old, new = new_master_key(), new_master_key()
    async with open_store(str(tmp_path)) as store:
        alert, _ = model.parse_new({"endpoint": "https://ops.example.com/hook", "signing": {"hmacSecret": SECRET}})
        await store.put_alert(alert.id, model.seal(alert, SecretBox([old])))
        assert await rotate_master(store, SecretBox([new, old])) == 1
        [(_, record)] = await store.alerts()
        assert SECRET.encode() not in record
        assert model.unseal(record, SecretBox([new])).secret == SECRET  # opens with the new key alone


async def test_the_recent_alerts_read_pages_as_small_as_the_limit_and_keep_each_alert_whole(store):
    """The outbox read for the recent alerts is bounded by what is shown (``limit`` × endpoints
    rows a page), yet an alert with more rows than endpoints now (some were deleted since) is shown
    whole, with every delivery, and older pages are read only when needed."""
    from leadstream.alerts import model
    from leadstream.alerts.service import Alerts
    from leadstream.security.guard import GuardPolicy
    from leadstream.security.secretbox import SecretBox, new_master_key

    alerts = Alerts(store, SecretBox([new_master_key()]), GuardPolicy(allow_private=True))
    await store.put_alert("a1", b"{}")  # one endpoint left; a2 and a3 were deleted since
    messages = [model.cloudevent(PAUSED, f"sub-{n}", {"n": n}) for n in range(12)]
    for message in messages:
        await store.enqueue_alert_messages([("a1", message), ("a2", message), ("a3", message)], now=0, keep=1000)
    await store.enqueue_alert_messages([(None, model.cloudevent(PAUSED, "sub-12", {}))], now=0, keep=1000)

    shown = await alerts.recent(5)  # pages of 5 rows: an alert's three rows straddle them
    assert [a["subject"] for a in shown] == ["sub-12", "sub-11", "sub-10", "sub-9", "sub-8"]
    assert shown[0]["deliveries"] == []  # no endpoint wanted it
    assert all(sorted(d["alert"] for d in a["deliveries"]) == ["a1", "a2", "a3"] for a in shown[1:])
    everything = await alerts.recent(50)
    assert len(everything) == 13 and everything[-1]["subject"] == "sub-0"
    assert await alerts.recent(1) == shown[:1]

    # The store's pages themselves: newest first, each below the last one's seq.
    first = await store.alert_messages(4)
    second = await store.alert_messages(4, before=first[-1].seq)
    assert [m.seq for m in first + second] == [m.seq for m in await store.alert_messages(8)]
    assert await store.alert_messages(4, before=min(m.seq for m in await store.alert_messages(100))) == []
