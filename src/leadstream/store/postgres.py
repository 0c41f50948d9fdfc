"""The PostgreSQL store: several leadstream nodes share one database (SPEC §6).

Appends from several nodes commit in parallel, and no reader ever skips one that commits late.
An append (one READ COMMITTED transaction per group of this node's appends) checks duplicates,
then calls ``leadstream_take_positions``, which holds one session-level advisory lock (the
*numbering lock*) for microseconds only — no I/O, released before the insert and the commit: under
it the transaction takes its transaction id, takes a shared advisory lock on APPENDING_TAG + that
id (held to its end), and takes its range of positions from the ``event_positions`` sequence and
its ingest time (never going back, whichever node's clock) from ``ingest_clock``. So appends' ids
rise with their positions. The rows go in with COPY, with one row in ``append_ranges`` (its id,
its last position), and the commit (durable, ``synchronous_commit``) runs beside the others'.

Readers are bounded by a *watermark*: first the bound, the lowest id of an append in progress
(from ``pg_locks``, which shows a lock as soon as it is taken) or else the next id to be given
out; then, in a later statement, the last position of the committed ranges whose id is below the
bound. Every position up to it is committed or never will be: an append with a lower position
has a lower id, so it either finished before the bound was taken, or was in progress and pulled
the bound below its own id. ``read`` and ``last_position`` never go past it, so a reader that has
read up to P never finds a row at or below P later. Only appends count — a long transaction
elsewhere on the server does not hold the log back (as ``pg_snapshot_xmin`` would). A rolled-back
append leaves a gap in positions (readers do not mind); positions are never reused, since the
sequences' WAL is flushed by any commit that used them. ``append_ranges`` is pruned below the
watermark every second.

The event log is partitioned by ingest day (UTC, on ``ingested_at`` in ms). Today's and
tomorrow's partitions are created ahead, on open and then every ``maintenance_interval``.
Idempotency keys are unique per partition by a unique index. Two nodes appending the same new
key at once: the second fails on the index when the first commits, and its group is tried again,
when its duplicate check sees the key (across a midnight, two partitions, both could be stored).

Retention drops whole partitions: a day's partition goes once its whole day is older than the
cutoff, so with a retention of a day or more an event lives up to one day longer than
``--retention``. A retention shorter than a day (tests, demos) would keep events far too long that
way, so then the rows of the day still partly inside retention are deleted too, as the base
class does.

Leases (of subscriptions, and the same way of sources: ``LeaseKind``): every node that calls
``lease`` records itself in ``nodes``; a node is live while it has called within the TTL. Each
node holds at most ``ceil(subscriptions / live nodes)`` leases, renews
those on each call, takes free or expired ones up to that share, and stops renewing (without
releasing) those above it, so another node can take them only after they expire. A node that
stops cleanly deletes its leases and says so on the cluster channel (NOTIFY), which also carries
subscription creations and admin changes, so the delivering node acts on them at once.

Connection loss: every method raises ``Unavailable`` while the database cannot be reached. The
first failure marks the store down; calls then fail fast while one probe task reconnects with
backoff, and ``healthy()`` is False until it succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import msgspec
from prometheus_client import Counter

from leadstream.errors import Conflict, Invalid, Unavailable
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

DAY_MS = 86_400_000
NOW_MS = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"

# Advisory lock ids, in the namespace hashtext(current_schema()) so that clusters in different
# schemas of one database do not serialize each other.
SCHEMA_LOCK, LOG_LOCK, LEASE_LOCK, SOURCE_LEASE_LOCK, PARTITION_LOCK = 0, 1, 2, 3, 4


@dataclass(frozen=True, slots=True)
class LeaseKind:
    """What is leased: the rows of ``leased``, each by its id, to nodes in ``table`` (keyed by ``key``)."""

    leased: str
    table: str
    key: str
    lock: int


SUBSCRIPTION_LEASES = LeaseKind("subscriptions", "leases", "sub_id", LEASE_LOCK)
SOURCE_LEASES = LeaseKind("sources", "source_leases", "source_id", SOURCE_LEASE_LOCK)

MIGRATIONS = [
    # 1: the event log, subscriptions and everything around them.
    """
    CREATE TABLE log_head (
        one boolean PRIMARY KEY DEFAULT true CHECK (one),
        last_position bigint NOT NULL,
        last_ingested_at bigint NOT NULL
    );
    INSERT INTO log_head VALUES (true, 0, 0);
    CREATE TABLE events (
        position bigint NOT NULL,
        eventid text NOT NULL,
        stream text NOT NULL,
        munchkin_id text NOT NULL,
        etype text NOT NULL,
        type text NOT NULL,
        id text NOT NULL,
        time text NOT NULL,
        data bytea NOT NULL,
        key text NOT NULL,
        ingested_at bigint NOT NULL
    ) PARTITION BY RANGE (ingested_at);
    CREATE INDEX events_position ON events (position);
    CREATE INDEX events_tenant ON events (stream, munchkin_id, position);
    CREATE INDEX events_ingested ON events (ingested_at);
    CREATE TABLE subscriptions (
        id text PRIMARY KEY,
        munchkin_id text NOT NULL,
        config bytea NOT NULL,
        state bytea NOT NULL,
        created_at bigint NOT NULL
    );
    CREATE INDEX subscriptions_tenant ON subscriptions (munchkin_id, created_at);
    CREATE TABLE attempts (
        seq bigserial PRIMARY KEY,
        sub_id text NOT NULL,
        doc bytea NOT NULL
    );
    CREATE INDEX attempts_sub ON attempts (sub_id, seq);
    CREATE TABLE dead_letters (
        sub_id text NOT NULL,
        position bigint NOT NULL,
        event bytea NOT NULL,
        reason text NOT NULL,
        PRIMARY KEY (sub_id, position)
    );
    CREATE TABLE settings (name text PRIMARY KEY, value bytea NOT NULL);
    CREATE TABLE nodes (node_id text PRIMARY KEY, seen_at bigint NOT NULL);
    CREATE TABLE leases (
        sub_id text PRIMARY KEY,
        node_id text NOT NULL,
        expires_at bigint NOT NULL
    );
    """,
    # 2: the control record in columns of its own (version 1 spliced it into the config and state
    # documents); API keys, the audit trail and tenant catalogs a row each (version 1 kept them in
    # whole-document settings that two nodes writing at once could overwrite).
    """
    ALTER TABLE subscriptions
        ADD COLUMN control_rev bigint NOT NULL DEFAULT 0, ADD COLUMN pause_rev bigint NOT NULL DEFAULT 0,
        ADD COLUMN resume_rev bigint NOT NULL DEFAULT 0, ADD COLUMN replay_rev bigint NOT NULL DEFAULT 0,
        ADD COLUMN patch_rev bigint NOT NULL DEFAULT 0, ADD COLUMN delete_rev bigint NOT NULL DEFAULT 0,
        ADD COLUMN replay_to bigint NOT NULL DEFAULT 0, ADD COLUMN applied_rev bigint NOT NULL DEFAULT 0;
    CREATE INDEX subscriptions_control ON subscriptions (control_rev);
    UPDATE subscriptions SET
        control_rev = coalesce((d.config -> '_control' ->> 'rev')::bigint, 0),
        pause_rev = coalesce((d.config -> '_control' -> 'ops' ->> 'pause')::bigint, 0),
        resume_rev = coalesce((d.config -> '_control' -> 'ops' ->> 'resume')::bigint, 0),
        replay_rev = coalesce((d.config -> '_control' -> 'ops' ->> 'replay')::bigint, 0),
        patch_rev = coalesce((d.config -> '_control' -> 'ops' ->> 'patch')::bigint, 0),
        delete_rev = coalesce((d.config -> '_control' -> 'ops' ->> 'delete')::bigint, 0),
        replay_to = coalesce((d.config -> '_control' ->> 'replayTo')::bigint, 0),
        config = convert_to((d.config - '_control')::text, 'UTF8'),
        applied_rev = coalesce((d.state ->> 'applied')::bigint, 0),
        state = convert_to((d.state - 'applied')::text, 'UTF8')
    FROM (SELECT id, convert_from(config, 'UTF8')::jsonb AS config, convert_from(state, 'UTF8')::jsonb AS state
          FROM subscriptions) AS d
    WHERE d.id = subscriptions.id;
    CREATE TABLE api_keys (id text PRIMARY KEY, record bytea NOT NULL, used_at bigint NOT NULL DEFAULT 0);
    INSERT INTO api_keys (id, record, used_at)
        SELECT substr(k.name, 8), k.value,
               coalesce((SELECT convert_from(u.value, 'UTF8')::bigint FROM settings u
                         WHERE u.name = k.name || '.used'), 0)
        FROM settings k WHERE k.name LIKE 'apikey.%' AND k.name NOT LIKE '%.used';
    CREATE TABLE audit (seq bigserial PRIMARY KEY, entry bytea NOT NULL);
    INSERT INTO audit (seq, entry)
        SELECT (e ->> 'seq')::bigint, convert_to((e - 'seq')::text, 'UTF8')
        FROM settings, jsonb_array_elements(convert_from(settings.value, 'UTF8')::jsonb) AS e
        WHERE settings.name LIKE 'audit.page.%'
        ON CONFLICT DO NOTHING;
    SELECT setval(pg_get_serial_sequence('audit', 'seq'), (SELECT max(seq) FROM audit))
        WHERE EXISTS (SELECT FROM audit);
    INSERT INTO settings (name, value)
        SELECT DISTINCT ON (name) name, value FROM (
            SELECT 'catalog.activity.' || tenant.key || '.' || (entry.value ->> 'id') AS name,
                   convert_to(entry.value::text, 'UTF8') AS value, entry.ordinality
            FROM settings,
                 jsonb_each(convert_from(settings.value, 'UTF8')::jsonb) AS tenant,
                 jsonb_array_elements(tenant.value) WITH ORDINALITY AS entry
            WHERE settings.name = 'catalog.tenants') AS entries
        ORDER BY name, ordinality DESC
        ON CONFLICT (name) DO UPDATE SET value = excluded.value;
    DELETE FROM settings WHERE name LIKE 'apikey%' OR name LIKE 'audit.%'
        OR name IN ('catalog.tenants', 'subscriptions.revision');
    """,
    # 3: each attempt's debug trace (request headers, response status, headers and body start).
    """
    ALTER TABLE attempts ADD COLUMN trace bytea;
    """,
    # 4: sources (SPEC §10), their per-group checkpoints and leases, and the API-call ledger of each Munchkin ID.
    """
    CREATE TABLE sources (
        id text PRIMARY KEY, munchkin_id text NOT NULL, config bytea NOT NULL, status bytea NOT NULL,
        created_at bigint NOT NULL, rev bigint NOT NULL DEFAULT 0, paused boolean NOT NULL DEFAULT false);
    CREATE INDEX sources_tenant ON sources (munchkin_id, created_at);
    CREATE TABLE source_checkpoints (
        source_id text NOT NULL, grp text NOT NULL, checkpoint bytea NOT NULL, PRIMARY KEY (source_id, grp));
    CREATE TABLE source_leases (source_id text PRIMARY KEY, node_id text NOT NULL, expires_at bigint NOT NULL);
    CREATE TABLE source_api_calls (
        call_id text PRIMARY KEY, munchkin_id text NOT NULL,
        reserved_at double precision NOT NULL, finished_at double precision NOT NULL);
    CREATE INDEX source_api_calls_finished ON source_api_calls (munchkin_id, finished_at);
    CREATE INDEX source_api_calls_reserved ON source_api_calls (munchkin_id, reserved_at);
    CREATE TABLE source_api_blocks (
        munchkin_id text PRIMARY KEY, blocked_until double precision NOT NULL, reason text NOT NULL);
    """,
    # 5: operator alerts: the endpoints, and the outbox (a row per alert and endpoint).
    """
    CREATE TABLE alerts (seq bigserial PRIMARY KEY, id text NOT NULL UNIQUE, record bytea NOT NULL);
    CREATE TABLE alert_outbox (
        seq bigserial PRIMARY KEY,
        alert_id text,
        message bytea NOT NULL,
        state text NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        next_at bigint NOT NULL,
        held_until bigint NOT NULL DEFAULT 0,
        created_at bigint NOT NULL,
        last_error text
    );
    CREATE INDEX alert_outbox_due ON alert_outbox (state, next_at);
    """,
    # 6: appends without a cluster-wide lock held to commit (see the module docstring): positions
    # and ingest times from sequences, each append's range kept with its transaction id.
    """
    CREATE SEQUENCE event_positions MINVALUE 0 START 0;
    SELECT setval('event_positions', (SELECT last_position FROM log_head));
    CREATE SEQUENCE ingest_clock MINVALUE 0 START 0;
    SELECT setval('ingest_clock', (SELECT last_ingested_at FROM log_head));
    CREATE TABLE append_ranges (xid bigint NOT NULL, last bigint NOT NULL);
    CREATE INDEX append_ranges_last ON append_ranges (last);
    INSERT INTO append_ranges SELECT pg_current_xact_id()::text::bigint, last_position FROM log_head;
    DROP TABLE log_head;
    CREATE FUNCTION leadstream_take_positions(
        n bigint, lock_space integer, OUT first bigint, OUT at bigint, OUT waited double precision
    ) LANGUAGE plpgsql AS $$
    DECLARE
        xid bigint;
        asked timestamptz := clock_timestamp();
    BEGIN
        PERFORM pg_advisory_lock(lock_space, 1);
        waited := extract(epoch FROM clock_timestamp() - asked);  -- seconds spent waiting for other appends
        -- The transaction id, taken in the same order as the positions; readers see the append in
        -- progress by this lock until it commits.
        xid := pg_current_xact_id()::text::bigint;
        PERFORM pg_advisory_xact_lock_shared((19539::bigint << 48) | xid);  -- APPENDING_TAG
        first := nextval('event_positions');
        IF n > 1 THEN
            PERFORM setval('event_positions', first + n - 1);
        END IF;
        at := greatest((extract(epoch FROM clock_timestamp()) * 1000)::bigint, (SELECT last_value FROM ingest_clock));
        PERFORM setval('ingest_clock', at);
        PERFORM pg_advisory_unlock(lock_space, 1);
    END
    $$;
    """,
    # 7: console sessions, so that any node answers a signed-in browser (the id's digest, never the id).
    """
    CREATE TABLE console_sessions (
        id_hash bytea PRIMARY KEY, key_id text NOT NULL, record bytea NOT NULL,
        created_at double precision NOT NULL, seen_at double precision NOT NULL);
    CREATE INDEX console_sessions_key ON console_sessions (key_id);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
