"""One subscription's delivery: its cursor, its one batch in flight, its state machine.

A ``Sender`` is the live side of a subscription on the node that delivers it. Its task loops:
gather matching events after the cursor into a batch (flushed at batchSize, maxBatchBytes or once
the oldest event has waited pushIntervalMs), persist the batch as in flight, POST it until an
answer settles it (SPEC §4.4, rules in ``subscriptions.state``), advance the cursor, repeat. The
engine stops the task (by cancelling it) to apply an admin change (``apply``), and starts it
again; everything the task knows outlives it on the Sender, so a restarted task picks up where
the last one was — the same batch, the same id.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec

from leadstream import formats, positions
from leadstream.clock import now_ms, rfc3339
from leadstream.delivery import metrics
from leadstream.delivery.endpoint import Batch, Endpoint
from leadstream.delivery.http import Answer
from leadstream.delivery.leases import Leases
from leadstream.delivery.statelog import StateLog
from leadstream.delivery.tail import READ_PAGE, Key, LogTail, Taken
from leadstream.events import Event
from leadstream.logs import log
from leadstream.security.signing import KeyRing
from leadstream.store.base import Control, Store
from leadstream.subscriptions import state as rules
from leadstream.subscriptions.config import SubscriptionConfig
from leadstream.subscriptions.control import pending_change
from leadstream.subscriptions.matching import Matcher, takes_every_event
from leadstream.subscriptions.service import Live
from leadstream.subscriptions.state import DeliveryState, InFlight, Timing, Transition

IDLE_SAVE_SECONDS = 5.0  # an idle cursor that moved past events of other types is saved this often
_attempt_encoder = msgspec.json.Encoder()


@dataclass
class Shared:
    """What every sender of an engine uses."""

    store: Store
    tail: LogTail
    session: aiohttp.ClientSession
    keyring: KeyRing | None = None
    state_log: StateLog | None = None  # None: states go straight to the store
    attempts_kept: int = 1000
    leases: Leases | None = None  # a cluster: no attempt starts once they lapse
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    # Told of every state transition, on the event loop, at once: they must be quick (log, queue an alert).
    on_transition: list[Callable[[Transition], None]] = field(default_factory=list)

    def spawn(self, coroutine: Any) -> None:
        """Fire and forget (the attempt log), keeping a reference until it is done."""
        task = asyncio.ensure_future(coroutine)
        self.background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background store write failed", error=str(task.exception()))


class Sender:
    def __init__(
        self, shared: Shared, sub_id: str, config: SubscriptionConfig, state: DeliveryState, matcher: Matcher,
        *, applied: int = 0,
    ) -> None:  # fmt: skip
        self.shared = shared
        self.id = sub_id
        self.state = state
        self.applied = applied  # the control revision (store.base.Control) the state reflects
        self.task: asyncio.Task[None] | None = None
        self.at_tail = False  # counted among the tail's users (see _use_tail)
        self.configure(config, matcher)
        self.forget_reads()
        self.matched = 0  # events taken / positions scanned, for the pending estimate
        self.advanced = 0

    # -- settings, admin changes and lifecycle --------------------------------------------------------

    def configure(self, config: SubscriptionConfig, matcher: Matcher) -> None:
        self.config = config
        self.matches = matcher
        self.key: Key = (config.stream, config.munchkinId)
        self.endpoint = Endpoint(self.id, config, self.shared.session, self.shared.keyring)
        self.format = config.body_format
        self.overhead = formats.element_overhead(self.format, self.id)  # bytes per element beyond the shared part
        self.takes_all = takes_every_event(config, matcher)  # of its key: no per-event matching
        self.single = config.delivery == "single"
        self.timing = Timing(
            config.retryAttempts, config.retryIntervalMs, config.probeIntervalMs, config.pushIntervalMs
        )
        self.size_cap: int | None = None  # learned from 413 answers: bodies above it were refused

    def apply(self, control: Control, config: SubscriptionConfig, matcher: Callable[[], Matcher]) -> bool:
        """Take every admin change asked after the revision the state reflects, in order
        (``config`` is the subscription's current settings). False: there was none."""
        change = pending_change(self.state, control, self.applied)
        if change is None:
            return False
        if change.patched and config != self.config:
            self.configure(config, matcher())
        self._become(change.state)
        self.applied = control.rev
        if change.reread:
            self.forget_reads()
        return True

    def _become(self, state: DeliveryState) -> None:
        before, self.state = self.state, state
        if rules.moved(before, state):
            transition = Transition(self.id, self.config.munchkinId, before, state)
            for listener in self.shared.on_transition:
                listener(transition)

    @property
    def should_run(self) -> bool:
        return self.state.state != rules.DEPROVISIONED and self.state.pausedReason != rules.MANUAL

    def forget_reads(self) -> None:
        """Drop what was read ahead; the next batch is read again from the cursor."""
        # Read and not yet in a batch: the events, and beside them their shared elements (two
        # lists, so that a slice from the tail is kept with two C-level extends, not a tuple per event).
        self.buffer: list[Event] = []
        self.buffer_elements: list[bytes] = []
        self.buffer_bytes = 0
        self.scanned = self.state.cursor
        self.batch: Batch | None = None
        self.saved_at = time.monotonic()
        self.saved_cursor = self.state.cursor
        self.unsaved = False

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def start(self) -> None:
        if not self.running:
            self.task = asyncio.create_task(self.run(), name=f"sender-{self.id}")

    def abandon(self) -> None:
        """Cancel the task without waiting and without saving (the lease lapsed: the next owner
        starts from the last saved state)."""
        if self.task is not None:
            self.task.cancel()

    async def stop(self) -> None:
        """Cancel the task; an attempt in flight is abandoned (it will be sent again)."""
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def save(self, *, to_store: bool = False) -> None:
        """Persist the state (crash-safe on return). Into the state log when there is one — the
        store gets it at the next checkpoint — unless ``to_store`` (admin changes other readers
        of the store should see at once)."""
        self.saved_at = time.monotonic()
        self.saved_cursor = self.state.cursor
        self.unsaved = False
        state = rules.encode(self.state)
        if self.shared.state_log is not None:
            self.shared.state_log.write(self.id, state, self.applied)
            if not to_store:
                return
        await self.shared.store.save_state(self.id, state, self.applied)

    # -- the loop ---------------------------------------------------------------------------------

    def _use_tail(self, at_tail: bool) -> None:
        """Count this sender among the tail's users while it reads from the window or waits on it;
        behind the window (a backlog) it reads pages of its own, and needs no tail read for it."""
        if at_tail != self.at_tail:
            self.at_tail = at_tail
            self.shared.tail.users += 1 if at_tail else -1

    async def run(self) -> None:
        self._use_tail(True)
        try:
            while True:
                try:
                    await self._deliver_forever()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the store refused a write, a bug…: start again from the saved state
                    log.exception("sender failed; restarting it in a second", subscription=self.id, error=str(exc))
                    self.forget_reads()
                    await asyncio.sleep(1.0)
        finally:
            self._use_tail(False)

    async def _deliver_forever(self) -> None:
        if self.batch is None and self.state.inflight is not None:
            self.batch = await self._rebuild(self.state.inflight)
        while True:
            if self.batch is None:
                self.batch = await self._next_batch()
            await self._deliver()

    # -- batches ----------------------------------------------------------------------------------

    async def _read_own(self, after: int) -> tuple[list[Event], int]:
        return await self.shared.store.read_page(after, READ_PAGE, stream=self.key[0], munchkin_id=self.key[1])

    async def _rebuild(self, inflight: InFlight) -> Batch | None:
        """The batch that was in flight when the process stopped: the same events, the same id."""
        events: list[Event] = []
        after = self.state.cursor
        while after < inflight.upto:
            page, after = await self._read_own(after)
            events.extend(e for e in page if e.position <= inflight.upto and self.matches(e))
            if not page:
                break
        upto = inflight.upto
        if len(events) > inflight.count:  # the filter takes more since (a PATCH): the rest come next
            events = events[: inflight.count]
            upto = events[-1].position
        self.scanned = upto
        if not events:  # expired meanwhile
            self.state.cursor, self.state.inflight = upto, None
            self.unsaved = True
            return None
        return Batch(inflight.id, events, upto, sends=inflight.sends)

    async def _next_batch(self) -> Batch:
        while True:
            await self._fill()
            timeout: float | None = None
            if self.buffer:
                if self._full():
                    return await self._begin()
                waited = time.time() * 1000 - self.buffer[0].ingested_at
                if waited >= self.config.pushIntervalMs:
                    return await self._begin()
                timeout = (self.config.pushIntervalMs - waited) / 1000
            else:
                self.state.cursor = max(self.state.cursor, self.scanned)  # nothing matching in between
                if self.unsaved or (
                    self.state.cursor != self.saved_cursor and time.monotonic() - self.saved_at > IDLE_SAVE_SECONDS
                ):
                    await self.save()  # the last acknowledgement, before sleeping
                if self.state.cursor != self.saved_cursor:
                    timeout = IDLE_SAVE_SECONDS
            self._use_tail(True)
            await self.shared.tail.wait(self.key, self.scanned, timeout)

    def _full(self) -> bool:
        return (
            len(self.buffer) >= (1 if self.single else self.config.batchSize) or self.buffer_bytes >= self._byte_cap()
        )

    def _byte_cap(self) -> int:
        cap = self.config.maxBatchBytes if self.size_cap is None else min(self.config.maxBatchBytes, self.size_cap)
        return cap - formats.ENVELOPE_BYTES

    async def _fill(self) -> None:
        """Read matching events after ``scanned`` until a batch is full or nothing more is there."""
        tail = self.shared.tail
        while not self._full():
            if self.scanned < self.state.expiredThrough:  # past retention, and counted: not sent
                self.scanned = self.state.expiredThrough
            before = self.scanned
            if tail.covers(before):  # (no await between the check and the take)
                self._use_tail(True)
                room = max(1, self.config.batchSize - len(self.buffer))
                taken = tail.take(self.key, before, room, self.format)
            else:
                self._use_tail(False)
                taken = await tail.read_behind(self.key, before, self.format)
            self._keep(taken)
            self.advanced += taken.scanned - before
            self.scanned = taken.scanned
            if taken.scanned <= before:
                return

    def _keep(self, taken: Taken) -> None:
        events, shared = taken.events, taken.shared
        expired = self.state.expiredThrough  # (it may have risen during a read)
        if events and events[0].position <= expired:
            start = bisect.bisect_right(events, expired, key=_position)
            events, shared = events[start:], shared[start:]
        if self.takes_all == "all" or (self.takes_all == "activities" and not taken.custom_objects):
            self.buffer += events
            self.buffer_elements += shared
            self.buffer_bytes += sum(map(len, shared)) + self.overhead * len(shared)
            self.matched += len(events)
            return
        matches, taken_count, overhead = self.matches, 0, self.overhead
        for event, element in zip(events, shared):
            if matches(event):
                self.buffer.append(event)
                self.buffer_elements.append(element)
                self.buffer_bytes += len(element) + overhead
                taken_count += 1
        self.matched += taken_count

    async def _begin(self) -> Batch:
        """Take the next batch from the buffer and persist it as in flight (with the last ack)."""
        limit = 1 if self.single else self.config.batchSize
        cap = self._byte_cap()
        buffer, elements = self.buffer, self.buffer_elements
        taken = min(limit, len(buffer))  # the usual case: all of it, or a full batch (a page read behind holds two)
        if taken == len(buffer):
            size = self.buffer_bytes
        else:
            size = sum(map(len, itertools.islice(elements, taken))) + self.overhead * taken
        if size > cap:  # the byte cap ends the batch first: find where
            taken, size, overhead = 0, 0, self.overhead
            while taken < min(limit, len(buffer)):
                event_size = len(elements[taken]) + overhead
                if taken and size + event_size > cap:
                    break
                taken += 1
                size += event_size
        events, shared = buffer[:taken], elements[:taken]
        del buffer[:taken], elements[:taken]
        self.buffer_bytes -= size
        return await self._start_batch(events, events[-1].position if buffer else self.scanned, shared)

    async def _start_batch(self, events: list[Event], upto: int, shared: list[bytes] | None = None) -> Batch:
        batch = Batch(str(uuid.uuid4()), events, upto, shared=shared)
        self.state.inflight = InFlight(batch.id, upto, len(events))
        await self.save()
        return batch

    # -- attempts ---------------------------------------------------------------------------------

    async def _deliver(self) -> None:
        """Send the batch in flight until it is settled: delivered, split, or dead-lettered."""
        while self.batch is not None:
            batch = self.batch
            wait = (self.state.nextAttemptAt or 0) - now_ms()
            if wait > 0:
                await asyncio.sleep(wait / 1000)
            leases = self.shared.leases
            if leases is not None and asyncio.get_running_loop().time() >= leases.valid_until:
                raise asyncio.CancelledError  # the lease lapsed: another node may be sending now
            answer = await self._attempt(batch)
            now = now_ms()
            if answer.ok:
                self._acknowledge(batch, now)
                return
            if answer.status == 413:
                await self._refused_as_too_large(batch, answer)
                continue
            metrics.FAILED_ATTEMPTS.labels(self.id).inc()
            error = answer.describe()
            if answer.status == 410:
                self._become(rules.gone(self.state, self.timing, now, f"the endpoint is gone: {error}"))
            elif answer.status in (429, 503) and answer.retry_after_ms is not None:
                self._become(rules.throttled(self.state, self.timing, now, answer.retry_after_ms, error))
            else:
                self._become(rules.failed(self.state, self.timing, now, error))
            if self.state.inflight is not None:
                self.state.inflight.sends = batch.sends
            await self.save()

    def _acknowledge(self, batch: Batch, now: int) -> None:
        """A 2xx: the cursor moves past the batch. Saved with the next batch's start (or before sleeping)."""
        self._become(rules.succeeded(self.state, now))
        self.state.cursor = max(self.state.cursor, batch.upto)
        self.state.inflight = None
        self.state.delivered += len(batch.events)
        self.unsaved = True
        self.batch = None
        metrics.DELIVERED.labels(self.id).inc(len(batch.events))
        metrics.BATCH_LATENCY.observe(max(0.0, now - batch.events[0].ingested_at) / 1000)

    async def _refused_as_too_large(self, batch: Batch, answer: Answer) -> None:
        """413: send the first half at once (not a failure); a lone event is dead-lettered."""
        self.state = msgspec.structs.replace(self.state, nextAttemptAt=None, lastAttemptAt=now_ms())
        half_body = max(1024, len(batch.body or b"") // 2)
        self.size_cap = half_body if self.size_cap is None else min(self.size_cap, half_body)
        if len(batch.events) == 1:
            event = batch.events[0]
            await self.shared.store.dead_letter(
                self.id, event, f"HTTP 413 for a single event of {len(batch.body or b'')} bytes"
            )
            self.state.deadLettered += 1
            metrics.DEAD_LETTERED.labels(self.id).inc()
            self.state.cursor = max(self.state.cursor, batch.upto)
            self.state.inflight = None
            self.unsaved = True
            self.batch = None
            return
        half = len(batch.events) // 2
        first, rest = batch.events[:half], batch.events[half:]
        shared = batch.shared if batch.shared is not None else formats.elements(self.format, batch.events)
        self.buffer[:0] = rest
        self.buffer_elements[:0] = shared[half:]
        self.buffer_bytes += sum(map(len, shared[half:])) + self.overhead * len(rest)
        self.batch = await self._start_batch(first, first[-1].position, shared[:half])

    async def _attempt(self, batch: Batch) -> Answer:
        """One POST of the batch (two when an OAuth2 token is refused and renewed: not a failure)."""
        answer, refused = await self.endpoint.post(batch)
        if refused is not None:
            self._record(batch, refused, note="token refused; renewed and resent")
        self._record(batch, answer)
        batch.sends += 1
        return answer

    def _record(self, batch: Batch, answer: Answer, note: str | None = None) -> None:
        """Append to the attempt log without waiting for it."""
        outcome = "delivered" if answer.ok else "too_large" if answer.status == 413 else "failed"
        if note:
            outcome = "renewed_token"
        if answer.status == 413 and len(batch.events) == 1:
            outcome = "dead_lettered"
        doc: dict[str, Any] = {
            "time": rfc3339(now_ms()),
            "batchId": batch.id,
            "events": len(batch.events),
            "firstPosition": positions.encode(batch.events[0].position),  # the tokens the journal uses
            "lastPosition": positions.encode(batch.events[-1].position),
            "status": answer.status,
            "error": None if answer.ok else answer.describe(),
            "durationMs": round(answer.duration * 1000, 2),
            "retryCount": batch.sends,
            "outcome": outcome,
        }
        if note:
            doc["note"] = note
        response = None
        if answer.status is not None:
            response = {
                "status": answer.status, "headers": answer.headers, "body": answer.body,
                "bodyTruncated": answer.truncated,
            }  # fmt: skip
        trace = _attempt_encoder.encode({"request": {"headers": answer.request_headers}, "response": response})
        self.shared.spawn(
            self.shared.store.record_attempt(
                self.id, _attempt_encoder.encode(doc), self.shared.attempts_kept, trace=trace
            )
        )

    # -- retention ----------------------------------------------------------------------------------

    def received_through(self) -> int:
        """Matching events at or below it are delivered, in flight, or counted as expired."""
        state = self.state
        return max(state.expiredThrough, state.cursor, state.inflight.upto if state.inflight else 0)

    async def count_expired(self, through: int) -> bool:
        """Events at or below ``through`` are past retention: count, in ``expired``, those this
        subscription takes and has not received (they will not be sent). ``expiredThrough``
        (saved with the state, so it moves with the lease) says how far it has counted, so
        nothing is counted twice. True when something was counted (then save)."""
        counted = False
        while self.state.state != rules.DEPROVISIONED and (after := self.received_through()) < through:
            page = await self.shared.store.read(after, READ_PAGE, stream=self.key[0], munchkin_id=self.key[1])
            # No await from here on. The task may have taken events into a batch during the
            # read: those are received (they will be delivered), so count above where it is now.
            after = self.received_through()
            upto = min(through, page[-1].position if len(page) == READ_PAGE else through)
            state = self.state
            state.expired += sum(1 for e in page if after < e.position <= upto and self.matches(e))
            state.expiredThrough = max(state.expiredThrough, upto)
            self._drop_expired()  # read ahead but not sent: counted instead
            counted = True
        return counted

    def _drop_expired(self) -> None:
        """Forget what was read ahead but is now past ``expiredThrough``; the batch in flight stays."""
        expired = self.state.expiredThrough
        gone = bisect.bisect_right(self.buffer, expired, key=_position)
        self.buffer_bytes -= sum(map(len, self.buffer_elements[:gone])) + self.overhead * gone
        del self.buffer[:gone], self.buffer_elements[:gone]

    # -- live status --------------------------------------------------------------------------------

    def live(self) -> Live:
        """What the API shows of a subscription this node delivers: the state in memory, and
        what is read and not yet delivered."""
        held = len(self.buffer) + (len(self.batch.events) if self.batch else 0)
        share = self.matched / self.advanced if self.advanced else 1.0
        return Live(self.state, self.scanned, held, share, self.oldest_held(), self.matches, self.applied)

    def oldest_held(self) -> int | None:
        """Ingest time (ms) of the oldest undelivered event in hand."""
        if self.batch is not None:
            return self.batch.events[0].ingested_at
        if self.buffer:
            return self.buffer[0].ingested_at
        return None


def _position(event: Event) -> int:
    return event.position
