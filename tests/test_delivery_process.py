"""`leadstream serve --delivery-process`: delivery in a second process of the same data directory.

Events published to the API process are delivered in order by the delivery process; admin
changes made through the API take effect there; views show its progress; and it never outlives
the server, even one killed with SIGKILL — after which a restart loses nothing and sends again
only the batch that was in flight."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil

from helpers import ADMIN_KEY, ServerProcess, activity, wait_until
from leadstream import metrics_export
from leadstream.delivery.statelog import StateLog
from leadstream.journal import encode_position
from leadstream.sim.marketo import Limits, MarketoInstance
from test_delivery_support import Received, assert_only_the_batch_in_flight_came_twice, receiver

HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}


class Api:
    def __init__(self, http: aiohttp.ClientSession, server: ServerProcess) -> None:
        self.http, self.server = http, server

    async def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        async with self.http.request(method, self.server.url + path, json=body, headers=HEADERS) as answer:
            assert answer.status == status, await answer.text()
            return await answer.json()

    async def subscribe(self, endpoint: str, **settings: Any) -> str:
        document = {
            "name": "two-processes",
            "munchkinId": "123-ABC-456",
            "stream": "activity",
            "endpoint": endpoint,
            "batchSize": 100,
            "pushIntervalMs": 10,
            "retryIntervalMs": 50,
            "probeIntervalMs": 100,
            **settings,
        }
        return (await self.call("POST", "/v1/subscriptions", document, status=201))["id"]

    async def publish(self, numbers: range) -> None:
        for start in range(numbers.start, numbers.stop, 5000):
            records = [activity(i) for i in range(start, min(start + 5000, numbers.stop))]
            answer = await self.call("POST", "/v1/streams/activity/events", records)
            assert answer["accepted"] == len(records)


async def metric(http: aiohttp.ClientSession, server: ServerProcess, line: str) -> bool:
    async with http.get(server.url + "/metrics") as answer:
        return line in (await answer.text()).splitlines()


def logged_state(data: Path, sub_id: str) -> dict[str, Any]:
    """The delivery process's newest save of a subscription not yet checkpointed to the store."""
    return orjson.loads(StateLog(data).recover().get(sub_id, (b"{}", 0))[0])


def saved_state(data: Path, sub_id: str) -> dict[str, Any]:
    """What the delivery process last wrote to the store for a subscription."""
    with sqlite3.connect(data / "leadstream.db") as db:
        return orjson.loads(db.execute("SELECT state FROM subscriptions WHERE id = ?", (sub_id,)).fetchone()[0])


def guids(numbers: range) -> list[str]:
    return [f"guid-{i}" for i in numbers]


def delivery_child(server: ServerProcess) -> psutil.Process:
    assert server.proc is not None
    [child] = psutil.Process(server.proc.pid).children()
    assert "leadstream.delivery.worker" in child.cmdline()
    return child


def gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_delivers_in_order_and_follows_admin_changes_made_in_the_api_process(tmp_path):
    data = tmp_path / "data"
    server = await ServerProcess(data, "--delivery-process").start()
    try:
        async with aiohttp.ClientSession() as http, receiver() as main, receiver() as witness:
            api = Api(http, server)
            sub_id = await api.subscribe(main.url)
            witness_id = await api.subscribe(witness.url)
            await api.publish(range(2000))
            await wait_until(lambda: len(main.ids()) >= 2000, timeout=15, what="the first 2000 events")
            assert main.ids() == guids(range(2000))  # in order, once each

            async def delivered(n: int) -> bool:
                return (await api.call("GET", f"/v1/subscriptions/{sub_id}"))["delivered"] >= n

            # Once the delivery process has saved it (its state log, checkpointed to the store once a
            # second), the API process's view shows it: not the checkpoint's older state.
            await wait_until(lambda: logged_state(data, sub_id).get("delivered") == 2000, timeout=5, what="the save")
            view = await api.call("GET", f"/v1/subscriptions/{sub_id}")
            assert (view["delivered"], view["pending"]) == (2000, 0)
            await wait_until(
                lambda: metric(http, server, f'leadstream_delivered_events_total{{subscription="{sub_id}"}} 2000.0'),
                timeout=10,
                what="the API process's /metrics to count the delivery process's deliveries",
            )
            async with http.get(server.url + "/metrics") as answer:
                exposed = await answer.text()
            types = [line.split()[2] for line in exposed.splitlines() if line.startswith("# TYPE ")]
            assert len(types) == len(set(types))  # each family once: the two processes' merged
            assert "leadstream_ingested_events_total" in exposed  # and the API process's own
            # the console's charts ask the delivery process for theirs: delivered and lag per subscription
            delivered_count, lag = (await asyncio.to_thread(metrics_export.chart_readings, data))[sub_id]
            assert delivered_count == 2000 and lag == 0.0

            view = await api.call("POST", f"/v1/subscriptions/{sub_id}/pause")
            assert view["state"] == "paused"
            await wait_until(
                lambda: saved_state(data, sub_id).get("state", "active") == "paused",
                timeout=5,
                what="the delivery process to apply the pause",
            )
            await api.publish(range(2000, 2500))
            await wait_until(lambda: len(witness.ids()) >= 2500, timeout=15, what="the witness to get 2500 events")
            assert len(main.ids()) == 2000  # paused: nothing more

            await api.call("POST", f"/v1/subscriptions/{sub_id}/resume")
            await wait_until(lambda: len(main.ids()) >= 2500, timeout=15, what="the backlog after resume")
            assert main.ids() == guids(range(2500))

            await api.call("POST", f"/v1/subscriptions/{sub_id}/replay", {"from": 1000})
            await wait_until(lambda: len(main.ids()) >= 4000, timeout=15, what="the replay")
            assert main.ids() == guids(range(2500)) + guids(range(1000, 2500))

            view = await api.call("DELETE", f"/v1/subscriptions/{sub_id}")
            assert view["state"] == "deprovisioned"
            await wait_until(
                lambda: saved_state(data, sub_id).get("state", "active") == "deprovisioned",
                timeout=5,
                what="the delivery process to apply the delete",
            )
            await api.publish(range(2500, 2600))
            await wait_until(lambda: len(witness.ids()) >= 2600, timeout=15, what="the witness to get 2600 events")
            assert len(main.ids()) == 4000
            assert witness.ids() == guids(range(2600))
            assert (await api.call("GET", f"/v1/subscriptions/{witness_id}"))["state"] == "active"
            child = delivery_child(server)
    finally:
        server.stop()
    assert gone(child)  # stopped with the server, having saved where each subscription is
    assert saved_state(data, witness_id)["delivered"] == 2600


SOURCE_ENV = {"LEADSTREAM_SOURCE_FOLLOW_INTERVAL": "0.05", "LEADSTREAM_SOURCE_BACKOFF_BASE": "0.05"}


async def test_the_delivery_process_renders_its_metrics_for_a_scrape_only_and_answers_the_charts_from_its_senders(
    tmp_path,
):
    # An idle server must not render every subscription's series for nobody: not each second, nor
    # for each sample of the console's charts, whose few numbers per subscription come as JSON
    # from the senders. A scrape must still see what was delivered a moment ago.
    data = tmp_path / "data"
    env = {"LEADSTREAM_METRICS_EXPORT_INTERVAL": "0.02", "LEADSTREAM_CONSOLE_SAMPLE_INTERVAL": "0.1"}
    server = await ServerProcess(data, env=env).start()
    exported, readings = data / metrics_export.METRICS_FILE, data / metrics_export.READINGS_FILE
    try:
        async with aiohttp.ClientSession() as http, receiver() as endpoint:
            api = Api(http, server)
            sub_id = await api.subscribe(endpoint.url)

            async def delivered(n: int) -> bool:
                return (await api.call("GET", f"/v1/subscriptions/{sub_id}"))["delivered"] >= n

            def charted(n: int) -> bool:
                answered = orjson.loads(readings.read_bytes()) if readings.exists() else {}
                return answered.get(sub_id, [0])[0] == n

            line = 'leadstream_delivered_events_total{subscription="%s"} %s'
            await api.publish(range(100))
            await wait_until(lambda: delivered(100), timeout=15, what="the first 100 events")
            await wait_until(lambda: charted(100), timeout=15, what="the chart readings to count 100")
            assert not exported.exists()  # the charts were answered: nothing rendered for them
            assert await metric(http, server, line % (sub_id, "100.0"))  # fresh at the first ask
            first = exported.stat().st_mtime_ns

            await api.publish(range(100, 200))
            await wait_until(lambda: delivered(200), timeout=15, what="the next 100 events")
            # counted by a later answer: the delivery process has looked for both asks since
            await wait_until(lambda: charted(200), timeout=15, what="the chart readings to count 200")
            assert exported.stat().st_mtime_ns == first  # nobody scraped: nothing rendered
            assert await metric(http, server, line % (sub_id, "200.0"))  # asked: fresh again
            assert exported.stat().st_mtime_ns > first
    finally:
        server.stop()