SUBSCRIPTION_SELECT = f"SELECT {', '.join(SUBSCRIPTION_COLUMNS)} FROM subscriptions"
SOURCE_SELECT = f"SELECT {', '.join(SOURCE_COLUMNS)} FROM sources"

EVENT_COLUMNS = (
    "position",
    "eventid",
    "stream",
    "munchkin_id",
    "etype",
    "type",
    "id",
    "time",
    "data",
    "key",
    "ingested_at",
)
# Reads skip the key (only ingest needs it): '' stands in its place, keeping Event(*row) positional.
READ_COLUMNS = "eventid, stream, munchkin_id, etype, type, id, time, data, '', position, ingested_at"
MAX_GROUP_EVENTS = 20_000
# Readers' watermark (see the module docstring). First, in a statement of its own, the bound:
# the oldest transaction id of an append in progress, found by the advisory lock each append
# holds on APPENDING_TAG + its transaction id (pg_locks shows locks as they are taken, not as of
# a snapshot), or else the next transaction id to be given out.
APPENDING_TAG = 0x4C53  # 'LS': the top 16 bits of the key, so no other lock looks like an append
APPEND_BOUND = f"""
SELECT least(
    pg_snapshot_xmax(pg_current_snapshot())::text::bigint,
    (SELECT min(((classid::bigint & 65535) << 32) | objid::bigint) FROM pg_locks
     WHERE locktype = 'advisory' AND objsubid = 1 AND classid::bigint >> 16 = {APPENDING_TAG}
       AND database = (SELECT oid FROM pg_database WHERE datname = current_database())))
"""


