"""The storage interface (SPEC §6). Nothing above it knows which backend is in use.

A backend implements the primitives marked abstract; the logic both share (which appended events
are duplicates and which positions the others take, the chunked purge, reading a tenant's page)
lives here once. Subscriptions are stored as opaque JSON documents (``config`` and ``state``
bytes) beside the columns the store itself reads or compares: id, munchkin id, and the typed
``Control`` record (what admins asked, and the revision the delivery state reflects), so the
subscription model can grow without touching either backend.

Positions: every stored event gets a position, strictly increasing in commit order and never
reused; a reader that has seen position P has seen every event at or below P (backends must make
this true even with several writers — see postgres.py).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from leadstream.events import Event


@dataclass(frozen=True, slots=True)
class Control:
    """What admins last asked of a subscription — its desired settings, beside the config document.

    ``rev`` rises with every admin change; each kind of change records the revision it was last
    asked at (0: never), and a replay where it moves the cursor. The node delivering the
    subscription applies every change asked after the revision its saved state reflects
    (``StoredSubscription.applied``), in the order asked; ``leadstream.subscriptions.control``
    says what each one does. Written only by admin commands, with compare-and-set on ``rev``.
    """

    rev: int = 0
    pause: int = 0
    resume: int = 0
    replay: int = 0
    patch: int = 0
    delete: int = 0
    replay_to: int = 0

    def values(self) -> tuple[int, ...]:
        """In the order of CONTROL_COLUMNS."""
        return (self.rev, self.pause, self.resume, self.replay, self.patch, self.delete, self.replay_to)


CONTROL_COLUMNS = ("control_rev", "pause_rev", "resume_rev", "replay_rev", "patch_rev", "delete_rev", "replay_to")
SUBSCRIPTION_COLUMNS = ("id", "munchkin_id", "config", "state", "created_at", *CONTROL_COLUMNS, "applied_rev")


@dataclass(slots=True)
class StoredSubscription:
    id: str
    munchkin_id: str
    config: bytes  # JSON document of the subscription's settings
    state: bytes  # JSON document of its delivery state (cursor, counters, …)
    created_at: int  # ms since the epoch
    control: Control = field(default_factory=Control)
    applied: int = 0  # the control revision ``state`` reflects (written with the state)

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> StoredSubscription:
        """From the columns of SUBSCRIPTION_COLUMNS, in that order."""
        return cls(row[0], row[1], bytes(row[2]), bytes(row[3]), row[4], Control(*row[5:12]), row[12])

    def row(self) -> tuple[Any, ...]:
        return (
            self.id,
            self.munchkin_id,
            self.config,
            self.state,
            self.created_at,
            *self.control.values(),
            self.applied,
        )


SOURCE_COLUMNS = ("id", "munchkin_id", "config", "status", "created_at", "rev", "paused")


@dataclass(slots=True)
class StoredSource:
    """A source (SPEC §10): its settings (JSON, secrets sealed), the status its runner last saved
    (JSON), and ``rev``, which rises with every admin change (compare-and-set)."""

    id: str
    munchkin_id: str
    config: bytes
    status: bytes  # b"{}" until a runner saved one
    created_at: int  # ms since the epoch
    rev: int = 0
    paused: bool = False

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> StoredSource:
        return cls(row[0], row[1], bytes(row[2]), bytes(row[3]), row[4], row[5], bool(row[6]))

    def row(self) -> tuple[Any, ...]:
        return (self.id, self.munchkin_id, self.config, self.status, self.created_at, self.rev, self.paused)


@dataclass(frozen=True, slots=True)
class CallCounts:
    """The API calls of one Munchkin ID at a moment (the budget's ledger, SPEC §10.1 limits):
    in flight (not finished yet), in the window (finished less than the window ago, or in
    flight), reserved today; the oldest finish time still in the window; a block (606, 607)."""

    in_flight: int
    in_window: int
    today: int
    oldest_finished: float | None
    blocked_until: float | None
    blocked_reason: str | None


# $1 now, $2 now - window, $3 the day's start, $4 the Munchkin ID (SQLite reads $N as ?N).
CALL_COUNTS_SQL = (
    "SELECT count(*) FILTER (WHERE finished_at > $1), count(*) FILTER (WHERE finished_at > $2), "
    "count(*) FILTER (WHERE reserved_at >= $3), min(finished_at) FILTER (WHERE finished_at > $2 AND finished_at <= $1) "
    "FROM source_api_calls WHERE munchkin_id = $4 AND (finished_at > $2 OR reserved_at >= $3)"
)


@dataclass(frozen=True, slots=True)
class AlertMessage:
    """One alert (a CloudEvent) on its way to one operator endpoint: a row of the alert outbox.

    ``state``: ``pending`` (to send at ``next_at``), ``sent``, ``failed`` (gave up), or
    ``recorded`` (no endpoint wanted it; kept so the console still shows it, ``alert_id`` None).
    """

    seq: int
    alert_id: str | None
    message: bytes
    state: str
    attempts: int = 0
    next_at: int = 0  # ms since the epoch
    created_at: int = 0
    last_error: str | None = None


ALERT_MESSAGE_COLUMNS = "seq, alert_id, message, state, attempts, next_at, created_at, last_error"


@dataclass(frozen=True, slots=True)
class EventQuery:
    """What the console's event browser looks for; every field left None matches everything.

    ``etypes``: any of these filter types or CloudEvents types; ``event_id``: the CloudEvents id
    (an activity's marketoGUID, an audit or notification id); ``lead_id``: activities of one lead."""

    munchkin_ids: frozenset[str] | None = None
    stream: str | None = None
    etypes: frozenset[str] | None = None
    event_id: str | None = None
    lead_id: int | None = None

    def lead_bytes(self) -> bytes | None:
        """How a lead id appears in an activity's stored ``data`` (events.py writes it as a string)."""
        return None if self.lead_id is None else b'"leadId":"%d",' % self.lead_id


TRACE_PACK_ABOVE = 1024  # bytes: a larger attempt trace is stored zlib-compressed


def pack_trace(trace: bytes) -> bytes:
    """An attempt's debug trace as stored: JSON (it starts with "{"), or zlib of it when large —
    error pages compress several-fold, and 64 kB bodies are what makes the attempt log big."""
    return zlib.compress(trace, 1) if len(trace) > TRACE_PACK_ABOVE else trace


def with_trace(doc: bytes, packed: bytes | None) -> bytes:
    """The attempt document with its trace spliced in as ``"trace"`` (documents are JSON objects)."""
    if not packed:
        return doc
    trace = packed if packed[:1] == b"{" else zlib.decompress(packed)
    return doc[:-1] + b',"trace":' + trace + b"}"


def number_fresh(events: Iterable[Event], seen: set[str], last: int, now_ms: int) -> tuple[list[int], list[Event], int]:
    """The append step both backends share: events whose key is in ``seen`` (or came earlier in
    ``events``) are duplicates; the others get the next positions after ``last`` and ingest time
    ``now_ms``. Returns the duplicates' indexes, the fresh events, and the last position taken."""
    duplicates: list[int] = []
    fresh: list[Event] = []
    position = last
    for index, event in enumerate(events):
        if event.key in seen:
            duplicates.append(index)
            continue
        seen.add(event.key)
        position += 1
        event.position, event.ingested_at = position, now_ms
        fresh.append(event)
    return duplicates, fresh, position


def settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """Complete a waiting writer's future, unless its caller has gone (cancelled) already."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class LogHead:
    """The highest committed position a backend knows of, and the ``wait_for_events`` callers
    waiting for it to move: ``advance`` wakes them all together."""

    def __init__(self, position: int = 0) -> None:
        self.position = position
        self._futures: set[asyncio.Future[None]] = set()

    def advance(self, position: int) -> None:
        if position > self.position:
            self.position = position
            self.wake()

    @contextlib.contextmanager
    def waiter(self, loop: asyncio.AbstractEventLoop) -> Iterator[asyncio.Future[None]]:
        future = loop.create_future()
        self._futures.add(future)
        try:
            yield future
        finally:
            self._futures.discard(future)

    def wake(self) -> None:
        for future in self._futures:
            if not future.done():
                future.set_result(None)
        self._futures.clear()


class Store(abc.ABC):
    """Async storage interface shared by the SQLite and PostgreSQL backends."""

    # -- lifecycle ------------------------------------------------------------------------------
    @abc.abstractmethod
    async def open(self) -> None:
        """Create or migrate the schema and start background machinery (writer thread, pools)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish pending writes, then release everything."""

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def healthy(self) -> bool:
        """False while the backend cannot take writes (for /healthz)."""
        return True

    async def health_problem(self) -> str | None:
        """Why the backend cannot take writes now (for /healthz), None when it can."""
        return None if await self.healthy() else "the store cannot take writes now"

    # -- the event log ------------------------------------------------------------------------------
    @abc.abstractmethod
    async def append(self, events: Sequence[Event]) -> list[int]:
        """Store events whose key is not already in the log; durable (fsync'd) on return.

        Sets ``position`` and ``ingested_at`` on the events it stores. Returns the indexes (into
        ``events``) of duplicates — keys already in the log or earlier in the same call — which
        are not stored. Raises ``Unavailable`` when the backend cannot commit now.
        """

    @abc.abstractmethod
    async def read(
        self, after: int, limit: int, *, stream: str | None = None, munchkin_id: str | None = None
    ) -> list[Event]:
        """Up to ``limit`` events with position > ``after``, in position order, optionally only
        those of one stream and tenant."""

    @abc.abstractmethod
    async def last_position(self) -> int:
        """The highest position a reader may read up to (0 for an empty log)."""

    @abc.abstractmethod
    async def first_position(self) -> int:
        """The oldest retained position; ``last_position() + 1`` when the log is empty."""

    @abc.abstractmethod
    async def position_before(self, ingested_ms: int) -> int:
        """The last position ingested strictly before ``ingested_ms`` (0 if none): a cursor set
        there replays everything ingested from that moment on."""

    @abc.abstractmethod
    async def wait_for_events(self, after: int, timeout: float) -> int:
        """Return ``last_position()`` once it is above ``after``, or after ``timeout`` seconds."""

    @abc.abstractmethod
    async def find_events(self, query: EventQuery, *, above: int, upto: int, limit: int) -> list[Event]:
        """Up to ``limit`` events matching ``query`` with ``above`` < position <= ``upto``, newest
        first (the console's event browser: the caller bounds the span it scans)."""

    async def read_page(self, after: int, limit: int, *, stream: str, munchkin_id: str) -> tuple[list[Event], int]:
        """A page of one stream and tenant's events above ``after``, and the position up to
        which that answer is complete (a short page is complete up to the head)."""
        top = await self.last_position()
        events = await self.read(after, limit, stream=stream, munchkin_id=munchkin_id)
        if len(events) == limit:
            return events, events[-1].position
        return events, max(top, events[-1].position if events else after, after)

    # -- retention --------------------------------------------------------------------------------
    @abc.abstractmethod
    async def _expired_upto(self, before_ms: int, limit: int) -> int | None:
        """The position of the ``limit``-th oldest event ingested before ``before_ms`` (or of
        the last such event if there are fewer); ``None`` when nothing has expired."""

    @abc.abstractmethod
    async def _delete_through(self, position: int) -> int:
        """Delete the events at or below ``position``; return how many went."""

    async def purge(self, before_ms: int, *, chunk: int = 5000) -> int:
        """Delete every event ingested before ``before_ms``, a chunk at a time so that ingest goes
        on in between. Positions rise with ingest time, so the expired events are always a prefix
        of the log. Returns how many events were deleted. (Subscriptions count what expires
        undelivered before this runs: ``Retention``.)"""
        deleted = 0
        while (upto := await self._expired_upto(before_ms, chunk)) is not None:
            deleted += await self._delete_through(upto)
        return deleted

    # -- subscriptions ----------------------------------------------------------------------------
    @abc.abstractmethod
    async def create_subscription(self, sub: StoredSubscription) -> None:
        """Raises ``Conflict`` if the id exists."""

    @abc.abstractmethod
    async def get_subscription(self, sub_id: str) -> StoredSubscription | None: ...

    @abc.abstractmethod
    async def list_subscriptions(self, munchkin_id: str | None = None) -> list[StoredSubscription]:
        """Oldest first (created_at, then id)."""

    @abc.abstractmethod
    async def update_control(
        self, sub_id: str, control: Control, *, expected_rev: int, config: bytes | None = None
    ) -> bool:
        """Compare-and-set: store ``control`` (and ``config``, when given) only if the stored
        control revision is still ``expected_rev``. False when another writer came first."""

    @abc.abstractmethod
    async def save_state(self, sub_id: str, state: bytes, applied: int) -> None:
        """Persist a subscription's delivery state and the control revision it reflects. Survives
        a process crash on return (the SQLite backend does not fsync it: after a power loss an
        older state may come back, which only means a batch is sent again)."""

    @abc.abstractmethod
    async def subscriptions_revision(self) -> int:
        """The highest control revision of any subscription: it rises whenever a subscription is
        created or an admin change is asked, so a node that follows it misses no change."""

    async def lease(self, node_id: str, ttl: float) -> set[str] | None:
        """Which subscriptions this node may deliver now. ``None``: all of them (a single node).
        Multi-node backends grant and renew time-limited leases here."""
        return None

    async def next_lease_expiry(self, node_id: str) -> float | None:
        """Seconds until the first lease held by another node runs out (then it may be free to
        take: a dead node's subscriptions move at that moment, not at the next renewal).
        ``None``: no such lease (or no leases at all)."""
        return None

    async def release_leases(self, node_id: str) -> None:
        """Give up this node's leases at once (a clean stop), and tell the other nodes."""
        return None

    def abort(self) -> None:
        """Drop every connection at once, finishing nothing (a stop that cannot wait)."""
        return None

    def on_cluster_change(self, callback: Callable[[str | None], None]) -> None:
        """Call ``callback`` (on this event loop) when another node asks a change of a subscription
        (with its id: the delivering node then applies it within milliseconds), or creates one or
        releases its leases (with None: the leases may move)."""
        return None

    # -- delivery attempts and dead letters --------------------------------------------------------
    @abc.abstractmethod
    async def record_attempt(
        self, sub_id: str, attempt: bytes, keep: int = 1000, *, trace: bytes | None = None
    ) -> None:
        """Append to the attempt log of a subscription, keeping the newest ``keep`` entries.
        ``trace``: the attempt's debug trace (a JSON object: request headers, the response), kept
        as long as the entry (``pack_trace``)."""

    @abc.abstractmethod
    async def list_attempts(self, sub_id: str, limit: int) -> list[bytes]:
        """Newest first, each with its trace spliced in (``with_trace``)."""

    @abc.abstractmethod
    async def dead_letter(self, sub_id: str, event: Event, reason: str) -> None:
        """Keep an event a subscription's endpoint refused for good (outside retention)."""

    @abc.abstractmethod
    async def dead_letters(self, sub_id: str, limit: int) -> list[tuple[Event, str]]: ...

    # -- API keys and the audit trail: a row each, so that no node's write is lost ------------------
    @abc.abstractmethod
    async def create_api_key(self, key_id: str, record: bytes) -> None: ...

    @abc.abstractmethod
    async def update_api_key(self, key_id: str, record: bytes) -> bool:
        """Replace a key's record (a revocation); False if there is no such key."""

    @abc.abstractmethod
    async def api_keys(self) -> list[tuple[bytes, int]]:
        """Every key record, with the last time it was used (ms; 0: never)."""

    @abc.abstractmethod
    async def mark_api_keys_used(self, used: dict[str, int]) -> None:
        """Raise each key's last-used time to the given one (never lowers it)."""

    @abc.abstractmethod
    async def append_audit(self, entry: bytes, keep: int) -> int:
        """Append an audit entry; returns its sequence number. Only the newest ``keep`` are kept."""

    @abc.abstractmethod
    async def audit_entries(self, before: int | None, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` entries with a sequence number below ``before`` (None: the newest), newest first."""

    # -- sources (SPEC §10): settings, status, per-group checkpoints, the API-call ledger ---------
    @abc.abstractmethod
    async def create_source(self, source: StoredSource) -> None:
        """Raises ``Conflict`` if the id exists."""

    @abc.abstractmethod
    async def get_source(self, source_id: str) -> StoredSource | None: ...

    @abc.abstractmethod
    async def list_sources(self, munchkin_id: str | None = None) -> list[StoredSource]:
        """Oldest first (created_at, then id)."""

    @abc.abstractmethod
    async def update_source(self, source_id: str, config: bytes, paused: bool, *, expected_rev: int) -> bool:
        """Compare-and-set: store ``config`` and ``paused`` with ``rev = expected_rev + 1`` only
        if the stored revision is still ``expected_rev``."""

    @abc.abstractmethod
    async def delete_source(self, source_id: str) -> bool:
        """Delete a source and its checkpoints; False if there was none."""

    @abc.abstractmethod
    async def save_source_status(self, source_id: str, status: bytes) -> None:
        """The runner's status document (survives a process crash; not fsync'd)."""

    @abc.abstractmethod
    async def source_checkpoints(self, source_id: str) -> dict[str, bytes]:
        """Every group's checkpoint of a source, by group key."""

    @abc.abstractmethod
    async def save_source_checkpoint(self, source_id: str, group: str, checkpoint: bytes) -> None:
        """Durable on return: written after the page's events are in the log."""

    async def lease_sources(self, node_id: str, ttl: float) -> set[str] | None:
        """Which sources this node may run now (None: all of them, a single node); as ``lease``."""
        return None

    async def next_source_lease_expiry(self, node_id: str) -> float | None:
        """As ``next_lease_expiry``, for the sources' leases."""
        return None

    async def release_source_leases(self, node_id: str) -> None:
        """As ``release_leases``, for the sources' leases."""
        return None

    @abc.abstractmethod
    async def reserve_api_call(
        self, munchkin_id: str, call_id: str, *, now: float, window: float, day_start: float,
        lease_seconds: float, admit: Callable[[CallCounts], bool],
    ) -> tuple[CallCounts, bool]:  # fmt: skip
        """Atomically across every node: count the Munchkin ID's calls at ``now``, ask ``admit``,
        and when it agrees record call ``call_id`` as in flight until ``now + lease_seconds``.
        Returns the counts (before the call) and whether it was recorded. Prunes calls that no
        longer count."""

    @abc.abstractmethod
    async def api_call_counts(self, munchkin_id: str, *, now: float, window: float, day_start: float) -> CallCounts: ...

    @abc.abstractmethod
    async def release_api_call(self, call_id: str, *, finished_at: float, counted: bool) -> None:
        """The call finished at ``finished_at``; a call Marketo did not count is forgotten."""

    @abc.abstractmethod
    async def block_api_calls(self, munchkin_id: str, until: float, reason: str) -> None:
        """No call of the Munchkin ID until ``until`` (606, 607); a later block wins."""

    # -- operator alerts: the endpoints, and an outbox row per alert and endpoint -------------------
    @abc.abstractmethod
    async def put_alert(self, alert_id: str, record: bytes) -> None:
        """Create or replace an alert endpoint's record (its secret sealed)."""

    @abc.abstractmethod
    async def alerts(self) -> list[tuple[str, bytes]]:
        """Every alert endpoint, oldest first."""

    @abc.abstractmethod
    async def delete_alert(self, alert_id: str) -> bool:
        """Delete an alert endpoint and what is still pending for it; False if there is none."""

    @abc.abstractmethod
    async def enqueue_alert_messages(self, messages: Sequence[tuple[str | None, bytes]], now: int, keep: int) -> None:
        """Durably add outbox rows (alert id, message), due at once (alert id None: ``recorded``).
        Only the newest ``keep`` rows that are no longer pending are kept."""

    @abc.abstractmethod
    async def claim_alert_messages(self, now: int, hold_ms: int, limit: int) -> list[AlertMessage]:
        """Take up to ``limit`` pending rows that are due and not held by anyone, oldest first, and
        hold them for ``hold_ms``: in a cluster exactly one node sends each (until its hold lapses)."""

    @abc.abstractmethod
    async def settle_alert_message(self, seq: int, state: str, attempts: int, next_at: int, error: str | None) -> None:
        """Record how a claimed row's attempt went (``pending`` again: retry at ``next_at``); releases it."""

    @abc.abstractmethod
    async def alert_messages(self, limit: int, *, before: int | None = None) -> list[AlertMessage]:
        """The newest outbox rows, newest first (the console's recent alerts); ``before``: only
        rows older than that ``seq`` (the next page)."""

    # -- console sessions (keyed by the SHA-256 of the cookie's id; the id itself is never stored) --
    @abc.abstractmethod
    async def create_console_session(self, id_hash: bytes, key_id: str, record: bytes, now: float) -> None:
        """A new session signed in with ``key_id``, created and last seen ``now`` (epoch seconds)."""

    @abc.abstractmethod
    async def console_session(self, id_hash: bytes) -> tuple[bytes, float, float] | None:
        """The session's record, created and last-seen times, or None (signed out, expired, never)."""

    @abc.abstractmethod
    async def touch_console_session(self, id_hash: bytes, seen_at: float) -> None: ...

    @abc.abstractmethod
    async def delete_console_session(self, id_hash: bytes) -> None: ...

    @abc.abstractmethod
    async def delete_console_sessions(self, *, key_id: str) -> int:
        """Ends every session signed in with the key (it was revoked); how many there were."""

    @abc.abstractmethod
    async def purge_console_sessions(self, *, seen_before: float, created_before: float) -> int:
        """Drops the sessions idle since ``seen_before`` or created before ``created_before``."""

    # -- small settings (tenant catalogs, checkpoints, …) -----------------------------------------
    @abc.abstractmethod
    async def get_setting(self, name: str) -> bytes | None: ...

    @abc.abstractmethod
    async def put_setting(self, name: str, value: bytes) -> None: ...

    @abc.abstractmethod
    async def settings(self, prefix: str) -> dict[str, bytes]:
        """Every setting whose name starts with ``prefix``."""
