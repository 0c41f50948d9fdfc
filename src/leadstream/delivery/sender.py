"""One subscription's delivery: its cursor, its one batch in flight, its state machine.

A ``Sender`` is the live side of a subscription. Its task loops: gather matching events after
the cursor into a batch (flushed at batchSize, maxBatchBytes or once the oldest event has
waited pushIntervalMs), persist the batch as in flight, POST it until an answer settles it
(SPEC §4.4, rules in ``state.py``), advance the cursor, repeat. The engine stops the task (by
cancelling it) to pause, patch, replay or deprovision, changes the state, and starts it again;
everything the task knows outlives it on the Sender, so a restarted task picks up where the
last one was — the same batch, the same id.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import aiohttp
import msgspec

from leadstream import formats
from leadstream.delivery import metrics
from leadstream.delivery import state as rules
from leadstream.delivery.auth import OAuth2ClientCredentials, TokenEndpointError
from leadstream.delivery.http import Answer, post
from leadstream.delivery.log import Key, LogTail, body_sizes, read_own
from leadstream.delivery.state import DeliveryState, InFlight, Timing
from leadstream.delivery.signing import KeyRing, hmac_headers
from leadstream.delivery.statelog import StateLog
from leadstream.delivery.tls import client_context
from leadstream.events import Event
from leadstream.logs import log
from leadstream.store.base import Store
from leadstream.subscriptions import OAuth2Auth, SubscriptionConfig, TokenAuth

READ_PAGE = 1000  # events per own read of the store (a sender behind the shared tail)
IDLE_SAVE_SECONDS = 5.0  # an idle cursor that moved past events of other types is saved this often
_attempt_encoder = msgspec.json.Encoder()


class _Applied(msgspec.Struct):
    applied: int = 0


_applied_decoder = msgspec.json.Decoder(_Applied)


def encode_state(state: DeliveryState, applied: int) -> bytes:
    """The saved state, with the revision of the admin changes it reflects (``applied``, see
    ``engine.Control``) beside the state's own fields, so both are written in one save."""
    raw = rules.encode(state)
    if not applied:
        return raw
    return raw[:-1] + (b',"applied":%d}' if len(raw) > 2 else b'"applied":%d}') % applied


