"""What is particular to the embedded store: group commit and a bounded WAL."""

from __future__ import annotations

import asyncio

import orjson

from helpers import activity
from leadstream.catalog import Catalog
from leadstream.events import Validator
from leadstream.store.sqlite import SqliteStore

validator = Validator(Catalog())


def events(start: int, n: int):
    return [
        validator.event("activity", orjson.dumps(activity(i, attributes=[{"name": "Blob", "value": "x" * 1500}])))
        for i in range(start, start + n)
    ]


async def test_concurrent_appends_share_commits_and_the_wal_stays_bounded(tmp_path):
    store = SqliteStore(tmp_path / "log.db", checkpoint_bytes=256 * 1024)
    await store.open()
    wal = tmp_path / "log.db-wal"
    largest = 0
    try:
        for round_ in range(20):  # 20 rounds × 40 concurrent appends × 10 events × ~1.7 kB ≈ 14 MB
            await asyncio.gather(*(store.append(events(round_ * 1000 + k * 10, 10)) for k in range(40)))
            largest = max(largest, wal.stat().st_size)
        assert store.stats.jobs == 800
        assert store.stats.commits < store.stats.jobs  # concurrent appends were grouped into shared commits
        assert store.stats.checkpoints > 10
        assert largest < 4 * 1024 * 1024, (
            largest
        )  # ~14 MB written, the WAL never held more than a few checkpoints' worth
        assert len(await store.read(0, 100_000)) == 8000
    finally:
        await store.close()
    assert not wal.exists() or wal.stat().st_size == 0  # closing truncates it


async def test_a_failing_job_fails_alone(tmp_path):
    store = SqliteStore(tmp_path / "log.db")
    await store.open()
    try:

        def broken(conn):
            raise RuntimeError("boom")

        good = store.append(events(0, 5))
        bad = store._write(broken)
        results = await asyncio.gather(good, bad, return_exceptions=True)
        assert results[0] == [] and isinstance(results[1], RuntimeError)
        assert len(await store.read(0, 100)) == 5
    finally:
        await store.close()
