"""The embedded store: one SQLite file in WAL mode.

All writes go through one writer thread that commits whatever is waiting as one transaction
(group commit), so one fsync covers every ingest request that arrived meanwhile. Each job runs in
its own savepoint: a failing job fails alone. The writer also schedules the WAL checkpoints, so
the WAL stays bounded: every kind of write counts towards the next one, not only appends. The bulk
of each checkpoint, copying the WAL's pages into the database file, runs on a thread of its own
while commits go on; the writer then copies what was committed meanwhile, which lets the WAL start
over at the next commit (on the writer, every write would wait for the whole copy).

The writer never dies of a failed commit or checkpoint (a full disk, an I/O error): the jobs of a
failed commit get ``Unavailable`` with SQLite's reason, ``healthy()`` is False with that reason
until a commit succeeds again, and while it fails the writer itself tries a tiny commit now and
then, so that the store recovers once space is freed even when nobody writes.

Reads run on a small thread pool, each thread with its own connection; WAL lets them proceed
while the writer commits.

Another process may append to the same file (``leadstream serve --delivery-process``: ingest in
one process, delivery in the other). Opened with ``follow_head=True``, the store learns of the
positions that process commits by polling the committed head (``meta.last_position``) — every
couple of milliseconds while it moves, backing off to ``FOLLOW_SLOWEST`` when idle. The two
writers then take turns at SQLite's one write lock; ``commit_interval`` makes this side's patient
writes (delivery states, attempts) gather into rarer, larger commits, so that they hardly keep
ingest waiting; a write someone waits on (a source's append, its call budget) ends the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from msgspec.structs import astuple

from leadstream.errors import Conflict, Unavailable
from leadstream.events import Event
from leadstream.logs import log
from leadstream.store.base import (
    ALERT_MESSAGE_COLUMNS,
    CALL_COUNTS_SQL,
    CONTROL_COLUMNS,
    SOURCE_COLUMNS,
    SUBSCRIPTION_COLUMNS,
    AlertMessage,
    CallCounts,
    Control,
    EventQuery,
    LogHead,
    Store,
    StoredSource,
    StoredSubscription,
    number_fresh,
    pack_trace,
    settle,
    with_trace,
)

T = TypeVar("T")

# Each migration brings the file from the version before it (PRAGMA user_version) to its own.
MIGRATIONS = [
    # 1: the event log, subscriptions and everything around them.
    """
    CREATE TABLE IF NOT EXISTS events (
        position INTEGER PRIMARY KEY,
        eventid TEXT NOT NULL,
        stream TEXT NOT NULL,
        munchkin_id TEXT NOT NULL,
        etype TEXT NOT NULL,
        type TEXT NOT NULL,
        id TEXT NOT NULL,
        time TEXT NOT NULL,
        data BLOB NOT NULL,
        key TEXT NOT NULL,
        ingested_at INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX IF NOT EXISTS events_key ON events (key);
    CREATE INDEX IF NOT EXISTS events_tenant ON events (stream, munchkin_id, position);
    CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
    CREATE TABLE IF NOT EXISTS subscriptions (
        id TEXT PRIMARY KEY,
        munchkin_id TEXT NOT NULL,
        config BLOB NOT NULL,
        state BLOB NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS attempts (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        sub_id TEXT NOT NULL,
        doc BLOB NOT NULL
    );
    CREATE INDEX IF NOT EXISTS attempts_sub ON attempts (sub_id, seq);
    CREATE TABLE IF NOT EXISTS dead_letters (
        sub_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        event BLOB NOT NULL,
        reason TEXT NOT NULL,
        PRIMARY KEY (sub_id, position)
    );
    """,
    # 2: the control record in columns of its own (version 1 spliced it into the config and state
    # documents); API keys, the audit trail and tenant catalogs a row each (version 1 kept them in
    # whole-document settings that concurrent writers could overwrite).
    """
    ALTER TABLE subscriptions ADD COLUMN control_rev INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE subscriptions ADD COLUMN pause_rev INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE subscriptions ADD COLUMN resume_rev INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE subscriptions ADD COLUMN replay_rev INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE subscriptions ADD COLUMN patch_rev INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE subscriptions ADD COLUMN delete_rev INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE subscriptions ADD COLUMN replay_to INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE subscriptions ADD COLUMN applied_rev INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX subscriptions_control ON subscriptions (control_rev);
    UPDATE subscriptions SET
        control_rev = coalesce(json_extract(CAST(config AS TEXT), '$._control.rev'), 0),
        pause_rev = coalesce(json_extract(CAST(config AS TEXT), '$._control.ops.pause'), 0),
        resume_rev = coalesce(json_extract(CAST(config AS TEXT), '$._control.ops.resume'), 0),
        replay_rev = coalesce(json_extract(CAST(config AS TEXT), '$._control.ops.replay'), 0),
        patch_rev = coalesce(json_extract(CAST(config AS TEXT), '$._control.ops.patch'), 0),
        delete_rev = coalesce(json_extract(CAST(config AS TEXT), '$._control.ops.delete'), 0),
        replay_to = coalesce(json_extract(CAST(config AS TEXT), '$._control.replayTo'), 0),
        config = CAST(json_remove(CAST(config AS TEXT), '$._control') AS BLOB),
        applied_rev = coalesce(json_extract(CAST(state AS TEXT), '$.applied'), 0),
        state = CAST(json_remove(CAST(state AS TEXT), '$.applied') AS BLOB)
    WHERE json_valid(CAST(config AS TEXT)) AND json_valid(CAST(state AS TEXT));
    CREATE TABLE api_keys (id TEXT PRIMARY KEY, record BLOB NOT NULL, used_at INTEGER NOT NULL DEFAULT 0);
    INSERT INTO api_keys (id, record, used_at)
        SELECT substr(k.name, 16), k.value,
               coalesce((SELECT CAST(CAST(u.value AS TEXT) AS INTEGER) FROM meta u WHERE u.name = k.name || '.used'), 0)
        FROM meta k WHERE k.name LIKE 'setting:apikey.%' AND k.name NOT LIKE '%.used';
    CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, entry BLOB NOT NULL);
    INSERT OR IGNORE INTO audit (seq, entry)
        SELECT json_extract(e.value, '$.seq'), CAST(json_remove(e.value, '$.seq') AS BLOB)
        FROM meta, json_each(CAST(meta.value AS TEXT)) AS e WHERE meta.name LIKE 'setting:audit.page.%' ORDER BY 1;
    INSERT OR REPLACE INTO meta (name, value)
        SELECT 'setting:catalog.activity.' || tenant.key || '.' || json_extract(entry.value, '$.id'),
               CAST(entry.value AS BLOB)
        FROM meta, json_each(CAST(meta.value AS TEXT)) AS tenant, json_each(tenant.value) AS entry
        WHERE meta.name = 'setting:catalog.tenants';
    DELETE FROM meta WHERE name LIKE 'setting:apikey%' OR name LIKE 'setting:audit.%'
        OR name IN ('setting:catalog.tenants', 'setting:subscriptions.revision');
    """,
    # 3: each attempt's debug trace (request headers, response status, headers and body start).
    """
    ALTER TABLE attempts ADD COLUMN trace BLOB;
    """,
    # 4: sources (SPEC §10), their per-group checkpoints, and the API-call ledger of each Munchkin ID.
    """
    CREATE TABLE sources (
        id TEXT PRIMARY KEY, munchkin_id TEXT NOT NULL, config BLOB NOT NULL, status BLOB NOT NULL,
        created_at INTEGER NOT NULL, rev INTEGER NOT NULL DEFAULT 0, paused INTEGER NOT NULL DEFAULT 0);
    CREATE INDEX sources_tenant ON sources (munchkin_id, created_at);
    CREATE TABLE source_checkpoints (
        source_id TEXT NOT NULL, grp TEXT NOT NULL, checkpoint BLOB NOT NULL, PRIMARY KEY (source_id, grp));
    CREATE TABLE source_api_calls (
        call_id TEXT PRIMARY KEY, munchkin_id TEXT NOT NULL, reserved_at REAL NOT NULL, finished_at REAL NOT NULL);
    CREATE INDEX source_api_calls_finished ON source_api_calls (munchkin_id, finished_at);
    CREATE INDEX source_api_calls_reserved ON source_api_calls (munchkin_id, reserved_at);
    CREATE TABLE source_api_blocks (munchkin_id TEXT PRIMARY KEY, blocked_until REAL NOT NULL, reason TEXT NOT NULL);
    """,
    # 5: operator alerts: the endpoints, and the outbox (a row per alert and endpoint).
    """
    CREATE TABLE alerts (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, record BLOB NOT NULL);
    CREATE TABLE alert_outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        alert_id TEXT,
        message BLOB NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at INTEGER NOT NULL,
        held_until INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        last_error TEXT
    );
    CREATE INDEX alert_outbox_due ON alert_outbox (state, next_at);
    """,
    # 6: console sessions, so that any node answers a signed-in browser (the id's digest, never the id).
    """
    CREATE TABLE console_sessions (
        id_hash BLOB PRIMARY KEY, key_id TEXT NOT NULL, record BLOB NOT NULL,
        created_at REAL NOT NULL, seen_at REAL NOT NULL);
    CREATE INDEX console_sessions_key ON console_sessions (key_id);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
