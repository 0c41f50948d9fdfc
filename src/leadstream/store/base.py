"""The storage interface (SPEC §6). Nothing above it knows which backend is in use.

A backend implements the primitives marked abstract; the shared logic (the retention loop) lives
here once. Subscriptions are stored as opaque JSON documents (``config`` and ``state`` bytes)
beside the two columns the store itself needs (id, munchkin id), so the subscription model can
grow without touching either backend.

Positions: every stored event gets a position, strictly increasing in commit order and never
reused; a reader that has seen position P has seen every event at or below P (backends must make
this true even with several writers — see postgres.py).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from leadstream.events import Event


@dataclass(slots=True)
class StoredSubscription:
    id: str
    munchkin_id: str
    config: bytes  # JSON document of the subscription's settings
    state: bytes  # JSON document of its delivery state (cursor, counters, …)
    created_at: int  # ms since the epoch


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

    # -- retention --------------------------------------------------------------------------------
    @abc.abstractmethod
    async def _expired_upto(self, before_ms: int, limit: int) -> int | None:
        """The position of the ``limit``-th oldest event ingested before ``before_ms`` (or of
        the last such event if there are fewer); ``None`` when nothing has expired."""

    @abc.abstractmethod
    async def _delete_through(self, position: int) -> int:
        """Delete the events at or below ``position``; return how many went."""

    async def purge(
        self,
        before_ms: int,
        on_expire: Callable[[list[Event]], None],
        *,
        count_after: int,
        chunk: int = 5000,
    ) -> int:
        """Delete every event ingested before ``before_ms``, a chunk at a time so that ingest
        goes on in between.

        ``on_expire`` sees each expiring event above ``count_after`` (the lowest subscription
        cursor) before it goes, so subscriptions can count what they never received. Positions
        rise with ingest time, so the expired events are always a prefix of the log. Returns how
        many events were deleted.
        """
        deleted = 0
        while (upto := await self._expired_upto(before_ms, chunk)) is not None:
            if upto > count_after:
                expiring = [e for e in await self.read(count_after, chunk) if e.position <= upto]
                on_expire(expiring)
                count_after = upto
            deleted += await self._delete_through(upto)
        return deleted

    # -- subscriptions ----------------------------------------------------------------------------
    @abc.abstractmethod
    async def create_subscription(self, sub: StoredSubscription) -> None: ...

    @abc.abstractmethod
    async def get_subscription(self, sub_id: str) -> StoredSubscription | None: ...

    @abc.abstractmethod
    async def list_subscriptions(self, munchkin_id: str | None = None) -> list[StoredSubscription]: ...

    @abc.abstractmethod
    async def update_config(self, sub_id: str, config: bytes) -> None: ...

    @abc.abstractmethod
    async def save_state(self, sub_id: str, state: bytes) -> None:
        """Persist a subscription's delivery state. Survives a process crash on return (the
        SQLite backend does not fsync it: after a power loss an older state may come back,
        which only means a batch is sent again)."""

    async def lease(self, node_id: str, ttl: float) -> set[str] | None:
        """Which subscriptions this node may deliver now. ``None``: all of them (a single node).
        Multi-node backends grant and renew time-limited leases here."""
        return None

    # -- delivery attempts and dead letters --------------------------------------------------------
    @abc.abstractmethod
    async def record_attempt(self, sub_id: str, attempt: bytes, keep: int = 1000) -> None:
        """Append to the attempt log of a subscription, keeping the newest ``keep`` entries."""

    @abc.abstractmethod
    async def list_attempts(self, sub_id: str, limit: int) -> list[bytes]:
        """Newest first."""

    @abc.abstractmethod
    async def dead_letter(self, sub_id: str, event: Event, reason: str) -> None:
        """Keep an event a subscription's endpoint refused for good (outside retention)."""

    @abc.abstractmethod
    async def dead_letters(self, sub_id: str, limit: int) -> list[tuple[Event, str]]: ...

    # -- small settings (tenant catalogs, …) ------------------------------------------------------
    @abc.abstractmethod
    async def get_setting(self, name: str) -> bytes | None: ...

    @abc.abstractmethod
    async def put_setting(self, name: str, value: bytes) -> None: ...
