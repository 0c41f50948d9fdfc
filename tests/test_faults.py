"""The fault suite (issue 16): real `leadstream serve` processes on real files, with the faults a
bad day brings — a full disk, slowloris clients — and what each must and must not do."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from helpers import ServerProcess, activity, wait_until
from leadstream.store.base import Control, StoredSubscription
from leadstream.store.sqlite import SqliteStore
from test_delivery_support import receiver
from throwaway_pg import throwaway_pg  # noqa: F401  (a fixture)

INGEST = "/v1/streams/activity/events"


@contextlib.contextmanager
def small_disk(where: Path, megabytes: int) -> Iterator[Path]:
    """A tmpfs of its own, so that filling it fills nothing else. Needs root (CI runs as root)."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("the disk-full test must run under CI, which runs as root (it mounts a tmpfs)")
        pytest.skip("mounting a small tmpfs for the disk-full test needs root (CI runs as root)")
    where.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(where)], check=False)
    if mounted.returncode != 0:
        pytest.fail(f"mount -t tmpfs failed with {mounted.returncode} although running as root")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk is full; returns it (delete it to free the space)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (256 * 1024, 4096, 1):  # big pieces, then the last few bytes
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    return filler


async def health(http: aiohttp.ClientSession, server: ServerProcess) -> tuple[int, dict[str, str]]:
    async with http.get(server.url + "/healthz") as answer:
        return answer.status, await answer.json()


async def test_a_full_disk_is_503_with_the_reason_and_heals_by_itself_once_space_is_freed(tmp_path):
    with small_disk(tmp_path / "disk", 24) as disk:
        server = await ServerProcess(disk / "data", log=tmp_path / "server.log").start()
        acknowledged: list[str] = []
        headers = {**server.headers, "Content-Type": "application/json"}
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http, receiver() as rcv:
                delivering = {"name": "d", "munchkinId": "123-ABC-456", "stream": "activity", "endpoint": rcv.url}
                delivering |= {"pushIntervalMs": 10, "retryIntervalMs": 100, "probeIntervalMs": 200}
                async with http.post(server.url + "/v1/subscriptions", json=delivering, headers=server.headers) as r:
                    assert r.status == 201, await r.text()

                async def publish(first: int, count: int = 100) -> tuple[int, dict[str, object]]:
                    records = [activity(i) for i in range(first, first + count)]
                    async with http.post(server.url + INGEST, data=orjson.dumps(records), headers=headers) as r:
                        body = await r.json(content_type=None)
                    if r.status == 200:
                        acknowledged.extend(rec["marketoGUID"] for rec in records)
                    return r.status, body

                assert (await publish(0))[0] == 200
                filler = fill(disk)

                # The WAL may still have room that was written before: publish until it has none.
                next_guid, answers = 100, []
                for _ in range(2000):
                    status, body = await publish(next_guid)
                    next_guid += 100
                    answers.append(status)
                    if status != 200:
                        break
                assert status == 503, f"never refused on a full disk: {answers[-5:]}"
                assert "full" in str(body["detail"]), body
                assert set(answers) <= {200, 503}  # never a 500, never a hang (the timeout would say)

                # Admin writes get the same clear answer, without hanging…
                document = {
                    "name": "x",
                    "munchkinId": "123-ABC-456",
                    "stream": "activity",
                    "endpoint": "http://127.0.0.1:9/",
                }
                async with http.post(server.url + "/v1/subscriptions", json=document, headers=server.headers) as r:
                    assert r.status == 503, await r.text()
                # …and /healthz tells the truth, with the reason.
                status, view = await health(http, server)
                assert status == 503 and view["status"] == "degraded" and "full" in view["reason"], view
                # Retrying producers (what brought the checkpoint on in the issue) do not kill the writer.
                for _ in range(20):
                    assert (await publish(next_guid))[0] == 503
                    next_guid += 100

                filler.unlink()
                # Nobody writes now: the store notices by itself that it can commit again.
                await wait_until(lambda: health(http, server), timeout=15, what="/healthz to answer at all")
                await wait_until(
                    lambda: _is_ok(http, server), timeout=15, what="/healthz ok once space is freed, without traffic"
                )
                status, body = await publish(next_guid)
                assert status == 200 and body["accepted"] == 100
                async with http.post(server.url + "/v1/subscriptions", json=document, headers=server.headers) as r:
                    assert r.status == 201, await r.text()
                # Delivery went through the full disk too: every acknowledged event arrives.
                await wait_until(
                    lambda: set(rcv.ids()) >= set(acknowledged), timeout=30, what="every acknowledged event delivered"
                )
        finally:
            server.stop()

        # Every acknowledged record is in the log; nothing refused was half-stored.
        store = SqliteStore(disk / "data" / "leadstream.db")
        await store.open()
        try:
            stored = [e.id for e in await store.read(0, 10_000_000)]
        finally:
            await store.close()
        assert set(acknowledged) <= set(stored)
        assert len(stored) == len(set(stored)) == len(acknowledged)