SUBSCRIPTION_SELECT = f"SELECT {', '.join(SUBSCRIPTION_COLUMNS)} FROM subscriptions"
SOURCE_SELECT = f"SELECT {', '.join(SOURCE_COLUMNS)} FROM sources"

EVENT_COLUMNS = "eventid, stream, munchkin_id, etype, type, id, time, data, key, position, ingested_at"
# Reads skip the key (only ingest needs it): "" stands in its place, keeping Event(*row) positional.
READ_COLUMNS = "eventid, stream, munchkin_id, etype, type, id, time, data, '', position, ingested_at"
CHECKPOINT_EVERY_BYTES = 32 * 1024 * 1024
WAL_LIMIT_BYTES = 256 * 1024 * 1024
WAL_PATIENT_BYTES = 4 * WAL_LIMIT_BYTES  # past this a TRUNCATE waits for readers as long as a write would
MAX_GROUP = 512
BUSY_TIMEOUT_MS = 30_000  # a write waits this long for the other process's turn at the lock
TRUNCATE_WAIT_MS = 200  # a TRUNCATE checkpoint waits this long for readers (see _checkpoint)
SLOW_CHECKPOINT_SECONDS = 1.0  # a checkpoint that holds the write lock longer is logged
COPY_PASSES = 4  # the copier's passes over the WAL: again while the last copied over 1/COPY_PASSES of it
COPY_BEHIND = 4  # commits wait for the copier once it is this many checkpoints behind
COPY_LOOK = 0.05  # an idle writer looks this often whether the copier is done, to finish the checkpoint
INSERT_ROWS = 256
FOLLOW_FASTEST = 0.002  # seconds between looks at the committed head while it moves…
# Every job writes at least a page or two (the row, an index entry): counted so that admin
# actions, delivery states and attempts bring checkpoints on too, not only appends.
JOB_BYTES = 8 * 1024
RECOVERY_PROBE_SECONDS = 1.0  # while commits fail, the writer tries one of its own this often
FOLLOW_SLOWEST = 0.02  # …and at most this when idle (the first event after a lull waits this long)
# A WAL file that kept its size and time since a while after its last change had no commit: the
# look at the head is skipped (a stat, not a query: most of an idle follower's cost). "A while":
# a commit is written to the file before its fsync ends and it shows. The file's time ticks
# coarsely and a restarted WAL may keep its size, so the head is read at least every
# FOLLOW_SURELY all the same.
FOLLOW_SETTLED = 0.05
FOLLOW_SURELY = 0.1


@dataclass(slots=True)
class _Job:
    run: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any] | None  # None: the writer's own (a health probe), nobody waits
    durable: bool
    written: int = 0  # bytes, for the checkpoint schedule
    patient: bool = False  # nobody waits on it soon (states, attempts): may gather for commit_interval