def watermark(bound: str) -> str:
    """Then, in a later statement (a later snapshot): the end of the last range whose append
    took its transaction id below the bound — every position up to it is committed or never
    will be."""
    return f"(SELECT coalesce(max(last), 0) FROM append_ranges WHERE xid < {bound})"


APPEND_LOCK_WAIT = Counter(
    "leadstream_append_lock_wait_seconds",
    "Time appends waited for each other (for the numbering lock, the one step they share), PostgreSQL",
)
PRUNE_RANGES_EVERY = 1.0  # seconds: the append ranges below the watermark are dropped this often

# What "the database cannot be reached" looks like from asyncpg.
COMMAND_TIMEOUT = 30.0  # seconds; purge chunks and appends finish far sooner

CONNECTION_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now, canceled
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.InterfaceError,  # connection or pool closed under us
    # The server's "terminating connection" arriving in the middle of a statement (a restart):
    # "cannot switch to state …; another operation is in progress".
    asyncpg.InternalClientError,
)


def _why(exc: BaseException | None) -> str:
    """A connection error in a client's words: asyncpg's own states ("cannot call
    Transaction.__aexit__()…") mean only that the connection went away."""
    if isinstance(exc, (asyncpg.InterfaceError, asyncpg.InternalClientError)):
        return "the connection was lost"
    return str(exc) or type(exc).__name__


def partition_name(day: int) -> str:
    """The partition holding ingest day ``day`` (days since the epoch, UTC): ``events_p20261128``."""
    return "events_p" + datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y%m%d")


def partition_day(name: str) -> int:
    return int(datetime.strptime(name[len("events_p") :], "%Y%m%d").replace(tzinfo=UTC).timestamp()) // 86_400


def partition_ddl(day: int) -> str:
    name = partition_name(day)
    return (
        f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF events "
        f"FOR VALUES FROM ({day * DAY_MS}) TO ({(day + 1) * DAY_MS});"
        f"CREATE UNIQUE INDEX IF NOT EXISTS {name}_key ON {name} (key);"
    )


async def _migrate(conn: asyncpg.Connection) -> int:
    """Bring the schema up to SCHEMA_VERSION; one node at a time. Returns the version."""
    async with conn.transaction(isolation="read_committed"):
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema()), $1)", SCHEMA_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
        if current > SCHEMA_VERSION:
            raise RuntimeError(
                f"the database schema is at version {current}; this leadstream knows up to {SCHEMA_VERSION}: "
                "upgrade leadstream"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            await conn.execute(MIGRATIONS[version - 1])
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)
            log.info("database schema upgraded", version=version)
    return SCHEMA_VERSION


async def upgrade(dsn: str) -> int:
    """Create or migrate the schema at ``dsn`` (``leadstream db upgrade``); returns the version."""
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except CONNECTION_ERRORS as exc:
        raise Unavailable(f"cannot reach PostgreSQL: {exc}") from exc
    try:
        return await _migrate(conn)
    finally:
        await conn.close()


@dataclass(slots=True)
class _Append:
    events: Sequence[Event]
    future: asyncio.Future[list[int]]


