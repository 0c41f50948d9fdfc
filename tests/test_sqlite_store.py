"""What is particular to the embedded store: group commit and a bounded WAL."""

from __future__ import annotations

import asyncio
import sqlite3

import orjson

from helpers import activity
from leadstream.catalog import Catalog
from leadstream.events import Validator
from leadstream.store import sqlite as embedded
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
        assert store.stats.checkpoints >= 5  # each asked after a commit, finished after a later one
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


async def test_commit_interval_gathers_patient_writes_and_never_holds_one_someone_waits_on(tmp_path):
    # The delivery process's store: its state saves and attempt logs may wait commit_interval for
    # company; a source's append or call budget (someone waits on it) may not.
    store = SqliteStore(tmp_path / "log.db", commit_interval=60.0)
    await store.open()
    try:
        await asyncio.wait_for(store.append(events(0, 5)), 10)  # not held for the 60 s
        before = store.stats.commits
        patient = asyncio.ensure_future(store.record_attempt("sub-1", b'{"n":1}'))
        await asyncio.sleep(0)  # the attempt is queued first and waits for company …
        await asyncio.wait_for(store.append(events(5, 5)), 10)  # … which this append brings at once
        await asyncio.wait_for(patient, 10)
        assert store.stats.commits == before + 1  # the two went in one commit
        assert len(await store.read(0, 100)) == 10
        assert await store.list_attempts("sub-1", 10) == [b'{"n":1}']
    finally:
        await store.close()


async def test_a_reader_holding_old_frames_delays_appends_a_moment_not_the_busy_timeout(tmp_path, monkeypatch):
    # A long drain's reads keep old WAL frames in use; the TRUNCATE checkpoint a large WAL calls
    # for holds the write lock while it waits for them. It waits a moment, not the 30 s a write
    # would: appends go on and the WAL grows past its limit meanwhile (up to WAL_PATIENT_BYTES).
    monkeypatch.setattr(embedded, "WAL_LIMIT_BYTES", 256 * 1024)
    monkeypatch.setattr(embedded, "WAL_PATIENT_BYTES", 1024 * 1024 * 1024)
    store = SqliteStore(tmp_path / "log.db", checkpoint_bytes=64 * 1024)
    await store.open()
    wal = tmp_path / "log.db-wal"
    reader = sqlite3.connect(tmp_path / "log.db", isolation_level=None)
    try:
        await store.append(events(0, 10))
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM events").fetchall()  # a snapshot: its frames stay in use
        for round_ in range(1, 11):  # each append is over the limit and ends with a checkpoint
            await asyncio.wait_for(store.append(events(round_ * 100, 100)), 10)
        assert wal.stat().st_size > 4 * 256 * 1024  # the reader kept it from being truncated
        reader.execute("COMMIT")
        assert len(await store.read(0, 10_000)) == 1010
    finally:
        reader.close()
        await store.close()
    assert not wal.exists() or wal.stat().st_size == 0  # once the reader let go, closing truncates it