@dataclass
class _WriterStats:
    commits: int = 0
    jobs: int = 0
    checkpoints: int = 0
    unwritten: int = field(default=0)
    failed_commits: int = 0
    failed_checkpoints: int = 0


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring the file up to SCHEMA_VERSION (a fresh file runs every migration)."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current == 0 and conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'events'").fetchone():
        current = 1  # made before versions were recorded
    if current > SCHEMA_VERSION:
        raise RuntimeError(
            f"{conn}: the data directory is at schema version {current}; this leadstream knows up to {SCHEMA_VERSION}"
        )
    for version in range(current + 1, SCHEMA_VERSION + 1):
        conn.executescript(f"BEGIN; {MIGRATIONS[version - 1]}; PRAGMA user_version = {version}; COMMIT;")


def _size(path: Path) -> int:
    stamp = _stamp(path)
    return stamp[0] if stamp else 0


def _stamp(path: Path) -> tuple[int, int] | None:
    """A file's size and time (None: not there), to tell that it changed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


class SqliteStore(Store):
    def __init__(
        self, path: str | Path, *, read_threads: int = 4, checkpoint_bytes: int = CHECKPOINT_EVERY_BYTES,
        follow_head: bool = False, commit_interval: float = 0.0,
    ) -> None:  # fmt: skip
        self.path = Path(path)
        self.wal = self.path.with_name(self.path.name + "-wal")
        self.commit_interval = commit_interval  # seconds patient writes wait for others to join them
        self.follow_head = follow_head  # another process appends: poll the committed head
        self._stop_following = threading.Event()
        self.checkpoint_bytes = checkpoint_bytes
        self._read_threads = read_threads
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._local = threading.local()
        self._last = 0  # the writer thread's: highest position handed out
        self._head = LogHead()  # the event loop's: highest position committed, and its waiters
        self.stats = _WriterStats()
        self._closed = True
        # Why the last commit failed (SQLite's words), None once one succeeds: /healthz reads it.
        self.failure: str | None = None

    # -- lifecycle ----------------------------------------------------------------------------------
    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(self.path)
        _migrate(conn)
        conn.execute("PRAGMA wal_autocheckpoint=0")  # the writer checkpoints, on its own schedule
        conn.execute(f"PRAGMA journal_size_limit={64 * 1024 * 1024}")
        row = conn.execute("SELECT value FROM meta WHERE name='last_position'").fetchone()
        top = conn.execute("SELECT max(position) FROM events").fetchone()[0] or 0
        self._last = self._head.position = max(int(row[0]) if row else 0, top)
        self._writer_conn = conn
        self._writer = threading.Thread(target=self._write_loop, name="leadstream-sqlite-writer", daemon=True)
        # Fresh on every open: a close may have stopped the copier between an ask and its answer.
        self._copy_wanted = threading.Event()  # the writer asks the copier for a pass over the WAL…
        self._copied = threading.Event()  # …which says when it is done: the writer finishes the checkpoint
        self._copying = False  # the writer's: asked and not finished yet
        self._copied_all = True  # the copier's last pass: no reader held frames back
        self._stop_copying = False
        self._copier = threading.Thread(target=self._copy_loop, name="leadstream-sqlite-copier", daemon=True)
        self._copier.start()
        self._writer.start()
        self._readers = ThreadPoolExecutor(self._read_threads, thread_name_prefix="leadstream-sqlite-reader")
        self._closed = False
        if self.follow_head:
            self._stop_following.clear()
            self._follower = threading.Thread(target=self._follow_loop, name="leadstream-sqlite-follower", daemon=True)
            self._follower.start()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.follow_head:
            self._stop_following.set()
            await asyncio.to_thread(self._follower.join)
        self._jobs.put(None)
        await asyncio.to_thread(self._writer.join)
        self._readers.shutdown(wait=True)
        self._head.wake()

    # -- the writer thread --------------------------------------------------------------------------
    def _write_loop(self) -> None:
        conn = self._writer_conn
        self._synchronous = ""
        stopping = False
        while not stopping:
            wait = RECOVERY_PROBE_SECONDS if self.failure else COPY_LOOK if self._copying else None
            try:
                job = self._jobs.get(timeout=wait)
            except queue.Empty:  # idle: see whether the store can commit again, or finish a checkpoint
                if self.failure:
                    self._probe_commit(conn)
                else:
                    self._schedule_checkpoint(conn)
                continue
            if job is None:
                break
            group = [job]
            stopping = self._take_more(group)
            try:
                outcomes = self._commit_group(conn, group)
            except Exception as exc:  # never let the thread die: every later write would hang
                outcomes = [(None, self._failed(exc))] * len(group)
            self.stats.commits += 1  # counted before anyone hears of the commit
            self.stats.jobs += len(group)
            for j, (result, error) in zip(group, outcomes):
                if j.future is not None:
                    self._loop.call_soon_threadsafe(settle, j.future, result, error)
            if self.failure is None:
                self._schedule_checkpoint(conn)
        self._stop_copying = True
        self._copy_wanted.set()
        self._copier.join()
        with contextlib.suppress(sqlite3.Error):
            self._checkpoint(conn, truncate=True)
        conn.close()

    def _schedule_checkpoint(self, conn: sqlite3.Connection) -> None:
        """Once checkpoint_bytes are committed, ask the copier; once it is done, finish."""
        if self._copying and self.stats.unwritten >= COPY_BEHIND * self.checkpoint_bytes:
            self._copied.wait(BUSY_TIMEOUT_MS / 1000)  # the copier fell behind (starved of CPU): bound the WAL
        if self._copied.is_set():
            self._copied.clear()
            self._copying = False
            if self._copied_all or _size(self.wal) > WAL_LIMIT_BYTES:
                self._checkpoint(conn)
            else:  # readers held the copy back: not the whole of it here, ask again soon instead
                self.stats.unwritten = self.checkpoint_bytes // 2
        elif not self._copying and self.stats.unwritten >= self.checkpoint_bytes:
            self._copying = True
            self._copy_wanted.set()

    def _copy_loop(self) -> None:
        """The bulk of each checkpoint, on its own connection: PASSIVE copies the committed pages
        while the writer goes on committing (SQLite lets a checkpoint run beside a writer), then
        again over what came meanwhile while that keeps shrinking. Errors are left for the
        writer's own pass to meet and report."""
        conn = _connect(self.path)
        with contextlib.closing(conn):
            while True:
                self._copy_wanted.wait()
                self._copy_wanted.clear()
                if self._stop_copying:
                    return
                self._copied_all = True
                with contextlib.suppress(sqlite3.Error):
                    before = 0  # frames copied so far (the count starts again should the WAL restart)
                    for _ in range(COPY_PASSES):
                        _busy, log_pages, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                        self._copied_all = done >= log_pages
                        if (done - before) * COPY_PASSES < log_pages:  # little new to copy, or readers hold it back
                            break
                        before = done
                self._copied.set()

    def _take_more(self, group: list[_Job]) -> bool:
        """Add to ``group`` what queued up while the writer was busy. While every job of it is
        patient, also wait up to ``commit_interval`` for more (one short turn at the write lock for
        all), until one that someone waits on (an append, a source's call budget) ends the wait.
        True if told to stop."""
        deadline = time.monotonic() + self.commit_interval
        waiting = bool(self.commit_interval) and group[0].patient
        while len(group) < MAX_GROUP:
            try:
                more = self._jobs.get(timeout=max(0.0, deadline - time.monotonic()) if waiting else 0.0)
            except queue.Empty:
                return False
            if more is None:
                return True
            group.append(more)
            waiting = waiting and more.patient
        return False

    def _commit_group(self, conn: sqlite3.Connection, group: list[_Job]) -> list[tuple[Any, BaseException | None]]:
        # FULL fsyncs the WAL at commit (ingest durability); NORMAL survives a process crash,
        # which is all delivery state and attempt logs need.
        wanted = "FULL" if any(j.durable for j in group) else "NORMAL"
        if wanted != self._synchronous:
            conn.execute(f"PRAGMA synchronous={wanted}")
            self._synchronous = wanted
        outcomes: list[tuple[Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for j in group:
                conn.execute("SAVEPOINT job")
                try:
                    outcomes.append((j.run(conn), None))
                    conn.execute("RELEASE job")
                except (sqlite3.OperationalError, sqlite3.InternalError):  # disk full, I/O: none can commit
                    raise
                except Exception as exc:  # this job alone fails (an IntegrityError becomes a 409)
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((None, exc))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            return [(None, self._failed(exc, conn))] * len(group)
        if self.failure is not None:
            log.info("the embedded store commits again", after=self.failure)
            self.failure = None
        self.stats.unwritten += sum(max(j.written, JOB_BYTES) for j in group)  # only what was committed
        return outcomes

    def _failed(self, exc: BaseException, conn: sqlite3.Connection | None = None) -> Unavailable:
        """Roll back what is open, remember why (for /healthz) and say it to the callers."""
        if conn is not None and conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        reason = f"the embedded store cannot commit ({exc}); retry later"
        if self.failure is None:
            log.warning("the embedded store cannot commit", error=str(exc))
        self.failure = reason
        self.stats.failed_commits += 1
        return Unavailable(reason)

    def _probe_commit(self, conn: sqlite3.Connection) -> None:
        """A commit of its own (one meta row), so that health comes back without traffic."""
        self._commit_group(conn, [_Job(_touch_health, None, durable=False)])
        if self.failure is None and self.stats.unwritten:
            self._checkpoint(conn)

    def _checkpoint(self, conn: sqlite3.Connection, truncate: bool = False) -> None:
        """PASSIVE never waits for readers; if readers kept it from finishing and the WAL is
        large, TRUNCATE waits for them briefly so that the file cannot grow without bound.
        A checkpoint that fails (the database file cannot grow on a full disk) is tried again
        once half as much again is written; the WAL keeps every committed page meanwhile."""
        self.stats.checkpoints += 1
        started = time.monotonic()
        try:
            _busy, log_pages, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            size = _size(self.wal)
            passive = time.monotonic() - started
            if truncate or (done < log_pages and size > WAL_LIMIT_BYTES):
                # TRUNCATE waits for the readers of older frames while it holds the write lock, and
                # every write waits with it (10 s in a 10M drain, whose page reads never stop): it
                # waits a moment, copies what it can, and the next checkpoint tries again. Only on
                # closing or past WAL_PATIENT_BYTES does it wait as long as any write would.
                patient = truncate or size > WAL_PATIENT_BYTES
                conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS if patient else TRUNCATE_WAIT_MS}")
                try:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                finally:
                    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            took = time.monotonic() - started
            if took > SLOW_CHECKPOINT_SECONDS:  # every write of this process waited as long
                log.warning(
                    "slow WAL checkpoint", seconds=round(took, 2), passive_seconds=round(passive, 2),
                    wal_mb=round(size / 2**20), pages=log_pages, checkpointed=done,
                )  # fmt: skip
        except sqlite3.Error as exc:
            self.stats.failed_checkpoints += 1
            log.warning("WAL checkpoint failed; trying again later", error=str(exc))
            if truncate:
                raise
            self.stats.unwritten = self.checkpoint_bytes // 2  # not after every commit meanwhile
            return
        self.stats.unwritten = 0

    async def healthy(self) -> bool:
        return await self.health_problem() is None

    async def health_problem(self) -> str | None:
        if self._closed:
            return "the store is closed"
        if not self._writer.is_alive():  # cannot happen by design; say so should it ever
            return "the embedded store's writer thread stopped; restart the server"
        return self.failure

    def _write(
        self, run: Callable[[sqlite3.Connection], T], *, durable: bool = False, written: int = 0, patient: bool = False
    ) -> asyncio.Future[T]:
        if self._closed:
            raise Unavailable("the store is closed")
        future: asyncio.Future[T] = self._loop.create_future()
        self._jobs.put(_Job(run, future, durable, written, patient))
        return future

    # -- following another process's appends ---------------------------------------------------------
    def _follow_loop(self) -> None:
        conn = _connect(self.path)
        conn.execute("PRAGMA query_only=1")
        seen, pause = self._head.position, FOLLOW_FASTEST
        stamp, changed, looked = _stamp(self.wal), time.monotonic(), 0.0
        while not self._stop_following.wait(pause):
            now, before = time.monotonic(), stamp
            stamp = _stamp(self.wal)
            if stamp != before:
                changed = now
            elif now - changed >= FOLLOW_SETTLED and now - looked < FOLLOW_SURELY:
                pause = min(pause * 1.5, FOLLOW_SLOWEST)
                continue
            looked = now
            try:  # fetchall: the read transaction ends here (an open one would hold checkpoints back)
                rows = conn.execute("SELECT value FROM meta WHERE name='last_position'").fetchall()
            except sqlite3.Error:  # busy or briefly unreadable: look again later
                rows = []
            head = int(rows[0][0]) if rows else 0
            if head > seen:
                seen, pause = head, FOLLOW_FASTEST
                self._loop.call_soon_threadsafe(self._head.advance, head)
            else:
                pause = min(pause * 1.5, FOLLOW_SLOWEST)
        conn.close()

    # -- reads on the pool ------------------------------------------------------------------------------
    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _connect(self.path)
            conn.execute("PRAGMA query_only=1")
        return conn

    async def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        def run() -> list[Any]:
            return self._reader().execute(sql, params).fetchall()

        return await self._loop.run_in_executor(self._readers, run)

    async def _read_events(self, sql: str, params: Sequence[Any]) -> list[Event]:
        """Rows made Events on the reader thread: the event loop only gets the list."""

        def run() -> list[Event]:
            return [Event(*row) for row in self._reader().execute(sql, params)]

        return await self._loop.run_in_executor(self._readers, run)

    # -- the event log ------------------------------------------------------------------------------
    async def append(self, events: Sequence[Event]) -> list[int]:
        if not events:
            return []

        def run(conn: sqlite3.Connection) -> tuple[list[int], int]:
            # Another process of this data directory may have appended since (the delivery
            # process's sources): number after the committed head, read under the write lock.
            committed = conn.execute("SELECT value FROM meta WHERE name='last_position'").fetchone()
            self._last = max(self._last, int(committed[0]) if committed else 0)
            keys = [e.key for e in events]
            seen: set[str] = set()
            for start in range(0, len(keys), 900):
                part = keys[start : start + 900]
                marks = ",".join("?" * len(part))
                seen.update(r[0] for r in conn.execute(f"SELECT key FROM events WHERE key IN ({marks})", part))
            duplicates, fresh, position = number_fresh(events, seen, self._last, time.time_ns() // 1_000_000)
            if fresh:
                _insert_events(conn, fresh)
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('last_position', ?)", (position,))
            # Should the commit fail, these positions are skipped, never reused: harmless.
            self._last = position
            return duplicates, position

        written = sum(len(e.data) for e in events)
        duplicates, position = await self._write(run, durable=True, written=written)
        self._head.advance(position)  # the commit is on disk: readers may now go up to it
        return duplicates

    async def read(
        self, after: int, limit: int, *, stream: str | None = None, munchkin_id: str | None = None
    ) -> list[Event]:
        where, params = "position > ?", list[Any]([after])
        if stream is not None:
            where += " AND stream = ?"
            params.append(stream)
        if munchkin_id is not None:
            where += " AND munchkin_id = ?"
            params.append(munchkin_id)
        params.append(limit)
        sql = f"SELECT {READ_COLUMNS} FROM events WHERE {where} ORDER BY position LIMIT ?"
        return await self._read_events(sql, params)

    async def find_events(self, query: EventQuery, *, above: int, upto: int, limit: int) -> list[Event]:
        where, params = "position > ? AND position <= ?", list[Any]([above, upto])
        if query.munchkin_ids is not None:
            where += f" AND munchkin_id IN ({', '.join('?' * len(query.munchkin_ids))})"
            params.extend(sorted(query.munchkin_ids))
        if query.stream is not None:
            where += " AND stream = ?"
            params.append(query.stream)
        if query.etypes is not None:
            marks = ", ".join("?" * len(query.etypes))
            where += f" AND (etype IN ({marks}) OR type IN ({marks}))"
            params.extend([*sorted(query.etypes), *sorted(query.etypes)])
        if query.event_id is not None:
            where += " AND id = ?"
            params.append(query.event_id)
        if (lead := query.lead_bytes()) is not None:
            where += " AND stream = 'activity' AND instr(data, ?) > 0"
            params.append(lead)
        params.append(limit)
        sql = f"SELECT {READ_COLUMNS} FROM events WHERE {where} ORDER BY position DESC LIMIT ?"
        return await self._read_events(sql, params)

    async def last_position(self) -> int:
        return self._head.position

    async def first_position(self) -> int:
        rows = await self._query("SELECT min(position) FROM events")
        return rows[0][0] if rows[0][0] is not None else await self.last_position() + 1

    async def position_before(self, ingested_ms: int) -> int:
        # ingested_at rises with position: binary-search it through the primary key.
        rows = await self._query("SELECT min(position), max(position) FROM events")
        low, high = rows[0]
        if low is None:
            return await self.last_position()
        answer = low - 1
        while low <= high:
            middle = (low + high) // 2
            found = await self._query(
                "SELECT position, ingested_at FROM events WHERE position >= ? ORDER BY position LIMIT 1", [middle]
            )
            if not found or found[0][0] > high:
                high = middle - 1
                continue
            position, at = found[0]
            if at < ingested_ms:
                answer, low = position, position + 1
            else:
                high = middle - 1
        return answer

    async def wait_for_events(self, after: int, timeout: float) -> int:
        if self._head.position <= after and timeout > 0:
            with self._head.waiter(self._loop) as waiter, contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, timeout)
        return self._head.position

    # -- retention ----------------------------------------------------------------------------------
    async def _expired_upto(self, before_ms: int, limit: int) -> int | None:
        rows = await self._query(
            "SELECT max(position) FROM (SELECT position FROM events WHERE ingested_at < ? ORDER BY position LIMIT ?)",
            [before_ms, limit],
        )
        return int(rows[0][0]) if rows[0][0] is not None else None

    async def _delete_through(self, position: int) -> int:
        return await self._write(
            lambda conn: conn.execute("DELETE FROM events WHERE position <= ?", (position,)).rowcount
        )

    # -- subscriptions ------------------------------------------------------------------------------
    async def create_subscription(self, sub: StoredSubscription) -> None:
        marks = ",".join("?" * len(SUBSCRIPTION_COLUMNS))
        try:
            await self._write(
                lambda conn: conn.execute(
                    f"INSERT INTO subscriptions ({', '.join(SUBSCRIPTION_COLUMNS)}) VALUES ({marks})", sub.row()
                ),
                durable=True,
            )
        except sqlite3.IntegrityError:
            raise Conflict(f"a subscription with id {sub.id!r} exists already") from None

    async def get_subscription(self, sub_id: str) -> StoredSubscription | None:
        rows = await self._query(f"{SUBSCRIPTION_SELECT} WHERE id = ?", [sub_id])
        return StoredSubscription.from_row(rows[0]) if rows else None

    async def list_subscriptions(self, munchkin_id: str | None = None) -> list[StoredSubscription]:
        where, params = ("WHERE munchkin_id = ?", [munchkin_id]) if munchkin_id is not None else ("", [])
        rows = await self._query(f"{SUBSCRIPTION_SELECT} {where} ORDER BY created_at, id", params)
        return [StoredSubscription.from_row(row) for row in rows]

    async def update_control(
        self, sub_id: str, control: Control, *, expected_rev: int, config: bytes | None = None
    ) -> bool:
        sets = ", ".join(f"{column} = ?" for column in CONTROL_COLUMNS)
        values: list[Any] = list(control.values())
        if config is not None:
            sets += ", config = ?"
            values.append(config)

        def run(conn: sqlite3.Connection) -> bool:
            sql = f"UPDATE subscriptions SET {sets} WHERE id = ? AND control_rev = ?"
            return conn.execute(sql, (*values, sub_id, expected_rev)).rowcount == 1

        return bool(await self._write(run, durable=True))

    async def save_state(self, sub_id: str, state: bytes, applied: int) -> None:
        await self._write(
            lambda conn: conn.execute(
                "UPDATE subscriptions SET state = ?, applied_rev = ? WHERE id = ?", (state, applied, sub_id)
            ),
            patient=True,
        )

    async def subscriptions_revision(self) -> int:
        rows = await self._query("SELECT max(control_rev) FROM subscriptions")
        return rows[0][0] or 0

    # -- attempts and dead letters ------------------------------------------------------------------------
    async def record_attempt(
        self, sub_id: str, attempt: bytes, keep: int = 1000, *, trace: bytes | None = None
    ) -> None:
        packed = pack_trace(trace) if trace is not None else None

        def run(conn: sqlite3.Connection) -> None:
            seq = (
                conn.execute(
                    "INSERT INTO attempts (sub_id, doc, trace) VALUES (?, ?, ?)", (sub_id, attempt, packed)
                ).lastrowid
                or 0
            )
            if seq % 64 == 0:  # trim now and then, not on every insert
                conn.execute(
                    "DELETE FROM attempts WHERE sub_id = ? AND seq <= "
                    "(SELECT seq FROM attempts WHERE sub_id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                    (sub_id, sub_id, keep),
                )

        await self._write(run, patient=True)

    async def list_attempts(self, sub_id: str, limit: int) -> list[bytes]:
        rows = await self._query(
            "SELECT doc, trace FROM attempts WHERE sub_id = ? ORDER BY seq DESC LIMIT ?", [sub_id, limit]
        )
        return [with_trace(row[0], row[1]) for row in rows]

    async def dead_letter(self, sub_id: str, event: Event, reason: str) -> None:
        blob = msgspec.msgpack.encode(event)
        await self._write(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO dead_letters (sub_id, position, event, reason) VALUES (?,?,?,?)",
                (sub_id, event.position, blob, reason),
            ),
            durable=True,
        )

    async def dead_letters(self, sub_id: str, limit: int) -> list[tuple[Event, str]]:
        rows = await self._query(
            "SELECT event, reason FROM dead_letters WHERE sub_id = ? ORDER BY position LIMIT ?", [sub_id, limit]
        )
        return [(msgspec.msgpack.decode(blob, type=Event), reason) for blob, reason in rows]

    # -- API keys and the audit trail ----------------------------------------------------------------
    async def create_api_key(self, key_id: str, record: bytes) -> None:
        try:
            await self._write(
                lambda conn: conn.execute("INSERT INTO api_keys (id, record) VALUES (?, ?)", (key_id, record)),
                durable=True,
            )
        except sqlite3.IntegrityError:
            raise Conflict(f"an API key with id {key_id!r} exists already") from None

    async def update_api_key(self, key_id: str, record: bytes) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            return conn.execute("UPDATE api_keys SET record = ? WHERE id = ?", (record, key_id)).rowcount == 1

        return bool(await self._write(run, durable=True))

    async def api_keys(self) -> list[tuple[bytes, int]]:
        return [
            (bytes(record), used)
            for record, used in await self._query("SELECT record, used_at FROM api_keys ORDER BY id")
        ]

    async def mark_api_keys_used(self, used: dict[str, int]) -> None:
        if used:
            await self._write(
                lambda conn: conn.executemany(
                    "UPDATE api_keys SET used_at = max(used_at, ?) WHERE id = ?",
                    [(at, key_id) for key_id, at in used.items()],
                )
            )

    async def append_audit(self, entry: bytes, keep: int) -> int:
        def run(conn: sqlite3.Connection) -> int:
            seq = conn.execute("INSERT INTO audit (entry) VALUES (?)", (entry,)).lastrowid or 0
            conn.execute(
                "DELETE FROM audit WHERE seq <= ?", (seq - keep,)
            )  # by the primary key: the oldest one or none
            return seq

        return int(await self._write(run, durable=True))

    async def audit_entries(self, before: int | None, limit: int) -> list[tuple[int, bytes]]:
        rows = await self._query(
            "SELECT seq, entry FROM audit WHERE seq < ? ORDER BY seq DESC LIMIT ?",
            [before if before is not None else 2**62, limit],
        )
        return [(seq, bytes(entry)) for seq, entry in rows]

    # -- operator alerts ----------------------------------------------------------------------------------
    async def put_alert(self, alert_id: str, record: bytes) -> None:
        await self._write(
            lambda conn: conn.execute(
                "INSERT INTO alerts (id, record) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET record = excluded.record",
                (alert_id, record),
            ),
            durable=True,
        )

    async def alerts(self) -> list[tuple[str, bytes]]:
        return [
            (alert_id, bytes(record))
            for alert_id, record in await self._query("SELECT id, record FROM alerts ORDER BY seq")
        ]

    async def delete_alert(self, alert_id: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            conn.execute("DELETE FROM alert_outbox WHERE alert_id = ? AND state = 'pending'", (alert_id,))
            return conn.execute("DELETE FROM alerts WHERE id = ?", (alert_id,)).rowcount == 1

        return bool(await self._write(run, durable=True))

    async def enqueue_alert_messages(self, messages: Sequence[tuple[str | None, bytes]], now: int, keep: int) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO alert_outbox (alert_id, message, state, next_at, created_at) VALUES (?, ?, ?, ?, ?)",
                [
                    (alert_id, message, "pending" if alert_id else "recorded", now, now)
                    for alert_id, message in messages
                ],
            )
            conn.execute(
                "DELETE FROM alert_outbox WHERE state <> 'pending' AND seq <= "
                "(SELECT seq FROM alert_outbox ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                (keep,),
            )

        await self._write(run, durable=True)

    async def claim_alert_messages(self, now: int, hold_ms: int, limit: int) -> list[AlertMessage]:
        def run(conn: sqlite3.Connection) -> list[AlertMessage]:
            rows = conn.execute(
                f"SELECT {ALERT_MESSAGE_COLUMNS} FROM alert_outbox WHERE state = 'pending' AND next_at <= ? "
                "AND held_until <= ? ORDER BY seq LIMIT ?",
                (now, now, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE alert_outbox SET held_until = ? WHERE seq = ?", [(now + hold_ms, r[0]) for r in rows]
            )
            return [AlertMessage(r[0], r[1], bytes(r[2]), *r[3:]) for r in rows]

        return await self._write(run, durable=True)

    async def settle_alert_message(self, seq: int, state: str, attempts: int, next_at: int, error: str | None) -> None:
        await self._write(
            lambda conn: conn.execute(
                "UPDATE alert_outbox SET state = ?, attempts = ?, next_at = ?, last_error = ?, held_until = 0 "
                "WHERE seq = ?",
                (state, attempts, next_at, error, seq),
            ),
            durable=True,
        )

    async def alert_messages(self, limit: int, *, before: int | None = None) -> list[AlertMessage]:
        rows = await self._query(
            f"SELECT {ALERT_MESSAGE_COLUMNS} FROM alert_outbox WHERE seq < ? ORDER BY seq DESC LIMIT ?",
            [before if before is not None else 2**63 - 1, limit],
        )
        return [AlertMessage(r[0], r[1], bytes(r[2]), *r[3:]) for r in rows]

    # -- console sessions -----------------------------------------------------------------------------
    async def create_console_session(self, id_hash: bytes, key_id: str, record: bytes, now: float) -> None:
        await self._write(
            lambda conn: conn.execute(
                "INSERT INTO console_sessions VALUES (?, ?, ?, ?, ?)", (id_hash, key_id, record, now, now)
            ),
            durable=True,
        )

    async def console_session(self, id_hash: bytes) -> tuple[bytes, float, float] | None:
        rows = await self._query(
            "SELECT record, created_at, seen_at FROM console_sessions WHERE id_hash = ?", [id_hash]
        )
        return (bytes(rows[0][0]), rows[0][1], rows[0][2]) if rows else None

    async def touch_console_session(self, id_hash: bytes, seen_at: float) -> None:
        await self._write(  # not durable: a last-seen time lost in a crash only shortens an idle session
            lambda conn: conn.execute("UPDATE console_sessions SET seen_at = ? WHERE id_hash = ?", (seen_at, id_hash)),
            durable=False,
        )

    async def delete_console_session(self, id_hash: bytes) -> None:
        await self._write(
            lambda conn: conn.execute("DELETE FROM console_sessions WHERE id_hash = ?", (id_hash,)), durable=True
        )

    async def delete_console_sessions(self, *, key_id: str) -> int:
        return int(
            await self._write(
                lambda conn: conn.execute("DELETE FROM console_sessions WHERE key_id = ?", (key_id,)).rowcount,
                durable=True,
            )
        )

    async def purge_console_sessions(self, *, seen_before: float, created_before: float) -> int:
        return int(
            await self._write(
                lambda conn: (
                    conn.execute(
                        "DELETE FROM console_sessions WHERE seen_at < ? OR created_at < ?",
                        (seen_before, created_before),
                    ).rowcount
                ),
                durable=True,
            )
        )

    # -- settings ---------------------------------------------------------------------------------------
    async def get_setting(self, name: str) -> bytes | None:
        rows = await self._query("SELECT value FROM meta WHERE name = ?", [f"setting:{name}"])
        return bytes(rows[0][0]) if rows else None

    async def put_setting(self, name: str, value: bytes) -> None:
        await self._write(
            lambda conn: conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"setting:{name}", value)),
            durable=True,
        )

    async def settings(self, prefix: str) -> dict[str, bytes]:
        start = f"setting:{prefix}"
        rows = await self._query(
            "SELECT name, value FROM meta WHERE substr(name, 1, ?) = ? ORDER BY name", [len(start), start]
        )
        return {name[len("setting:") :]: bytes(value) for name, value in rows}

    # -- sources --------------------------------------------------------------------------------------
    async def create_source(self, source: StoredSource) -> None:
        marks = ",".join("?" * len(SOURCE_COLUMNS))
        try:
            await self._write(
                lambda conn: conn.execute(
                    f"INSERT INTO sources ({', '.join(SOURCE_COLUMNS)}) VALUES ({marks})", source.row()
                ),
                durable=True,
            )
        except sqlite3.IntegrityError:
            raise Conflict(f"a source with id {source.id!r} exists already") from None

    async def get_source(self, source_id: str) -> StoredSource | None:
        rows = await self._query(f"{SOURCE_SELECT} WHERE id = ?", [source_id])
        return StoredSource.from_row(rows[0]) if rows else None

    async def list_sources(self, munchkin_id: str | None = None) -> list[StoredSource]:
        where, params = ("WHERE munchkin_id = ?", [munchkin_id]) if munchkin_id is not None else ("", [])
        rows = await self._query(f"{SOURCE_SELECT} {where} ORDER BY created_at, id", params)
        return [StoredSource.from_row(row) for row in rows]

    async def update_source(self, source_id: str, config: bytes, paused: bool, *, expected_rev: int) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            sql = "UPDATE sources SET config = ?, paused = ?, rev = ? WHERE id = ? AND rev = ?"
            return conn.execute(sql, (config, paused, expected_rev + 1, source_id, expected_rev)).rowcount == 1

        return bool(await self._write(run, durable=True))

    async def delete_source(self, source_id: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            conn.execute("DELETE FROM source_checkpoints WHERE source_id = ?", (source_id,))
            return conn.execute("DELETE FROM sources WHERE id = ?", (source_id,)).rowcount == 1

        return bool(await self._write(run, durable=True))

    async def save_source_status(self, source_id: str, status: bytes) -> None:
        await self._write(lambda conn: conn.execute("UPDATE sources SET status = ? WHERE id = ?", (status, source_id)))

    async def source_checkpoints(self, source_id: str) -> dict[str, bytes]:
        rows = await self._query("SELECT grp, checkpoint FROM source_checkpoints WHERE source_id = ?", [source_id])
        return {group: bytes(checkpoint) for group, checkpoint in rows}

    async def save_source_checkpoint(self, source_id: str, group: str, checkpoint: bytes) -> None:
        await self._write(
            lambda conn: conn.execute(
                # not for a source deleted meanwhile (its poller may still be finishing a page)
                "INSERT OR REPLACE INTO source_checkpoints SELECT ?, ?, ? "
                "WHERE EXISTS (SELECT 1 FROM sources WHERE id = ?)",
                (source_id, group, checkpoint, source_id),
            ),
            durable=True,
        )

    async def reserve_api_call(
        self, munchkin_id: str, call_id: str, *, now: float, window: float, day_start: float,
        lease_seconds: float, admit: Callable[[CallCounts], bool],
    ) -> tuple[CallCounts, bool]:  # fmt: skip
        def run(conn: sqlite3.Connection) -> tuple[CallCounts, bool]:  # the writer thread: one at a time
            conn.execute(
                "DELETE FROM source_api_calls WHERE munchkin_id = ? AND reserved_at < ? AND finished_at <= ?",
                (munchkin_id, day_start, now - window),
            )
            counts = _call_counts(conn, munchkin_id, now, window, day_start)
            granted = admit(counts)
            if granted:
                conn.execute(
                    "INSERT INTO source_api_calls VALUES (?, ?, ?, ?)", (call_id, munchkin_id, now, now + lease_seconds)
                )
            return counts, granted

        return await self._write(run)

    async def api_call_counts(self, munchkin_id: str, *, now: float, window: float, day_start: float) -> CallCounts:
        return await self._loop.run_in_executor(
            self._readers, lambda: _call_counts(self._reader(), munchkin_id, now, window, day_start)
        )

    async def release_api_call(self, call_id: str, *, finished_at: float, counted: bool) -> None:
        params: tuple[Any, ...] = (finished_at, call_id) if counted else (call_id,)
        if counted:
            sql = "UPDATE source_api_calls SET finished_at = ? WHERE call_id = ?"
        else:
            sql = "DELETE FROM source_api_calls WHERE call_id = ?"
        await self._write(lambda conn: conn.execute(sql, params))

    async def block_api_calls(self, munchkin_id: str, until: float, reason: str) -> None:
        await self._write(
            lambda conn: conn.execute(
                "INSERT INTO source_api_blocks VALUES (?, ?, ?) ON CONFLICT (munchkin_id) DO UPDATE SET "
                "reason = CASE WHEN excluded.blocked_until > blocked_until THEN excluded.reason ELSE reason END, "
                "blocked_until = max(blocked_until, excluded.blocked_until)",
                (munchkin_id, until, reason),
            )
        )


def _touch_health(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT OR REPLACE INTO meta VALUES ('health_probe', ?)", (int(time.time()),))


def _call_counts(conn: sqlite3.Connection, munchkin_id: str, now: float, window: float, day_start: float) -> CallCounts:
    row = conn.execute(CALL_COUNTS_SQL.replace("$", "?"), (now, now - window, day_start, munchkin_id)).fetchone()
    block = conn.execute(
        "SELECT blocked_until, reason FROM source_api_blocks WHERE munchkin_id = ? AND blocked_until > ?",
        (munchkin_id, now),
    ).fetchone()
    return CallCounts(
        row[0] or 0, row[1] or 0, row[2] or 0, row[3], block[0] if block else None, block[1] if block else None
    )


@functools.cache
def _insert_sql(rows: int) -> str:
    return f"INSERT INTO events ({EVENT_COLUMNS}) VALUES " + ",".join(["(?,?,?,?,?,?,?,?,?,?,?)"] * rows)


def _insert_events(conn: sqlite3.Connection, events: list[Event]) -> None:
    """Up to INSERT_ROWS rows per statement, in chunks of powers of two (few statements to cache).
    One step per statement instead of one per row: the writer gives up and takes back the GIL
    once per chunk, which matters while the event loop keeps the GIL busy."""
    params = list(chain.from_iterable(map(astuple, events)))  # Event's fields are EVENT_COLUMNS, in order
    width = len(params) // len(events)
    done, rows = 0, INSERT_ROWS
    while done < len(events):
        while rows > len(events) - done:
            rows //= 2
        conn.execute(_insert_sql(rows), params[done * width : (done + rows) * width])
        done += rows