class PostgresStore(Store):
    def __init__(
        self,
        dsn: str,
        *,
        node_id: str | None = None,
        min_pool: int = 1,
        max_pool: int = 10,
        poll_interval: float = 1.0,
        maintenance_interval: float = 3600.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.dsn = dsn
        self.node_id = node_id or "leadstream"
        self._min_pool, self._max_pool = min_pool, max_pool
        self._poll_interval = poll_interval  # wait_for_events re-checks this often without NOTIFY
        self._maintenance_interval = maintenance_interval
        self._connect_timeout = connect_timeout
        self._pool: asyncpg.Pool | None = None
        self._appends: asyncio.Queue[_Append | None] = asyncio.Queue()
        self._head = LogHead()  # the highest committed position this node has heard of, and its waiters
        self._days: set[int] = set()  # ingest days known to have a partition
        self._down: BaseException | None = None
        self._probe: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._cluster_listeners: list[Callable[[str | None], None]] = []
        self._pruned_at = 0.0
        self._closed = True

    # -- lifecycle ----------------------------------------------------------------------------------
    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._down = None
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=self._min_pool,
                max_size=self._max_pool,
                timeout=self._connect_timeout,
                # A statement stuck on a half-dead connection (after a network cut) fails in
                # time and marks the store down, instead of hanging a request or a shutdown.
                command_timeout=COMMAND_TIMEOUT,
                # Appends must be durable on commit, whatever the server default is.
                server_settings={"application_name": f"leadstream:{self.node_id}"[:63], "synchronous_commit": "on"},
            )
            async with self._pool.acquire() as conn:
                await _migrate(conn)
                self._lock_space = await conn.fetchval("SELECT hashtext(current_schema())")
                schema = await conn.fetchval("SELECT current_schema()")
                self._channel = f"leadstream_events_{schema}"[:63]
                self._cluster_channel = f"leadstream_cluster_{schema}"[:63]
                self._head.position = await self._watermark(conn)
            self._closed = False
            await self._ensure_partitions()
        except BaseException as exc:
            self._closed = True
            if self._pool is not None:
                self._pool.terminate()
                self._pool = None
            if isinstance(exc, (Unavailable, *CONNECTION_ERRORS)):
                raise Unavailable(f"cannot reach PostgreSQL: {exc}") from exc
            raise
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="leadstream-pg-writer"),
            asyncio.create_task(self._listen_loop(), name="leadstream-pg-listener"),
            asyncio.create_task(self._maintenance_loop(), name="leadstream-pg-maintenance"),
        ]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._appends.put_nowait(None)
        await self._tasks[0]  # the writer finishes what was queued before close
        for task in [*self._tasks[1:], self._probe]:
            if task is not None:
                task.cancel()
        await asyncio.gather(*self._tasks[1:], *([self._probe] if self._probe else []), return_exceptions=True)
        pool, self._pool = self._pool, None
        assert pool is not None
        try:
            await asyncio.wait_for(pool.close(), 10)
        except CONNECTION_ERRORS:
            pool.terminate()
        self._head.wake()

    def abort(self) -> None:
        self._closed = True
        for task in [*self._tasks, self._probe]:
            if task is not None:
                task.cancel()
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None

    async def healthy(self) -> bool:
        if self._closed or self._down is not None:
            return False
        try:
            await self._run(lambda conn: conn.fetchval("SELECT 1", timeout=self._connect_timeout))
        except Unavailable:
            return False
        return True

    async def health_problem(self) -> str | None:
        if await self.healthy():
            return None
        return "the store is closed" if self._closed else f"PostgreSQL is unreachable, retry ({_why(self._down)})"

    # -- connections, failures and the probe ------------------------------------------------------
    async def _run(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``work`` on a pooled connection; connection trouble becomes ``Unavailable``.
        (Not refused once close() has begun: the writer still commits what was queued.)"""
        if self._pool is None:
            raise Unavailable("the store is not open")
        if self._down is not None:
            raise Unavailable(f"PostgreSQL is unreachable, retry ({_why(self._down)})")
        try:
            async with self._pool.acquire(timeout=self._connect_timeout) as conn:
                try:
                    return await work(conn)
                except CONNECTION_ERRORS:
                    # asyncpg may hand a connection back to the pool in the middle of an operation
                    # when the server went away under it; the next user then gets "another
                    # operation is in progress". A connection that failed so is never reused.
                    conn.terminate()
                    raise
        except CONNECTION_ERRORS as exc:
            self._mark_down(exc)
            raise Unavailable(f"PostgreSQL is unreachable, retry ({_why(exc)})") from exc

    def _mark_down(self, exc: BaseException) -> None:
        if self._down is None and not self._closed:
            log.warning("PostgreSQL unreachable; reconnecting", error=str(exc) or type(exc).__name__)
            self._down = exc
            self._probe = asyncio.create_task(self._reconnect(), name="leadstream-pg-probe")

    async def _reconnect(self) -> None:
        delay = 0.05
        pool = self._pool
        assert pool is not None
        while not self._closed:
            await asyncio.sleep(delay)
            try:
                # The pool replaces connections it finds closed when they are acquired.
                async with pool.acquire(timeout=self._connect_timeout) as conn:
                    try:
                        await conn.fetchval("SELECT 1", timeout=self._connect_timeout)
                    except CONNECTION_ERRORS:
                        conn.terminate()  # as in _run: never handed out again
                        raise
            except CONNECTION_ERRORS as exc:
                self._down = exc
                delay = min(delay * 2, 5.0)
                continue
            self._down = None
            log.info("PostgreSQL reachable again")
            return

    # -- the event log: appends, grouped -----------------------------------------------------------
    async def append(self, events: Sequence[Event]) -> list[int]:
        if not events:
            return []
        if self._closed:
            raise Unavailable("the store is closed")
        future: asyncio.Future[list[int]] = self._loop.create_future()
        self._appends.put_nowait(_Append(events, future))
        return await future

    async def _write_loop(self) -> None:
        """One transaction at a time carries every append that queued up meanwhile."""
        stopping = False
        while not stopping:
            job = await self._appends.get()
            if job is None:
                break
            group, size = [job], len(job.events)
            while size < MAX_GROUP_EVENTS and not self._appends.empty():
                more = self._appends.get_nowait()
                if more is None:
                    stopping = True
                    break
                group.append(more)
                size += len(more.events)
            await self._commit(group)

    async def _commit(self, group: list[_Append], tries: int = 3) -> None:
        try:
            outcome = await self._run(lambda conn: self._append_tx(conn, group))
        except asyncpg.UniqueViolationError:
            if tries > 1:  # another node committed one of these keys meanwhile: its duplicate check now says so
                await self._commit(group, tries - 1)
                return
            raise
        except Unavailable as exc:
            for job in group:
                settle(job.future, None, exc)
            return
        except Exception as exc:
            if len(group) > 1:  # one bad append must not fail the others: each on its own
                for job in group:
                    await self._commit([job])
                return
            if isinstance(exc, asyncpg.DataError):  # e.g. a NUL character, which text cannot hold
                exc = Invalid(f"PostgreSQL cannot store these events: {exc}")
            settle(group[0].future, None, exc)
            return
        duplicates, _ = outcome
        self._head.wake()  # readers look again (the watermark may not cover this append yet)
        for job, dups in zip(group, duplicates):
            settle(job.future, dups, None)
        if time.monotonic() - self._pruned_at > PRUNE_RANGES_EVERY:
            self._pruned_at = time.monotonic()
            with contextlib.suppress(Unavailable):
                bound = await self._run(lambda conn: conn.fetchval(APPEND_BOUND))
                await self._relaxed(f"DELETE FROM append_ranges WHERE last < {watermark('$1')}", bound)

    async def _append_tx(self, conn: asyncpg.Connection, group: list[_Append]) -> tuple[list[list[int]], int]:
        keys = [e.key for job in group for e in job.events]
        async with conn.transaction(isolation="read_committed"):
            # Duplicates first: a read takes no transaction id, so the numbering below is the
            # transaction's first write (its id is taken in position order).
            seen = {r[0] for r in await conn.fetch("SELECT key FROM events WHERE key = ANY($1::text[])", keys)}
            fresh_count = len({key for key in keys if key not in seen})
            if not fresh_count:
                return [number_fresh(job.events, seen, 0, 0)[0] for job in group], 0
            first, at, waited = await conn.fetchrow(
                "SELECT * FROM leadstream_take_positions($1, $2)", fresh_count, self._lock_space
            )
            APPEND_LOCK_WAIT.inc(waited)
            day = at // DAY_MS
            if day not in self._days:  # the maintenance loop normally made it ahead of time
                await conn.execute(partition_ddl(day))
            position = first - 1
            duplicates: list[list[int]] = []
            rows = []
            for job in group:
                dups, fresh, position = number_fresh(job.events, seen, position, at)
                duplicates.append(dups)
                rows += [
                    (e.position, e.eventid, e.stream, e.munchkin_id, e.etype, e.type, e.id, e.time, e.data, e.key, at)
                    for e in fresh
                ]
            await conn.copy_records_to_table("events", records=rows, columns=EVENT_COLUMNS)
            await conn.execute(
                "WITH range AS (INSERT INTO append_ranges (xid, last) VALUES (pg_current_xact_id()::text::bigint, $1)) "
                "SELECT pg_notify($2, $3)",
                position,
                self._channel,
                str(position),
            )
        self._days.add(day)
        return duplicates, position

    # -- the event log: reads ---------------------------------------------------------------------------
    async def read(
        self, after: int, limit: int, *, stream: str | None = None, munchkin_id: str | None = None
    ) -> list[Event]:
        where, params = "position > $1", list[Any]([after])
        if stream is not None:
            params.append(stream)
            where += f" AND stream = ${len(params)}"
        if munchkin_id is not None:
            params.append(munchkin_id)
            where += f" AND munchkin_id = ${len(params)}"
        params.append(await self._run(lambda conn: conn.fetchval(APPEND_BOUND)))
        where += f" AND position <= {watermark(f'${len(params)}')}"  # never past an append in progress
        params.append(limit)
        sql = f"SELECT {READ_COLUMNS} FROM events WHERE {where} ORDER BY position LIMIT ${len(params)}"
        rows = await self._run(lambda conn: conn.fetch(sql, *params))
        return [Event(*row) for row in rows]

    async def find_events(self, query: EventQuery, *, above: int, upto: int, limit: int) -> list[Event]:
        params: list[Any] = [above, upto]

        def mark(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        where = "position > $1 AND position <= $2"
        if query.munchkin_ids is not None:
            where += f" AND munchkin_id = ANY({mark(sorted(query.munchkin_ids))}::text[])"
        if query.stream is not None:
            where += f" AND stream = {mark(query.stream)}"
        if query.etypes is not None:
            types = mark(sorted(query.etypes))
            where += f" AND (etype = ANY({types}::text[]) OR type = ANY({types}::text[]))"
        if query.event_id is not None:
            where += f" AND id = {mark(query.event_id)}"
        if (lead := query.lead_bytes()) is not None:
            where += f" AND stream = 'activity' AND position({mark(lead)}::bytea IN data) > 0"
        sql = f"SELECT {READ_COLUMNS} FROM events WHERE {where} ORDER BY position DESC LIMIT {mark(limit)}"
        rows = await self._run(lambda conn: conn.fetch(sql, *params))
        return [Event(*row) for row in rows]

    async def last_position(self) -> int:
        position: int = await self._run(self._watermark)
        self._head.advance(position)
        return position

    async def _watermark(self, conn: asyncpg.Connection) -> int:
        bound = await conn.fetchval(APPEND_BOUND)
        position: int = await conn.fetchval(f"SELECT {watermark('$1')}", bound)
        return position

    async def first_position(self) -> int:
        top = await self.last_position()
        return await self._run(
            lambda conn: conn.fetchval(
                "SELECT coalesce((SELECT min(position) FROM events WHERE position <= $1), $1 + 1)", top
            )
        )

    async def position_before(self, ingested_ms: int) -> int:
        # One statement, one snapshot: the first event ingested at or after the moment, minus
        # one; if there is none, everything retained came before it.
        top = await self.last_position()
        return await self._run(
            lambda conn: conn.fetchval(
                """
                SELECT coalesce(
                    (SELECT min(position) FROM events WHERE position <= $2 AND ingested_at =
                        (SELECT min(ingested_at) FROM events WHERE ingested_at >= $1 AND position <= $2)) - 1,
                    $2)
                """,
                ingested_ms,
                top,
            )
        )

    async def wait_for_events(self, after: int, timeout: float) -> int:
        """Wakes on NOTIFY (any node's append) or on this node's own commits, and re-checks every
        ``poll_interval`` in case a notification was lost. While the database is unreachable it
        waits out the timeout and returns the last position it knew."""
        deadline = self._loop.time() + timeout
        while True:
            with self._head.waiter(self._loop) as waiter:  # registered before the check: no lost wake-up
                try:
                    last = await self.last_position()
                except Unavailable:
                    last = self._head.position
                if last > after:
                    return last
                remaining = deadline - self._loop.time()
                if remaining <= 0 or self._closed:
                    return last
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter, min(remaining, self._poll_interval))

    async def _listen_loop(self) -> None:
        """Keep one connection LISTENing; reconnect with backoff when it drops."""
        delay = 0.05
        while not self._closed:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self.dsn, timeout=self._connect_timeout)
            except CONNECTION_ERRORS:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            try:
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(self._channel, self._on_notify)
                await conn.add_listener(self._cluster_channel, self._on_cluster_notify)
                delay = 0.05
                self._head.wake()  # events may have come while we were not listening
                while not lost.is_set():
                    try:
                        await asyncio.wait_for(lost.wait(), 30)
                    except TimeoutError:  # a silent network can hide a dead connection
                        await conn.fetchval("SELECT 1", timeout=self._connect_timeout)
            except CONNECTION_ERRORS:
                pass
            finally:
                conn.terminate()

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self._head.wake()  # an append committed: readers ask for the watermark again

    # -- partitions and retention ------------------------------------------------------------------
    async def _ensure_partitions(self) -> None:
        """Today's and tomorrow's partitions, made ahead so that appends never wait for DDL."""

        async def run(conn: asyncpg.Connection) -> None:
            today = await conn.fetchval(f"SELECT {NOW_MS}") // DAY_MS
            existing = {partition_day(name) for name in await self._partitions(conn)}
            wanted = {today, today + 1}
            if missing := wanted - existing:
                async with conn.transaction(isolation="read_committed"):
                    # Not the numbering lock: an append holds the log's table locks while it waits for that one.
                    await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", self._lock_space, PARTITION_LOCK)
                    for day in sorted(missing):
                        await conn.execute(partition_ddl(day))
            self._days = existing | wanted

        await self._run(run)

    async def _maintenance_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._maintenance_interval)
            with contextlib.suppress(Unavailable):  # the next round tries again
                await self._ensure_partitions()

    @staticmethod
    async def _partitions(conn: asyncpg.Connection) -> list[str]:
        """The event log's partitions, oldest first."""
        rows = await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'events'::regclass ORDER BY c.relname"
        )
        return [row[0] for row in rows]

    async def purge(self, before_ms: int, *, chunk: int = 5000) -> int:
        """Drop every partition whose whole day is older than ``before_ms``; when the retention
        is shorter than a day, also delete the expired rows of the partitions left (see the
        module docstring). Returns how many events went."""
        deleted = 0
        for name in await self._run(self._partitions):
            if (partition_day(name) + 1) * DAY_MS > before_ms:
                break
            deleted += await self._drop_partition(name)
        if time.time() * 1000 - before_ms < DAY_MS:
            deleted += await super().purge(before_ms, chunk=chunk)
        return deleted

    async def _drop_partition(self, name: str) -> int:
        async def drop(conn: asyncpg.Connection) -> int:
            async with conn.transaction(isolation="read_committed"):
                # The partition is locked first, so no append adds to it between count and drop.
                await conn.execute(f"LOCK TABLE {name} IN ACCESS EXCLUSIVE MODE")
                count: int = await conn.fetchval(f"SELECT count(*) FROM {name}")
                await conn.execute(f"DROP TABLE {name}")
            return count

        went = await self._run(drop)
        self._days.discard(partition_day(name))
        return went

    async def _expired_upto(self, before_ms: int, limit: int) -> int | None:
        return await self._run(
            lambda conn: conn.fetchval(
                "SELECT max(position) FROM "
                "(SELECT position FROM events WHERE ingested_at < $1 ORDER BY position LIMIT $2) AS expired",
                before_ms,
                limit,
            )
        )

    async def _delete_through(self, position: int) -> int:
        status = await self._run(lambda conn: conn.execute("DELETE FROM events WHERE position <= $1", position))
        return int(status.split()[-1])

    # -- subscriptions ----------------------------------------------------------------------------
    async def create_subscription(self, sub: StoredSubscription) -> None:
        marks = ", ".join(f"${i}" for i in range(1, len(SUBSCRIPTION_COLUMNS) + 1))
        n = len(SUBSCRIPTION_COLUMNS)
        sql = (
            f"WITH made AS (INSERT INTO subscriptions ({', '.join(SUBSCRIPTION_COLUMNS)}) VALUES ({marks}) "
            f"RETURNING id) SELECT pg_notify(${n + 1}, ${n + 2}) FROM made"
        )
        try:
            await self._run(lambda conn: conn.fetch(sql, *sub.row(), self._cluster_channel, f"{self.node_id} "))
        except asyncpg.UniqueViolationError:
            raise Conflict(f"subscription {sub.id} already exists") from None

    async def get_subscription(self, sub_id: str) -> StoredSubscription | None:
        row = await self._run(lambda conn: conn.fetchrow(f"{SUBSCRIPTION_SELECT} WHERE id = $1", sub_id))
        return StoredSubscription.from_row(row) if row else None

    async def list_subscriptions(self, munchkin_id: str | None = None) -> list[StoredSubscription]:
        where, params = ("WHERE munchkin_id = $1", [munchkin_id]) if munchkin_id is not None else ("", [])
        rows = await self._run(
            lambda conn: conn.fetch(f"{SUBSCRIPTION_SELECT} {where} ORDER BY created_at, id", *params)
        )
        return [StoredSubscription.from_row(row) for row in rows]

    async def update_control(
        self, sub_id: str, control: Control, *, expected_rev: int, config: bytes | None = None
    ) -> bool:
        values: list[Any] = [*control.values()]
        sets = ", ".join(f"{column} = ${i}" for i, column in enumerate(CONTROL_COLUMNS, 1))
        if config is not None:
            values.append(config)
            sets += f", config = ${len(values)}"
        n = len(values)
        # The delivering node hears of the change at once (NOTIFY, delivered on commit).
        sql = (
            f"WITH changed AS (UPDATE subscriptions SET {sets} WHERE id = ${n + 1} AND control_rev = ${n + 2} "
            f"RETURNING id) SELECT pg_notify(${n + 3}, ${n + 4}) FROM changed"
        )
        rows = await self._run(
            lambda conn: conn.fetch(
                sql, *values, sub_id, expected_rev, self._cluster_channel, f"{self.node_id} {sub_id}"
            )
        )
        return len(rows) == 1

    async def save_state(self, sub_id: str, state: bytes, applied: int) -> None:
        await self._relaxed(
            "UPDATE subscriptions SET state = $1, applied_rev = $2 WHERE id = $3", state, applied, sub_id
        )

    async def subscriptions_revision(self) -> int:
        return await self._run(lambda conn: conn.fetchval("SELECT coalesce(max(control_rev), 0) FROM subscriptions"))

    async def _relaxed(self, sql: str, *params: Any) -> None:
        """A write that must survive our crash but not the database's: no WAL flush wait (the
        same promise the SQLite store makes for delivery state)."""

        async def run(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.execute("SET LOCAL synchronous_commit = off")
                await conn.execute(sql, *params)

        await self._run(run)

    async def lease(self, node_id: str, ttl: float) -> set[str] | None:
        return await self._lease(SUBSCRIPTION_LEASES, node_id, ttl)

    async def next_lease_expiry(self, node_id: str) -> float | None:
        return await self._next_expiry(SUBSCRIPTION_LEASES, node_id)

    async def release_leases(self, node_id: str) -> None:
        await self._release(SUBSCRIPTION_LEASES, node_id)

    async def _lease(self, kind: LeaseKind, node_id: str, ttl: float) -> set[str]:
        """Record this node as live, renew the leases it holds up to its share, take free or expired ones."""
        ttl_ms = max(1, int(ttl * 1000))
        leases, key = kind.table, kind.key

        async def run(conn: asyncpg.Connection) -> set[str]:
            async with conn.transaction(isolation="read_committed"):
                await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", self._lock_space, kind.lock)
                now = await conn.fetchval(f"SELECT {NOW_MS}")
                await conn.execute(  # both kinds record the node: the later sighting wins
                    "INSERT INTO nodes (node_id, seen_at) VALUES ($1, $2) "
                    "ON CONFLICT (node_id) DO UPDATE SET seen_at = greatest(nodes.seen_at, excluded.seen_at)",
                    node_id,
                    now,
                )
                await conn.execute("DELETE FROM nodes WHERE seen_at < $1", now - 10 * ttl_ms)
                live = await conn.fetchval("SELECT count(*) FROM nodes WHERE seen_at > $1", now - ttl_ms)
                total = await conn.fetchval(f"SELECT count(*) FROM {kind.leased}")
                share = math.ceil(total / max(1, live))
                held = await conn.fetch(
                    f"SELECT {key} FROM {leases} WHERE node_id = $1 AND expires_at > $2 ORDER BY {key} LIMIT $3",
                    node_id,
                    now,
                    share,
                )
                free = await conn.fetch(
                    f"SELECT s.id FROM {kind.leased} s LEFT JOIN {leases} l ON l.{key} = s.id "
                    f"WHERE l.{key} IS NULL OR l.expires_at <= $1 ORDER BY s.id LIMIT $2",
                    now,
                    share - len(held),
                )
                mine = [row[0] for row in held] + [row[0] for row in free]
                await conn.execute(
                    f"INSERT INTO {leases} ({key}, node_id, expires_at) SELECT unnest($1::text[]), $2, $3 "
                    f"ON CONFLICT ({key}) DO UPDATE SET node_id = excluded.node_id, expires_at = excluded.expires_at",
                    mine,
                    node_id,
                    now + ttl_ms,
                )
            return set(mine)

        return await self._run(run)

    async def _next_expiry(self, kind: LeaseKind, node_id: str) -> float | None:
        sql = f"SELECT min(expires_at) - {NOW_MS} FROM {kind.table} WHERE node_id <> $1"
        ms = await self._run(lambda conn: conn.fetchval(sql, node_id))
        return None if ms is None else max(0.0, ms / 1000)

    async def _release(self, kind: LeaseKind, node_id: str) -> None:
        """Delete this node's leases of one kind and its sighting, and say so on the cluster channel
        (payload ``"<node> "``: the other nodes' leases may move now)."""

        async def run(conn: asyncpg.Connection) -> None:
            async with conn.transaction(isolation="read_committed"):
                await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", self._lock_space, kind.lock)
                await conn.execute(f"DELETE FROM {kind.table} WHERE node_id = $1", node_id)
                await conn.execute("DELETE FROM nodes WHERE node_id = $1", node_id)
                await conn.execute("SELECT pg_notify($1, $2)", self._cluster_channel, f"{node_id} ")

        await self._run(run)

    def on_cluster_change(self, callback: Callable[[str | None], None]) -> None:
        self._cluster_listeners.append(callback)

    def _on_cluster_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        """Payload: the asking node's id, a space, and the subscription changed ('' for a new one
        or a release)."""
        node_id, _, sub_id = payload.rpartition(" ")
        if node_id != self.node_id:
            for callback in self._cluster_listeners:
                callback(sub_id or None)

    # -- attempts and dead letters ------------------------------------------------------------------------
    async def record_attempt(
        self, sub_id: str, attempt: bytes, keep: int = 1000, *, trace: bytes | None = None
    ) -> None:
        # The statement does not see its own insert: trimming to keep - 1 older ones leaves keep.
        await self._relaxed(
            "WITH added AS (INSERT INTO attempts (sub_id, doc, trace) VALUES ($1, $2, $4)) "
            "DELETE FROM attempts WHERE sub_id = $1 AND seq <= "
            "(SELECT seq FROM attempts WHERE sub_id = $1 ORDER BY seq DESC LIMIT 1 OFFSET $3)",
            sub_id,
            attempt,
            max(keep - 1, 0),
            pack_trace(trace) if trace is not None else None,
        )

    async def list_attempts(self, sub_id: str, limit: int) -> list[bytes]:
        rows = await self._run(
            lambda conn: conn.fetch(
                "SELECT doc, trace FROM attempts WHERE sub_id = $1 ORDER BY seq DESC LIMIT $2", sub_id, limit
            )
        )
        return [with_trace(row[0], row[1]) for row in rows]

    async def dead_letter(self, sub_id: str, event: Event, reason: str) -> None:
        blob = msgspec.msgpack.encode(event)
        await self._run(
            lambda conn: conn.execute(
                "INSERT INTO dead_letters (sub_id, position, event, reason) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (sub_id, position) DO UPDATE SET event = excluded.event, reason = excluded.reason",
                sub_id,
                event.position,
                blob,
                reason,
            )
        )

    async def dead_letters(self, sub_id: str, limit: int) -> list[tuple[Event, str]]:
        rows = await self._run(
            lambda conn: conn.fetch(
                "SELECT event, reason FROM dead_letters WHERE sub_id = $1 ORDER BY position LIMIT $2", sub_id, limit
            )
        )
        return [(msgspec.msgpack.decode(blob, type=Event), reason) for blob, reason in rows]

    # -- operator alerts ----------------------------------------------------------------------------------
    async def put_alert(self, alert_id: str, record: bytes) -> None:
        await self._run(
            lambda conn: conn.execute(
                "INSERT INTO alerts (id, record) VALUES ($1, $2) "
                "ON CONFLICT (id) DO UPDATE SET record = excluded.record",
                alert_id,
                record,
            )
        )

    async def alerts(self) -> list[tuple[str, bytes]]:
        rows = await self._run(lambda conn: conn.fetch("SELECT id, record FROM alerts ORDER BY seq"))
        return [(row[0], row[1]) for row in rows]

    async def delete_alert(self, alert_id: str) -> bool:
        async def run(conn: asyncpg.Connection) -> bool:
            async with conn.transaction():
                await conn.execute("DELETE FROM alert_outbox WHERE alert_id = $1 AND state = 'pending'", alert_id)
                return bool(await conn.execute("DELETE FROM alerts WHERE id = $1", alert_id) == "DELETE 1")

        return await self._run(run)

    async def enqueue_alert_messages(self, messages: Sequence[tuple[str | None, bytes]], now: int, keep: int) -> None:
        async def run(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.executemany(
                    "INSERT INTO alert_outbox (alert_id, message, state, next_at, created_at) "
                    "VALUES ($1, $2, $3, $4, $4)",
                    [(alert_id, message, "pending" if alert_id else "recorded", now) for alert_id, message in messages],
                )
                await conn.execute(
                    "DELETE FROM alert_outbox WHERE state <> 'pending' AND seq <= "
                    "(SELECT seq FROM alert_outbox ORDER BY seq DESC LIMIT 1 OFFSET $1)",
                    keep,
                )

        await self._run(run)

    async def claim_alert_messages(self, now: int, hold_ms: int, limit: int) -> list[AlertMessage]:
        # SKIP LOCKED: nodes claiming at the same moment take different rows instead of waiting.
        rows = await self._run(
            lambda conn: conn.fetch(
                f"UPDATE alert_outbox SET held_until = $1 + $2 WHERE seq IN ("
                "SELECT seq FROM alert_outbox WHERE state = 'pending' AND next_at <= $1 AND held_until <= $1 "
                f"ORDER BY seq LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING {ALERT_MESSAGE_COLUMNS}",
                now,
                hold_ms,
                limit,
            )
        )
        return sorted((AlertMessage(*row) for row in rows), key=lambda m: m.seq)

    async def settle_alert_message(self, seq: int, state: str, attempts: int, next_at: int, error: str | None) -> None:
        await self._run(
            lambda conn: conn.execute(
                "UPDATE alert_outbox SET state = $2, attempts = $3, next_at = $4, last_error = $5, held_until = 0 "
                "WHERE seq = $1",
                seq,
                state,
                attempts,
                next_at,
                error,
            )
        )

    async def alert_messages(self, limit: int, *, before: int | None = None) -> list[AlertMessage]:
        rows = await self._run(
            lambda conn: conn.fetch(
                f"SELECT {ALERT_MESSAGE_COLUMNS} FROM alert_outbox WHERE seq < $1 ORDER BY seq DESC LIMIT $2",
                before if before is not None else 2**63 - 1,
                limit,
            )
        )
        return [AlertMessage(*row) for row in rows]

    # -- API keys and the audit trail ----------------------------------------------------------------
    async def create_api_key(self, key_id: str, record: bytes) -> None:
        try:
            await self._run(
                lambda conn: conn.execute("INSERT INTO api_keys (id, record) VALUES ($1, $2)", key_id, record)
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(f"an API key with id {key_id!r} exists already") from None

    async def update_api_key(self, key_id: str, record: bytes) -> bool:
        status: str = await self._run(
            lambda conn: conn.execute("UPDATE api_keys SET record = $1 WHERE id = $2", record, key_id)
        )
        return status == "UPDATE 1"

    async def api_keys(self) -> list[tuple[bytes, int]]:
        rows = await self._run(lambda conn: conn.fetch("SELECT record, used_at FROM api_keys ORDER BY id"))
        return [(row[0], row[1]) for row in rows]

    async def mark_api_keys_used(self, used: dict[str, int]) -> None:
        if used:
            await self._relaxed(
                "UPDATE api_keys SET used_at = greatest(used_at, u.at) "
                "FROM unnest($1::text[], $2::bigint[]) AS u(id, at) WHERE api_keys.id = u.id",
                list(used),
                list(used.values()),
            )

    async def append_audit(self, entry: bytes, keep: int) -> int:
        async def run(conn: asyncpg.Connection) -> int:
            seq: int = await conn.fetchval("INSERT INTO audit (entry) VALUES ($1) RETURNING seq", entry)
            await conn.execute(
                "DELETE FROM audit WHERE seq <= $1", seq - keep
            )  # by the primary key: the oldest one or none
            return seq

        return await self._run(run)

    async def audit_entries(self, before: int | None, limit: int) -> list[tuple[int, bytes]]:
        rows = await self._run(
            lambda conn: conn.fetch(
                "SELECT seq, entry FROM audit WHERE seq < $1 ORDER BY seq DESC LIMIT $2",
                before if before is not None else 2**62,
                limit,
            )
        )
        return [(row[0], row[1]) for row in rows]

    # -- console sessions -----------------------------------------------------------------------------
    async def create_console_session(self, id_hash: bytes, key_id: str, record: bytes, now: float) -> None:
        await self._run(
            lambda conn: conn.execute(
                "INSERT INTO console_sessions VALUES ($1, $2, $3, $4, $4)", id_hash, key_id, record, now
            )
        )

    async def console_session(self, id_hash: bytes) -> tuple[bytes, float, float] | None:
        row = await self._run(
            lambda conn: conn.fetchrow(
                "SELECT record, created_at, seen_at FROM console_sessions WHERE id_hash = $1", id_hash
            )
        )
        return (row[0], row[1], row[2]) if row is not None else None

    async def touch_console_session(self, id_hash: bytes, seen_at: float) -> None:
        await self._run(
            lambda conn: conn.execute("UPDATE console_sessions SET seen_at = $2 WHERE id_hash = $1", id_hash, seen_at)
        )

    async def delete_console_session(self, id_hash: bytes) -> None:
        await self._run(lambda conn: conn.execute("DELETE FROM console_sessions WHERE id_hash = $1", id_hash))

    async def delete_console_sessions(self, *, key_id: str) -> int:
        status = await self._run(lambda conn: conn.execute("DELETE FROM console_sessions WHERE key_id = $1", key_id))
        return int(status.split()[-1])

    async def purge_console_sessions(self, *, seen_before: float, created_before: float) -> int:
        status = await self._run(
            lambda conn: conn.execute(
                "DELETE FROM console_sessions WHERE seen_at < $1 OR created_at < $2", seen_before, created_before
            )
        )
        return int(status.split()[-1])

    # -- settings ---------------------------------------------------------------------------------------
    async def get_setting(self, name: str) -> bytes | None:
        return await self._run(lambda conn: conn.fetchval("SELECT value FROM settings WHERE name = $1", name))

    async def put_setting(self, name: str, value: bytes) -> None:
        await self._run(
            lambda conn: conn.execute(
                "INSERT INTO settings (name, value) VALUES ($1, $2) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                name,
                value,
            )
        )

    async def settings(self, prefix: str) -> dict[str, bytes]:
        rows = await self._run(
            lambda conn: conn.fetch(
                "SELECT name, value FROM settings WHERE starts_with(name, $1) ORDER BY name", prefix
            )
        )
        return {row[0]: row[1] for row in rows}

    # -- sources ------------------------------------------------------------------------------------------
    async def create_source(self, source: StoredSource) -> None:
        marks = ", ".join(f"${i}" for i in range(1, len(SOURCE_COLUMNS) + 1))
        sql = f"INSERT INTO sources ({', '.join(SOURCE_COLUMNS)}) VALUES ({marks})"
        try:
            await self._run(lambda conn: conn.execute(sql, *source.row()))
        except asyncpg.UniqueViolationError:
            raise Conflict(f"source {source.id} already exists") from None

    async def get_source(self, source_id: str) -> StoredSource | None:
        row = await self._run(lambda conn: conn.fetchrow(f"{SOURCE_SELECT} WHERE id = $1", source_id))
        return StoredSource.from_row(row) if row else None

    async def list_sources(self, munchkin_id: str | None = None) -> list[StoredSource]:
        where, params = ("WHERE munchkin_id = $1", [munchkin_id]) if munchkin_id is not None else ("", [])
        rows = await self._run(lambda conn: conn.fetch(f"{SOURCE_SELECT} {where} ORDER BY created_at, id", *params))
        return [StoredSource.from_row(row) for row in rows]

    async def update_source(self, source_id: str, config: bytes, paused: bool, *, expected_rev: int) -> bool:
        sql = "UPDATE sources SET config = $1, paused = $2, rev = $3 WHERE id = $4 AND rev = $5"
        status: str = await self._run(
            lambda conn: conn.execute(sql, config, paused, expected_rev + 1, source_id, expected_rev)
        )
        return status == "UPDATE 1"

    async def delete_source(self, source_id: str) -> bool:
        async def run(conn: asyncpg.Connection) -> bool:
            async with conn.transaction():
                await conn.execute("DELETE FROM source_checkpoints WHERE source_id = $1", source_id)
                await conn.execute("DELETE FROM source_leases WHERE source_id = $1", source_id)
                status: str = await conn.execute("DELETE FROM sources WHERE id = $1", source_id)
            return status == "DELETE 1"

        return await self._run(run)

    async def save_source_status(self, source_id: str, status: bytes) -> None:
        await self._relaxed("UPDATE sources SET status = $1 WHERE id = $2", status, source_id)

    async def source_checkpoints(self, source_id: str) -> dict[str, bytes]:
        rows = await self._run(
            lambda conn: conn.fetch("SELECT grp, checkpoint FROM source_checkpoints WHERE source_id = $1", source_id)
        )
        return {row[0]: row[1] for row in rows}

    async def save_source_checkpoint(self, source_id: str, group: str, checkpoint: bytes) -> None:
        await self._run(
            lambda conn: conn.execute(
                # not for a source deleted meanwhile (its poller may still be finishing a page)
                "INSERT INTO source_checkpoints SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM sources WHERE id = $1) "
                "ON CONFLICT (source_id, grp) DO UPDATE SET checkpoint = excluded.checkpoint",
                source_id,
                group,
                checkpoint,
            )
        )

    async def lease_sources(self, node_id: str, ttl: float) -> set[str] | None:
        return await self._lease(SOURCE_LEASES, node_id, ttl)

    async def next_source_lease_expiry(self, node_id: str) -> float | None:
        return await self._next_expiry(SOURCE_LEASES, node_id)

    async def release_source_leases(self, node_id: str) -> None:
        await self._release(SOURCE_LEASES, node_id)

    async def reserve_api_call(
        self, munchkin_id: str, call_id: str, *, now: float, window: float, day_start: float,
        lease_seconds: float, admit: Callable[[CallCounts], bool],
    ) -> tuple[CallCounts, bool]:  # fmt: skip
        async def run(conn: asyncpg.Connection) -> tuple[CallCounts, bool]:
            async with conn.transaction(isolation="read_committed"):
                # one reservation at a time per Munchkin ID, across every node
                await conn.execute(
                    "SELECT pg_advisory_xact_lock($1, hashtext('api-calls:' || $2::text))",
                    self._lock_space,
                    munchkin_id,
                )
                await conn.execute(
                    "DELETE FROM source_api_calls WHERE munchkin_id = $1 AND reserved_at < $2 AND finished_at <= $3",
                    munchkin_id,
                    day_start,
                    now - window,
                )
                counts = await _call_counts(conn, munchkin_id, now, window, day_start)
                granted = admit(counts)
                if granted:
                    await conn.execute(
                        "INSERT INTO source_api_calls VALUES ($1, $2, $3, $4)",
                        call_id,
                        munchkin_id,
                        now,
                        now + lease_seconds,
                    )
            return counts, granted

        return await self._run(run)

    async def api_call_counts(self, munchkin_id: str, *, now: float, window: float, day_start: float) -> CallCounts:
        return await self._run(lambda conn: _call_counts(conn, munchkin_id, now, window, day_start))

    async def release_api_call(self, call_id: str, *, finished_at: float, counted: bool) -> None:
        if counted:
            await self._run(
                lambda conn: conn.execute(
                    "UPDATE source_api_calls SET finished_at = $1 WHERE call_id = $2", finished_at, call_id
                )
            )
        else:
            await self._run(lambda conn: conn.execute("DELETE FROM source_api_calls WHERE call_id = $1", call_id))

    async def block_api_calls(self, munchkin_id: str, until: float, reason: str) -> None:
        await self._run(
            lambda conn: conn.execute(
                "INSERT INTO source_api_blocks VALUES ($1, $2, $3) ON CONFLICT (munchkin_id) DO UPDATE SET "
                "reason = CASE WHEN excluded.blocked_until > source_api_blocks.blocked_until "
                "THEN excluded.reason ELSE source_api_blocks.reason END, "
                "blocked_until = greatest(source_api_blocks.blocked_until, excluded.blocked_until)",
                munchkin_id,
                until,
                reason,
            )
        )


async def _call_counts(
    conn: asyncpg.Connection, munchkin_id: str, now: float, window: float, day_start: float
) -> CallCounts:
    row = await conn.fetchrow(CALL_COUNTS_SQL, now, now - window, day_start, munchkin_id)
    block = await conn.fetchrow(
        "SELECT blocked_until, reason FROM source_api_blocks WHERE munchkin_id = $1 AND blocked_until > $2",
        munchkin_id,
        now,
    )
    return CallCounts(row[0], row[1], row[2], row[3], block[0] if block else None, block[1] if block else None)
