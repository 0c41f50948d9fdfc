"""Retention (SPEC §4.5): old events leave the log; ingest goes on during the purge."""

from __future__ import annotations

import time

import aiohttp
import pytest

from helpers import activity, publish, running_server, wait_until
from leadstream.settings import parse_duration


def test_durations_accept_units_and_reject_nonsense():
    assert parse_duration("7d") == 7 * 86400
    assert parse_duration("12h") == 43200
    assert parse_duration("30m") == 1800
    assert parse_duration("45s") == 45
    assert parse_duration("250ms") == 0.25
    assert parse_duration("90") == 90
    for bad in ("7 days", "-1s", "0s", "d7", ""):
        with pytest.raises(ValueError):
            parse_duration(bad)


async def test_old_events_leave_the_log_and_purge_does_not_block_ingest(tmp_path):
    async with (
        running_server(data_dir=tmp_path, retention=1.0, purge_interval=0.1) as server,
        aiohttp.ClientSession() as session,
    ):
        store = server.services.store
        published_from = time.monotonic()  # the events' ingest time is later than this
        _, body = await publish(session, server, "activity", [activity(i) for i in range(3000)])
        assert body["accepted"] == 3000

        # Keep publishing while the first 3000 expire; every request must still succeed promptly.
        latencies = []
        next_id = 10_000

        async def expired() -> bool:
            nonlocal next_id
            started = time.monotonic()
            status, body = await publish(session, server, "activity", [activity(next_id + i) for i in range(50)])
            latencies.append(time.monotonic() - started)
            assert status == 200 and body["accepted"] == 50
            next_id += 50
            return await store.first_position() > 3000

        await wait_until(expired, timeout=15, interval=0.05, what="the first batch to expire")
        # Not before its retention ran out (ingest times are kept in whole milliseconds).
        assert time.monotonic() - published_from >= 1.0 - 0.001
        remaining = await store.read(0, 100_000)
        assert remaining and all(e.position > 3000 for e in remaining)
        assert server.services.retention.purged >= 3000
        assert max(latencies) < 5  # ingest was never stuck behind the purge
        # The expired keys are gone with their events: the same records can come in again.
        _status, body = await publish(session, server, "activity", [activity(i) for i in range(10)])
        assert body["accepted"] == 10


async def test_positions_are_never_reused_after_everything_expired(tmp_path):
    async with (
        running_server(data_dir=tmp_path, retention=0.2, purge_interval=0.05) as server,
        aiohttp.ClientSession() as session,
    ):
        store = server.services.store
        await publish(session, server, "activity", [activity(i) for i in range(10)])
        await wait_until(lambda: store.first_position(), what="start")
        await wait_until(lambda: server.services.retention.purged >= 10, what="all events purged")
    async with running_server(data_dir=tmp_path) as server, aiohttp.ClientSession() as session:
        await publish(session, server, "activity", [activity(100)])
        events = await server.services.store.read(0, 10)
        assert [e.position for e in events] == [11]