async def test_a_source_run_by_the_delivery_process_appends_beside_ingest_and_both_are_delivered(tmp_path):
    # The source runs in the delivery process and appends to the log the API process appends to:
    # each must number after the other's commits, and each process must see the other's events.
    roomy = Limits(calls_per_window=100_000, max_concurrent=50, daily_quota=10_000_000)
    async with MarketoInstance(rate=0, limits=roomy) as sim:
        server = await ServerProcess(tmp_path / "data", "--delivery-process", env=SOURCE_ENV).start()
        try:
            async with aiohttp.ClientSession() as http, receiver() as sink:
                api = Api(http, server)
                sub_id = await api.subscribe(sink.url, batchSize=500)
                await api.publish(range(1000))
                await wait_until(lambda: len(sink.ids()) >= 1000, timeout=15, what="the delivery process to run")
                source = {
                    "type": "marketo", "name": "sim", "munchkinId": sim.munchkin_id, "restUrl": sim.url,
                    "clientId": sim.client_id, "clientSecret": sim.client_secret, "activityTypes": [1, 2, 6],
                    "pollIntervalMs": 20, "dailyQuota": 10_000_000, "callsPer20s": 100_000,
                }  # fmt: skip
                await api.call("POST", "/v1/sources", source, status=201)
                sim.inject(300, [1, 2, 6])
                await wait_until(lambda: len(sink.ids()) >= 1300, timeout=15, what="the source's first activities")
                await api.publish(range(1000, 2000))  # after the delivery process's appends
                sim.inject(300, [1, 2, 6])  # after the API process's
                await wait_until(lambda: len(sink.ids()) >= 2600, timeout=30, what="every event and activity")
                truth = {r["marketoGUID"] for r in sim.truth()}
                delivered = sink.ids()
                assert len(delivered) == len(set(delivered)) == 2600
                assert set(delivered) == set(guids(range(2000))) | truth
                # The journal is served by the API process: it sees the source's last appends too.
                since = encode_position(1600)
                async with http.get(
                    f"{server.url}/v1/subscriptions/{sub_id}/journal?limit=1000&since={since}", headers=HEADERS
                ) as answer:
                    assert answer.status == 200, await answer.text()
                    page = orjson.loads(await answer.read())["events"]
                assert {e["event"]["id"] for e in page} == set(delivered[1600:])
        finally:
            server.stop()


TOTAL = 20_000


async def slow(seen: Received) -> None:
    await asyncio.sleep(0.02)


async def test_sigkill_of_the_server_takes_the_delivery_process_along_and_a_restart_loses_nothing(tmp_path):
    data = tmp_path / "data"
    server = await ServerProcess(data, env={"LEADSTREAM_DELIVERY_PROCESS": "1"}).start()
    try:
        async with aiohttp.ClientSession() as http, receiver(answer=slow) as r:
            api = Api(http, server)
            sub_id = await api.subscribe(r.url, batchSize=200)
            await api.publish(range(TOTAL))
            await wait_until(lambda: len(r.ids()) >= 4000, timeout=20, what="delivery under way")

            child = delivery_child(server)
            server.kill()
            await wait_until(lambda: gone(child), timeout=10, what="the delivery process to go with the server")
            received_before_kill = len(r.requests)
            assert len(r.ids()) < TOTAL  # stopped mid-delivery

            server = await ServerProcess(data, "--delivery-process", port=server.port).start()
            await wait_until(lambda: len(set(r.ids())) >= TOTAL, timeout=30, what="every event after the restart")

            async def caught_up() -> Any:
                view = await api.call("GET", f"/v1/subscriptions/{sub_id}")
                return view["pending"] == 0 and view["delivered"] >= TOTAL and view

            view = await wait_until(caught_up, timeout=5, what="the view to show everything delivered")

        ids = r.ids()
        assert list(dict.fromkeys(ids)) == guids(range(TOTAL))  # everything, in order
        assert_only_the_batch_in_flight_came_twice(r)
        assert received_before_kill < len(r.requests)
        assert view["state"] == "active"
    finally:
        server.stop()


async def test_two_processes_are_the_default_and_one_process_is_a_flag(tmp_path):
    server = await ServerProcess(tmp_path / "two").start()
    try:
        delivery_child(server)  # the default on the embedded store: a delivery process
    finally:
        server.stop()
    server = await ServerProcess(tmp_path / "one", "--one-process").start()
    try:
        assert server.proc is not None
        assert psutil.Process(server.proc.pid).children() == []
    finally:
        server.stop()