async def _is_ok(http: aiohttp.ClientSession, server: ServerProcess) -> bool:
    status, view = await health(http, server)
    return status == 200 and view["status"] == "ok"


async def test_slowloris_connections_are_closed_after_the_header_timeout_and_publishing_goes_on(tmp_path):
    env = {
        "LEADSTREAM_HTTP_HEADER_TIMEOUT": "0.5",
        "LEADSTREAM_HTTP_IDLE_TIMEOUT": "1",
        "LEADSTREAM_HTTP_BODY_TIMEOUT": "0.5",
    }
    server = await ServerProcess(tmp_path / "data", env=env).start()
    try:
        slow = []
        for _ in range(200):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"POST /v1/streams/activity/events HTTP/1.1\r\nHost: x\r\n")
            slow.append((reader, writer))

        async def dribble() -> None:  # one more header byte now and then, as slowloris does
            with contextlib.suppress(ConnectionError):
                for n in range(100):
                    for _, writer in slow:
                        if not writer.is_closing():
                            writer.write(b"X-a: b\r\n"[n % 8 : n % 8 + 1])
                    await asyncio.sleep(0.05)

        dribbler = asyncio.create_task(dribble())
        async with aiohttp.ClientSession() as http:
            records = [activity(i) for i in range(10)]
            async with http.post(server.url + INGEST, json=records, headers=server.headers) as r:
                assert r.status == 200 and (await r.json())["accepted"] == 10

        async def answer(reader: asyncio.StreamReader) -> bytes:
            try:
                return await asyncio.wait_for(reader.read(), 10)  # until the server closes it
            except ConnectionResetError:  # closed while the client was still writing: also closed
                return b"reset"

        answers = await asyncio.gather(*(answer(reader) for reader, _ in slow))  # a hang fails here
        dribbler.cancel()
        assert {a[:13] for a in answers} <= {b"HTTP/1.1 408 ", b"reset"}, {a[:40] for a in answers}
        assert any(a.startswith(b"HTTP/1.1 408 ") for a in answers)

        # A body that trickles in after its headers gets a 408 too, and nothing is stored.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"POST /v1/streams/activity/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + server.key.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n["
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 408"), head
        writer.close()

        # An idle keep-alive connection is closed too.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert first.startswith(b"HTTP/1.1 200")
        await asyncio.wait_for(reader.read(), 10)  # returns once the server closed it
        assert reader.at_eof()
        writer.close()
    finally:
        server.stop()


async def test_admin_and_delivery_writes_alone_keep_the_wal_bounded(tmp_path):
    """No ingest at all: PATCH-like control updates, audit entries, delivery states and attempts
    must bring checkpoints on too (before, only appended bytes counted and the WAL grew without end)."""
    path = tmp_path / "leadstream.db"
    store = SqliteStore(path, checkpoint_bytes=256 * 1024)
    await store.open()
    wal = path.with_name(path.name + "-wal")
    try:
        await store.create_subscription(StoredSubscription("s1", "123-ABC-456", b'{"name":"s1"}', b"{}", 1))
        config = orjson.dumps({"name": "s1", "padding": "x" * 2000})
        peak = 0
        for rev in range(1, 1501):
            changed, *_ = await asyncio.gather(
                store.update_control("s1", Control(rev=rev, patch=rev), expected_rev=rev - 1, config=config),
                store.append_audit(orjson.dumps({"action": "subscription.patch", "rev": rev}), keep=1000),
                store.save_state("s1", orjson.dumps({"cursor": rev}), applied=rev),
                store.record_attempt("s1", orjson.dumps({"status": 200, "rev": rev})),
            )
            assert changed
            peak = max(peak, wal.stat().st_size)
        assert store.stats.checkpoints >= 10
        assert peak < 2 * 1024 * 1024, f"the WAL reached {peak} bytes"
    finally:
        await store.close()