def applied_revision(saved: bytes) -> int:
    return _applied_decoder.decode(saved).applied


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def rfc3339(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Shared:
    """What every sender of an engine uses."""

    store: Store
    tail: LogTail
    session: aiohttp.ClientSession
    keyring: KeyRing | None = None
    state_log: StateLog | None = None  # None: states go straight to the store
    attempts_kept: int = 1000
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    # Multi-node: the event-loop time at which this node's leases lapse unless renewed. No
    # attempt starts after it (and the engine cancels the senders when it passes).
    lease_valid_until: float = math.inf

    def spawn(self, coroutine: Any) -> None:
        """Fire and forget (the attempt log), keeping a reference until it is done."""
        task = asyncio.ensure_future(coroutine)
        self.background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background store write failed", error=str(task.exception()))


@dataclass(eq=False)
class Batch:
    id: str
    events: list[Event]
    upto: int  # the cursor once it is acknowledged
    created: str  # the legacy messageCreatedDate, the same on every retry
    sends: int = 0
    body: bytes | None = None  # built once per format, reused by every retry
    signature: dict[str, str] | None = None


class Sender:
    def __init__(
        self, shared: Shared, sub_id: str, created_at: int, config: SubscriptionConfig,
        state: DeliveryState, matcher: Callable[[Event], bool],
    ) -> None:  # fmt: skip
        self.shared = shared
        self.id = sub_id
        self.created_at = created_at
        self.state = state
        self.applied = 0  # the revision of the admin changes (engine.Control) the state reflects
        self.task: asyncio.Task[None] | None = None
        self.size_cap: int | None = None  # learned from 413 answers: bodies above it were refused
        self.configure(config, matcher)
        self.forget_reads()
        self.matched = 0  # events taken / positions scanned, for the pending estimate
        self.advanced = 0

    # -- settings and lifecycle ---------------------------------------------------------------------

    def configure(self, config: SubscriptionConfig, matcher: Callable[[Event], bool]) -> None:
        self.config = config
        self.matches = matcher
        self.key: Key = (config.stream, config.munchkinId)
        self.format = config.body_format
        self.single = config.delivery == "single"
        self.timing = Timing(config.retryAttempts, config.retryIntervalMs, config.probeIntervalMs, config.pushIntervalMs)
        auth = config.auth
        self.oauth = (
            OAuth2ClientCredentials(auth.tokenUrl, auth.clientId, auth.clientSecret, auth.scope)
            if isinstance(auth, OAuth2Auth)
            else None
        )
        self.size_cap = None
        self.ssl = client_context(config.tls)
        self.secrets = [  # never written to lastError or the attempt log, should an endpoint echo them
            getattr(auth, "clientSecret", None), getattr(auth, "token", None),
            config.signing.hmacSecret if config.signing else None, config.tls.clientKey if config.tls else None,
        ]

    def forget_reads(self) -> None:
        """Drop what was read ahead; the next batch is read again from the cursor."""
        self.buffer: deque[tuple[Event, int]] = deque()
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
        state = encode_state(self.state, self.applied)
        if self.shared.state_log is not None:
            self.shared.state_log.write(self.id, state)
            if not to_store:
                return
        await self.shared.store.save_state(self.id, state)

    # -- the loop ---------------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                await self._deliver_forever()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store refused a write, a bug…: start again from the saved state
                log.exception("sender failed; restarting it in a second", subscription=self.id, error=str(exc))
                self.forget_reads()
                await asyncio.sleep(1.0)

    async def _deliver_forever(self) -> None:
        if self.batch is None and self.state.inflight is not None:
            self.batch = await self._rebuild(self.state.inflight)
        while True:
            if self.batch is None:
                self.batch = await self._next_batch()
            await self._deliver()

    # -- batches ----------------------------------------------------------------------------------

    async def _rebuild(self, inflight: InFlight) -> Batch | None:
        """The batch that was in flight when the process stopped: the same events, the same id."""
        events: list[Event] = []
        after = self.state.cursor
        while after < inflight.upto:
            page, after = await read_own(self.shared.store, self.key, after, READ_PAGE)
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
        return Batch(inflight.id, events, upto, _now_rfc3339(), sends=inflight.sends)

    async def _next_batch(self) -> Batch:
        while True:
            await self._fill()
            timeout: float | None = None
            if self.buffer:
                if self._full():
                    return await self._begin()
                waited = time.time() * 1000 - self.buffer[0][0].ingested_at
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
            await self.shared.tail.wait(self.key, self.scanned, timeout)

    def _full(self) -> bool:
        return len(self.buffer) >= (1 if self.single else self.config.batchSize) or self.buffer_bytes >= self._byte_cap()

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
                room = max(1, self.config.batchSize - len(self.buffer))
                events, sizes, scanned = tail.take(self.key, before, room, self.format)
            else:
                events, scanned = await read_own(self.shared.store, self.key, before, READ_PAGE)
                sizes = body_sizes(self.format, events)
            matches, taken, expired = self.matches, 0, self.state.expiredThrough
            for event, size in zip(events, sizes):
                if event.position > expired and matches(event):  # (it may have risen during the read)
                    self.buffer.append((event, size))
                    self.buffer_bytes += size
                    taken += 1
            self.matched += taken
            self.advanced += scanned - before
            self.scanned = scanned
            if scanned <= before:
                return

    async def _begin(self) -> Batch:
        """Take the next batch from the buffer and persist it as in flight (with the last ack)."""
        limit = 1 if self.single else self.config.batchSize
        cap = self._byte_cap()
        events: list[Event] = []
        size = 0
        while self.buffer and len(events) < limit:
            event, event_size = self.buffer[0]
            if events and size + event_size > cap:
                break
            self.buffer.popleft()
            events.append(event)
            size += event_size
        self.buffer_bytes -= size
        return await self._start_batch(events, events[-1].position if self.buffer else self.scanned)

    async def _start_batch(self, events: list[Event], upto: int) -> Batch:
        batch = Batch(str(uuid.uuid4()), events, upto, _now_rfc3339())
        self.state.inflight = InFlight(batch.id, upto, len(events))
        await self.save()
        return batch

    def _body(self, batch: Batch) -> bytes:
        if batch.body is None:
            if self.single:
                batch.body = formats.event_body(self.format, batch.events[0], subscription_id=self.id)
            else:
                batch.body = formats.batch_body(
                    self.format, batch.events, subscription_id=self.id, batch_id=batch.id, created=batch.created
                )
            batch.signature = None
        return batch.body

    # -- attempts ---------------------------------------------------------------------------------

    async def _deliver(self) -> None:
        """Send the batch in flight until it is settled: delivered, split, or dead-lettered."""
        while self.batch is not None:
            batch = self.batch
            wait = (self.state.nextAttemptAt or 0) - now_ms()
            if wait > 0:
                await asyncio.sleep(wait / 1000)
            if asyncio.get_running_loop().time() >= self.shared.lease_valid_until:
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
                self.state = rules.gone(self.state, self.timing, now, f"the endpoint is gone: {error}")
            elif answer.status in (429, 503) and answer.retry_after_ms is not None:
                self.state = rules.throttled(self.state, self.timing, now, answer.retry_after_ms, error)
            else:
                self.state = rules.failed(self.state, self.timing, now, error)
            if self.state.inflight is not None:
                self.state.inflight.sends = batch.sends
            await self.save()

    def _acknowledge(self, batch: Batch, now: int) -> None:
        """A 2xx: the cursor moves past the batch. Saved with the next batch's start (or before sleeping)."""
        self.state = rules.succeeded(self.state, now)
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
        body_size = len(batch.body or b"")
        self.size_cap = max(1024, body_size // 2) if self.size_cap is None else min(self.size_cap, max(1024, body_size // 2))
        if len(batch.events) == 1:
            event = batch.events[0]
            await self.shared.store.dead_letter(self.id, event, f"HTTP 413 for a single event of {body_size} bytes")
            self.state.deadLettered += 1
            metrics.DEAD_LETTERED.labels(self.id).inc()
            self.state.cursor = max(self.state.cursor, batch.upto)
            self.state.inflight = None
            self.unsaved = True
            self.batch = None
            return
        half = len(batch.events) // 2
        first, rest = batch.events[:half], batch.events[half:]
        for event, size in zip(reversed(rest), reversed(body_sizes(self.format, rest))):
            self.buffer.appendleft((event, size))
            self.buffer_bytes += size
        self.batch = await self._start_batch(first, first[-1].position)

    async def _attempt(self, batch: Batch) -> Answer:
        """One POST of the batch (two when an OAuth2 token is refused and renewed: not a failure)."""
        body = self._body(batch)
        headers = self._headers(batch, body)
        answer, token = await self._send(body, headers)
        if answer.status == 401 and self.oauth is not None and token is not None:
            self._record(batch, answer, note="token refused; renewed and resent")
            self.oauth.invalidate(token)
            answer, token = await self._send(body, headers)
        self._record(batch, answer)
        batch.sends += 1
        return answer

    async def send_sample(self, event: Event) -> Answer:
        """POST one event outside the log, as this subscription's deliveries go (format, auth,
        signatures), marked ``X-Leadstream-Sample: true``; not recorded, not retried."""
        batch = Batch(str(uuid.uuid4()), [event], self.state.cursor, _now_rfc3339())
        body = self._body(batch)
        headers = {**self._headers(batch, body), "X-Leadstream-Sample": "true"}
        answer, token = await self._send(body, headers)
        if answer.status == 401 and self.oauth is not None and token is not None:
            self.oauth.invalidate(token)
            answer, _ = await self._send(body, headers)
        return answer

    async def _send(self, body: bytes, headers: dict[str, str]) -> tuple[Answer, str | None]:
        timeout = self.config.timeoutMs / 1000
        token = None
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                if self.oauth is not None:
                    token = await self.oauth.token(self.shared.session)
                    headers = {**headers, "Authorization": f"Bearer {token}"}
                elif isinstance(self.config.auth, TokenAuth):
                    headers = {**headers, "Authorization": f"Bearer {self.config.auth.token}"}
                answer = await post(self.shared.session, self.config.endpoint, body, headers, timeout, ssl=self.ssl)
        except TimeoutError:
            answer = Answer(error=f"timed out after {self.config.timeoutMs} ms", duration=time.perf_counter() - started)
        except TokenEndpointError as exc:
            answer = Answer(error=str(exc), duration=time.perf_counter() - started)
        metrics.ATTEMPT_SECONDS.observe(answer.duration)
        if answer.snippet or answer.error:  # an endpoint may echo what it was sent: no secret goes further
            secrets = [*self.secrets, token]
            answer = dataclasses.replace(
                answer, snippet=_redact(answer.snippet, secrets), error=answer.error and _redact(answer.error, secrets)
            )
        return answer, token

    def _headers(self, batch: Batch, body: bytes) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "X-Leadstream-Subscription": self.id,
            "X-Leadstream-Delivery": batch.id,
        }
        if batch.sends:
            headers["X-Leadstream-Retry-Count"] = str(batch.sends)
        if self.format != "legacy":
            if batch.sends:
                headers["x-adobe-retry-count"] = str(batch.sends)
            if self.single:
                headers["x-adobe-event-id"] = batch.events[0].eventid
            if self.shared.keyring is not None:
                if batch.signature is None:
                    batch.signature = self.shared.keyring.signature_headers(body)
                headers.update(batch.signature)
        signing = self.config.signing
        if signing is not None and signing.hmacSecret:
            headers.update(hmac_headers(signing.hmacSecret, batch.id, body))
        return headers

    def _record(self, batch: Batch, answer: Answer, note: str | None = None) -> None:
        """Append to the attempt log without waiting for it."""
        outcome = "delivered" if answer.ok else "too_large" if answer.status == 413 else "failed"
        if note:
            outcome = "renewed_token"
        doc: dict[str, Any] = {
            "time": rfc3339(now_ms()),
            "batchId": batch.id,
            "events": len(batch.events),
            "firstPosition": batch.events[0].position,
            "lastPosition": batch.events[-1].position,
            "status": answer.status,
            "error": None if answer.ok else answer.describe(),
            "durationMs": round(answer.duration * 1000, 2),
            "retryCount": batch.sends,
            "outcome": outcome,
        }
        if note:
            doc["note"] = note
        if answer.status == 413 and len(batch.events) == 1:
            doc["outcome"] = "dead_lettered"
        self.shared.spawn(self.shared.store.record_attempt(self.id, _attempt_encoder.encode(doc), self.shared.attempts_kept))

    # -- live status --------------------------------------------------------------------------------

    def drop_expired(self) -> None:
        """Forget what was read ahead but is now past ``expiredThrough`` (counted as expired
        instead); the batch in flight stays: it is delivered."""
        expired = self.state.expiredThrough
        while self.buffer and self.buffer[0][0].position <= expired:
            self.buffer_bytes -= self.buffer.popleft()[1]

    def held(self) -> int:
        return len(self.buffer) + (len(self.batch.events) if self.batch else 0)

    def pending(self, last_position: int) -> int:
        """Matching events not yet delivered: exact for what is read; for the unread rest,
        estimated from this subscription's share of the log so far."""
        behind = max(0, last_position - self.scanned)
        share = self.matched / self.advanced if self.advanced else 1.0
        return self.held() + round(behind * min(1.0, share))

    def oldest_held(self) -> int | None:
        """Ingest time (ms) of the oldest undelivered event in hand."""
        if self.batch is not None:
            return self.batch.events[0].ingested_at
        if self.buffer:
            return self.buffer[0][0].ingested_at
        return None


def _now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _redact(text: str, secrets: list[str | None]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