async def test_repeated_kill_9_during_ingest_and_delivery_loses_nothing_acknowledged(tmp_path):
    """Three times: producers publish and the server delivers, and a SIGKILL comes at a random
    moment. Then exact accounting: everything acknowledged is stored and delivered; everything
    delivered was stored (nothing refused or unsent shows up); first arrivals are in log order."""
    rng = random.Random(os.environ.get("LEADSTREAM_FAULT_SEED", "16"))
    data = tmp_path / "data"
    server = await ServerProcess(data).start()
    acknowledged: set[str] = set()
    sent: set[str] = set()
    next_guid = 0
    async with aiohttp.ClientSession() as http, receiver() as r:
        document = {
            "name": "crashes", "munchkinId": "123-ABC-456", "stream": "activity", "endpoint": r.url,
            "batchSize": 100, "pushIntervalMs": 10, "retryIntervalMs": 50, "probeIntervalMs": 100,
        }  # fmt: skip
        async with http.post(server.url + "/v1/subscriptions", json=document, headers=server.headers) as answer:
            assert answer.status == 201

        async def producer() -> None:
            nonlocal next_guid
            while True:
                first, next_guid = next_guid, next_guid + 200
                records = [activity(i) for i in range(first, first + 200)]
                sent.update(rec["marketoGUID"] for rec in records)
                try:
                    async with http.post(server.url + INGEST, json=records, headers=server.headers) as answer:
                        if answer.status != 200:
                            return
                        assert (await answer.json())["accepted"] == 200
                except aiohttp.ClientError:
                    return  # killed under this request: not acknowledged, nothing promised
                acknowledged.update(rec["marketoGUID"] for rec in records)

        for _round in range(3):
            producers = [asyncio.create_task(producer()) for _ in range(3)]
            before = len(r.ids())
            await wait_until(lambda before=before: len(r.ids()) > before + 200, timeout=20, what="delivery going on")
            await asyncio.sleep(rng.uniform(0.0, 0.5))  # a random moment of ingest and delivery
            server.kill()
            await asyncio.gather(*producers)
            server = await ServerProcess(data, port=server.port).start()

        try:
            await wait_until(
                lambda: acknowledged <= set(r.ids()), timeout=60, what="every acknowledged event delivered"
            )
            store_ids = await _stored_ids(server, http)
            await wait_until(lambda: set(r.ids()) >= store_ids, timeout=30, what="every stored event delivered")
        finally:
            server.stop()

    delivered = r.ids()
    assert acknowledged <= store_ids
    assert set(delivered) == store_ids and store_ids <= sent
    stored = [e.id for e in await _log(data)]
    first_seen = list(dict.fromkeys(delivered))
    assert first_seen == stored, "first deliveries out of log order"
    assert len(acknowledged) >= 600


async def _log(data: Path) -> list:
    store = SqliteStore(data / "leadstream.db")
    await store.open()
    try:
        return await store.read(0, 10_000_000)
    finally:
        await store.close()


async def _stored_ids(server: ServerProcess, http: aiohttp.ClientSession) -> set[str]:
    """What the log holds, through the journal of a subscription created now (from the start)."""
    document = {"name": "count", "munchkinId": "123-ABC-456", "stream": "activity", "endpoint": "http://127.0.0.1:9/"}
    async with http.post(server.url + "/v1/subscriptions", json=document, headers=server.headers) as answer:
        sub_id = (await answer.json())["id"]
    async with http.post(f"{server.url}/v1/subscriptions/{sub_id}/pause", headers=server.headers) as answer:
        assert answer.status == 200
    ids: set[str] = set()
    url = f"{server.url}/v1/subscriptions/{sub_id}/journal?limit=1000"
    while True:
        async with http.get(url, headers=server.headers) as answer:
            if answer.status == 204:
                return ids
            page = await answer.json()
            ids.update(item["event"]["id"] for item in page["events"])
            url = str(answer.links["next"]["url"])


async def test_a_postgresql_restart_says_unreachable_retry_and_heals(tmp_path, throwaway_pg):  # noqa: F811
    server = await ServerProcess(tmp_path / "data", env={"LEADSTREAM_DATABASE_URL": throwaway_pg.url}).start()
    try:
        async with aiohttp.ClientSession() as http:
            records = [activity(i) for i in range(10)]

            async def publish() -> tuple[int, dict[str, object]]:
                async with http.post(server.url + INGEST, json=records, headers=server.headers) as answer:
                    return answer.status, await answer.json(content_type=None)

            assert (await publish())[0] == 200
            await asyncio.to_thread(throwaway_pg.stop, "fast")
            answers = [await publish() for _ in range(5)]
            assert {status for status, _ in answers} == {503}, answers
            for _, body in answers:
                assert str(body["detail"]).startswith("PostgreSQL is unreachable, retry"), body
                assert "__aexit__" not in str(body["detail"])
            status, view = await health(http, server)
            assert status == 503 and view["reason"].startswith("PostgreSQL is unreachable, retry"), view
            await asyncio.to_thread(throwaway_pg.start)
            await wait_until(lambda: _is_ok(http, server), timeout=20, what="/healthz ok after the restart")
            status, body = await publish()
            assert status == 200 and body["duplicates"] == 10  # the first request was stored once
    finally:
        server.stop()
