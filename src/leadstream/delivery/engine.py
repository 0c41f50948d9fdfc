"""The delivery engine: every subscription's sender, and the admin operations on them.

The engine owns the live side of subscriptions: one ``Sender`` (and one asyncio task) per
subscription, one shared HTTP session, one shared reader of the log tail. Admin operations
(create, patch, pause, resume, replay, delete) go through it, because a sender's in-memory
state is the truth while it runs: the engine stops the sender, changes and saves its state,
and starts it again.

Several nodes (PostgreSQL): each subscription is delivered by the node holding its lease. Admin
changes may arrive on any node, so they are written as *desired* settings — the config document
plus a small ``Control`` record (a revision, and the revision at which each kind of change was
last asked: pause, resume, replay, patch, delete) that only admin operations write — while the
*observed* delivery state (cursor, counters, batch in flight, and the control revision it
reflects) is written only by the lease holder. The owner applies a change at once when it is
asked there; otherwise it notices within ``follow_interval`` (every node polls one small
revision token that each admin change bumps) and applies every change asked since the revision
its state reflects, in order. A node taking a subscription over applies whatever is pending.
Views on other nodes show the owner's last saved state with the pending changes laid over it.

A lease is valid until the start of the ``lease()`` call that granted or renewed it plus the
TTL. When renewals fail past that moment the node cancels its senders at once (an attempt in
flight is abandoned and sent again, under the same delivery id, by the next owner), and no
attempt starts on a lapsed lease; the store lets another node take the lease only after the
same moment (by the database clock, which starts no earlier). So the attempt timeout need not
be shorter than the TTL.

Delivery in its own process (one node, ``leadstream serve --delivery-process``) takes the same
path: the API process runs its engine with ``deliver=False`` (it holds no subscription, so admin
changes become desired settings and a revision bump), and the delivery process runs one with
``follow_changes=True`` (it holds every subscription and follows the revision).

Retention hook: ``count_expired`` (for ``leadstream.retention.Retention``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import orjson

from leadstream import subscriptions as model
from leadstream.catalog import Catalog
from leadstream.delivery import metrics
from leadstream.delivery import state as rules
from leadstream.delivery.challenge import verify_challenge
from leadstream.delivery.http import Answer, make_session
from leadstream.delivery.log import LogTail, read_own
from leadstream.delivery.sender import READ_PAGE, Sender, Shared, applied_revision, now_ms, rfc3339
from leadstream.delivery.signing import KeyRing
from leadstream.delivery.statelog import StateLog
from leadstream.errors import Conflict, Gone, Invalid, LeadstreamError, NotFound
from leadstream.events import Event
from leadstream.logs import log
from leadstream.secretbox import SecretBox
from leadstream.store.base import Store, StoredSubscription


CONTROL_KEY = "_control"  # where the Control record sits in a subscription's stored settings
REVISION_SETTING = "subscriptions.revision"  # a token every admin change renews (multi-node)




class Control(msgspec.Struct, omit_defaults=True):
    """What admins asked of a subscription, kept inside its stored settings (desired state)."""

    rev: int = 0
    ops: dict[str, int] = msgspec.field(default_factory=dict)  # pause|resume|replay|patch|delete -> rev asked at
    replayTo: int = 0


def split_config(stored: bytes) -> tuple[bytes, Control]:
    """Stored settings → the subscription's own document and its Control record."""
    if b'"_control"' not in stored:
        return stored, Control()
    document = orjson.loads(stored)
    control = msgspec.convert(document.pop(CONTROL_KEY, {}), Control)
    return orjson.dumps(document), control


def join_config(config: bytes, control: Control) -> bytes:
    document = orjson.loads(config)
    document[CONTROL_KEY] = msgspec.to_builtins(control)
    return orjson.dumps(document)


@dataclass(frozen=True)
class EngineOptions:
    allow_private_endpoints: bool = False
    allowed_cidrs: tuple[str, ...] = ()  # private ranges endpoints may be in anyway
    node_id: str = "local"
    connection_limit: int = 2048  # all endpoints together
    connections_per_host: int = 64  # one endpoint (host, port); a sender uses one at a time
    tail_events: int = 100_000  # the shared window of recent events…
    tail_bytes: int = 32 * 1024 * 1024  # …bounded both ways
    lease_ttl: float = 15.0  # multi-node only: seconds a lease lasts unless renewed
    follow_interval: float = 0.25  # multi-node: how often to look for admin changes made on other nodes
    attempts_kept: int = 1000  # per subscription
    challenge_timeout: float = 10.0
    state_log: Path | None = None  # a directory: save states there, checkpoint to the store (one node only)
    checkpoint_interval: float = 1.0  # seconds between state-log checkpoints
    # Delivery in its own process (one node): the API process's engine delivers nothing (admin
    # changes are written as desired settings, views show what the delivery process saved)…
    deliver: bool = True
    # …and the delivery process's engine holds every subscription and follows those changes.
    follow_changes: bool = False


class DeliveryEngine:
    def __init__(
        self, store: Store, catalog: Catalog, options: EngineOptions | None = None,
        *, keyring: KeyRing | None = None, secretbox: SecretBox | None = None,
    ) -> None:  # fmt: skip
        self.store = store
        self.catalog = catalog
        self.options = options or EngineOptions()
        self.keyring = keyring  # RSA signatures of cloudevents/adobe_io deliveries
        self.secretbox = secretbox  # secrets sealed in the stored settings
        self.senders: dict[str, Sender] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._owned: set[str] | None = None  # None: this node delivers every subscription
        self._lapse: asyncio.TimerHandle | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.started = False
        # Called before admin changes made elsewhere are picked up (the delivery process reloads
        # the tenants' catalog there, so that new subscriptions' filters compile).
        self.before_follow: Callable[[], Awaitable[None]] | None = None

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        options = self.options
        self.session = make_session(
            limit=options.connection_limit,
            limit_per_host=options.connections_per_host,
            allow_private=options.allow_private_endpoints,
            allowed_cidrs=options.allowed_cidrs,
        )
        self.tail = LogTail(self.store, options.tail_events, options.tail_bytes)
        await self.tail.prime()
        state_log = None
        if options.state_log is not None:
            state_log = StateLog(options.state_log)
            await state_log.adopt(self.store, state_log.recover())  # what the last run saved last
            state_log.open()
        self.shared = Shared(self.store, self.tail, self.session, self.keyring, state_log, options.attempts_kept)
        self._owned = await self._renew_leases() if options.deliver else set()
        for stored in await self.store.list_subscriptions():
            await self._adopt(stored)
        if options.follow_changes and self._owned is None:
            self._owned = set(self.senders)  # every one of them; new ones are added as they come
        if options.deliver:
            self._tasks.append(asyncio.create_task(self.tail.run(), name="log-tail"))
        if self._owned is not None and options.deliver:
            self._tasks.append(asyncio.create_task(self._follow(), name="leases-and-changes"))
        if state_log is not None:
            self._tasks.append(asyncio.create_task(self._checkpoints(state_log), name="state-checkpoints"))
        for sender in self.senders.values():
            if self._should_run(sender):
                sender.start()
        metrics.LAG.sources.add(self)
        self.started = True
        log.info("delivery engine started", subscriptions=len(self.senders))

    async def stop(self) -> None:
        """Stop every sender and save where each one is (a batch in flight is sent again later)."""
        if not self.started:
            return
        self.started = False
        metrics.LAG.sources.discard(self)
        if self._lapse is not None:
            self._lapse.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        senders = [s for s in self.senders.values() if s.running]
        await asyncio.gather(*(s.stop() for s in senders))
        try:
            await asyncio.gather(*(s.save() for s in senders))
            await asyncio.wait_for(asyncio.gather(*self.shared.background, return_exceptions=True), 5)
            if self.shared.state_log is not None:
                await self.shared.state_log.close(self.store)
        except Exception as exc:  # the store may already be failing: the states saved earlier stand
            log.warning("could not save delivery state at shutdown", error=str(exc))
        await self.session.close()

    def open_config(self, stored: StoredSubscription) -> model.SubscriptionConfig:
        """A stored subscription's settings, secrets unsealed (for whoever must use them)."""
        return self._settings(stored)[0]

    def _settings(self, stored: StoredSubscription) -> tuple[model.SubscriptionConfig, Control]:
        opened = self.secretbox.open_config(stored.config) if self.secretbox else stored.config
        document, control = split_config(opened)
        return model.decode(document), control

    def _matcher(self, config: model.SubscriptionConfig, sub_id: str, state: rules.DeliveryState) -> Any:
        try:
            return model.compile_matcher(config, self.catalog, sub_id)
        except LeadstreamError as exc:  # e.g. a tenant type that is no longer in the catalog
            log.warning("subscription filter does not compile; it takes nothing", subscription=sub_id, error=exc.detail)
            state.lastError = f"filter: {exc.detail}"
            return _nothing

    def _load(self, stored: StoredSubscription) -> tuple[Sender, Control]:
        config, control = self._settings(stored)
        state = rules.decode(stored.state)
        sender = Sender(self.shared, stored.id, stored.created_at, config, state, self._matcher(config, stored.id, state))
        sender.applied = applied_revision(stored.state)
        self.senders[stored.id] = sender
        return sender, control

    async def _adopt(self, stored: StoredSubscription) -> Sender:
        """Load a subscription from the store; if this node delivers it, apply (and save) the
        admin changes its last owner had not applied yet."""
        sender, control = self._load(stored)
        if self._mine(sender.id):
            if self._apply(sender, control, sender.config):
                await sender.save(to_store=True)
        else:
            self._apply(sender, control, sender.config)  # shown as asked; the owner's saves are the truth
        return sender

    def _mine(self, sub_id: str) -> bool:
        return self._owned is None or sub_id in self._owned

    def _apply(self, sender: Sender, control: Control, config: model.SubscriptionConfig) -> bool:
        """Bring a sender to every admin change asked after the revision it reflects, in the
        order asked. ``config`` is the subscription's current settings. False: nothing to do."""
        if control.rev <= sender.applied:
            return False
        for op, rev in sorted(control.ops.items(), key=lambda item: item[1]):
            if rev <= sender.applied or sender.state.state == rules.DEPROVISIONED:
                continue
            if op == "patch":
                if config != sender.config:
                    sender.configure(config, self._matcher(config, sender.id, sender.state))
                sender.forget_reads()  # the batch in flight is rebuilt with the new settings, same id
                sender.state = msgspec.structs.replace(sender.state, nextAttemptAt=None)  # and tried at once
            elif op == "pause":
                sender.state = rules.paused_by_hand(sender.state)
            elif op == "resume":
                sender.state = rules.resumed(sender.state)
            elif op == "replay":
                sender.state = msgspec.structs.replace(
                    sender.state, cursor=min(control.replayTo, sender.state.cursor), inflight=None, nextAttemptAt=None
                )
                sender.forget_reads()
            elif op == "delete":
                sender.state = rules.deprovisioned(sender.state)
                sender.forget_reads()
        sender.applied = control.rev
        return True

    async def _checkpoints(self, state_log: StateLog) -> None:
        while True:
            await asyncio.sleep(self.options.checkpoint_interval)
            try:
                await state_log.checkpoint(self.store)
            except Exception as exc:  # the states stay in the log files; the next round tries again
                log.warning("delivery state checkpoint failed", error=str(exc))

    def _should_run(self, sender: Sender) -> bool:
        state = sender.state
        if state.state == rules.DEPROVISIONED or state.pausedReason == rules.MANUAL:
            return False
        return self._mine(sender.id)

    # -- several nodes: leases and changes made elsewhere -------------------------------------------

    async def _renew_leases(self) -> set[str] | None:
        """Ask for this node's leases; valid until the start of the call plus the TTL."""
        loop = asyncio.get_running_loop()
        asked_at = loop.time()
        owned = await self.store.lease(self.options.node_id, self.options.lease_ttl)
        if owned is not None:
            until = asked_at + self.options.lease_ttl
            self.shared.lease_valid_until = until
            if self._lapse is not None:
                self._lapse.cancel()
            self._lapse = loop.call_at(until, self._lapsed)
        return owned

    def _lapsed(self) -> None:
        """No renewal in time: another node may take our subscriptions now, so stop sending
        (an attempt in flight is abandoned; the next owner sends that batch again, same id)."""
        log.warning("leases lapsed (renewal failed); delivery stopped on this node", node=self.options.node_id)
        self._owned = set()
        for sender in self.senders.values():
            if sender.task is not None:
                sender.task.cancel()  # not saved: the next owner starts from the last saved state

    async def _follow(self) -> None:
        """Renew leases every TTL/3; every ``follow_interval``, look whether an admin change was
        made (on any node) and, if so, pick it up (and renew, so new subscriptions get owners)."""
        loop = asyncio.get_running_loop()
        renew_at = loop.time() + self.options.lease_ttl / 3
        seen = await self._revision()
        while True:
            await asyncio.sleep(self.options.follow_interval)
            try:
                revision = await self._revision()  # read before the subscriptions: no change missed
                if revision == seen and loop.time() < renew_at:
                    continue
                started = loop.time()
                if self.before_follow is not None:
                    await self.before_follow()
                owned = await self._renew_leases()
                known = await self.store.list_subscriptions()
                if owned is None:  # one node, delivery in its own process: every subscription is ours
                    owned = {stored.id for stored in known}
                await self._reconcile(known, owned)
                seen, renew_at = revision, started + self.options.lease_ttl / 3
            except Exception as exc:  # the store is down: try again next round (the lease timer stops us in time)
                log.warning("lease renewal failed", error=str(exc))

    async def _revision(self) -> bytes | None:
        return await self.store.get_setting(REVISION_SETTING)

    async def _announce(self) -> None:
        """Tell the other nodes that a subscription changed (they look within follow_interval)."""
        if self._owned is not None:
            await self.store.put_setting(REVISION_SETTING, uuid.uuid4().hex.encode())

    async def _reconcile(self, known: list[StoredSubscription], owned: set[str]) -> None:
        before, self._owned = self._owned or set(), owned
        for stored in known:
            sender = self.senders.get(stored.id)
            mine = stored.id in owned
            if sender is None or (mine and stored.id not in before):
                # New here, or newly ours: start from what its last owner saved (its batch in
                # flight goes again, same id), with the admin changes it had not applied.
                async with self._lock(stored.id):
                    if sender is not None:
                        await sender.stop()
                    await self._adopt(stored)
            elif not mine:
                if sender.running:
                    await sender.stop()  # not saved: the new owner's saves are the truth now
            else:
                config, control = self._settings(stored)
                if control.rev > sender.applied:
                    async with self._lock(stored.id):
                        await sender.stop()
                        self._apply(sender, control, config)
                        await sender.save(to_store=True)
        for sender in self.senders.values():
            if self._should_run(sender) and not sender.running:
                sender.start()

    @asynccontextmanager
    async def _lock(self, sub_id: str) -> Any:
        lock = self._locks.setdefault(sub_id, asyncio.Lock())
        async with lock:
            yield

    async def _refresh(self, sender: Sender) -> None:
        """A subscription another node delivers: what that node last saved, with the admin
        changes it has not applied yet laid over it (nothing is saved from here)."""
        if self._mine(sender.id):
            return
        stored = await self.store.get_subscription(sender.id)
        if stored is None:
            return
        config, control = self._settings(stored)
        if config != sender.config:
            sender.configure(config, self._matcher(config, sender.id, sender.state))
        sender.state = rules.decode(stored.state)
        sender.applied = applied_revision(stored.state)
        sender.forget_reads()
        self._apply(sender, control, config)

    def _get(self, sub_id: str) -> Sender:
        sender = self.senders.get(sub_id)
        if sender is None:
            raise NotFound(f"there is no subscription {sub_id!r}")
        return sender

    async def send_sample(self, sub_id: str, event: Event) -> Answer:
        return await self._get(sub_id).send_sample(event)

    # -- admin operations ----------------------------------------------------------------------------

    async def create(self, document: dict[str, Any]) -> dict[str, Any]:
        """A new subscription (SPEC §3); its view, with a generated HMAC secret shown this once."""
        config = model.parse_new(document, self.catalog)
        await self._check_endpoints(config)
        generated = model.complete_signing(config)
        if config.needs_challenge:
            await verify_challenge(self.session, config.endpoint, timeout=self.options.challenge_timeout)
        sub_id = str(uuid.uuid4())
        matcher = model.compile_matcher(config, self.catalog, sub_id)
        state = rules.DeliveryState(cursor=await self._start_cursor(config.startAt))
        created = now_ms()
        await self.store.create_subscription(
            StoredSubscription(sub_id, config.munchkinId, self._sealed(config), rules.encode(state), created)
        )
        sender = Sender(self.shared, sub_id, created, config, state, matcher)
        self.senders[sub_id] = sender
        if self._should_run(sender):
            sender.start()
        await self._announce()  # and a node takes its lease
        view = await self.view(sub_id)
        if generated:
            view["signing"] = {"hmacSecret": generated}
        return view

    def _sealed(self, config: model.SubscriptionConfig) -> bytes:
        stored = model.encode(config)
        return self.secretbox.seal_config(stored) if self.secretbox else stored

    async def _check_endpoints(self, config: model.SubscriptionConfig) -> None:
        allow, cidrs = self.options.allow_private_endpoints, self.options.allowed_cidrs
        await model.check_endpoint(config.endpoint, allow_private=allow, allowed_cidrs=cidrs)
        if isinstance(config.auth, model.OAuth2Auth):
            await model.check_endpoint(config.auth.tokenUrl, allow_private=allow, allowed_cidrs=cidrs, field="auth.tokenUrl")

    async def _start_cursor(self, start_at: str) -> int:
        if start_at == "now":
            return await self.store.last_position()
        if start_at == "earliest":
            return await self.store.first_position() - 1
        return await self.store.position_before(model.start_ms(start_at))

    async def _change(
        self, sub_id: str, op: str, *, config: model.SubscriptionConfig | None = None, replay_to: int = 0,
        check: Any = None,
    ) -> None:  # fmt: skip
        """Record an admin change as desired settings; the node delivering the subscription
        applies it — here and now if that is this node, else within ``follow_interval``."""
        sender = self._get(sub_id)
        async with self._lock(sub_id):
            await self._refresh(sender)
            if check is not None:
                check(sender)
            stored = await self.store.get_subscription(sub_id)
            if stored is None:
                raise NotFound(f"there is no subscription {sub_id!r}")
            document, control = split_config(stored.config)
            if config is not None:
                document = self._sealed(config)
            else:  # as stored: it may carry a patch made on another node that is not applied here yet
                config = model.decode(self.secretbox.open_config(document) if self.secretbox else document)
            rev = max(control.rev + 1, now_ms())  # rises, whichever node's clock
            control = Control(rev, {**control.ops, op: rev}, replay_to if op == "replay" else control.replayTo)
            await self.store.update_config(sub_id, join_config(document, control))
            if self._mine(sub_id):
                await sender.stop()
                self._apply(sender, control, config)
                await sender.save(to_store=True)
                if self.started and self._should_run(sender):
                    sender.start()
            else:
                self._apply(sender, control, config)  # the view shows it as asked
        await self._announce()

    async def patch(self, sub_id: str, document: dict[str, Any]) -> dict[str, Any]:
        current = self._get(sub_id)
        await self._refresh(current)
        if current.state.state == rules.DEPROVISIONED:
            raise Conflict(f"subscription {sub_id} is deprovisioned; it cannot change any more")
        config = model.apply_patch(current.config, document, self.catalog)
        await self._check_endpoints(config)
        generated = model.complete_signing(config)
        model.compile_matcher(config, self.catalog, sub_id)  # refused here if it does not compile
        # Challenged when the endpoint changes, or when it starts to need the challenge (legacy →
        # cloudevents/adobe_io, or "challenge": true on a legacy subscription).
        newly_challenged = config.endpoint != current.config.endpoint or not current.config.needs_challenge
        if config.needs_challenge and newly_challenged:
            await verify_challenge(self.session, config.endpoint, timeout=self.options.challenge_timeout)
        await self._change(sub_id, "patch", config=config, check=self._refuse_deprovisioned)
        view = await self.view(sub_id)
        if generated:
            view["signing"] = {"hmacSecret": generated}
        return view

    async def delete(self, sub_id: str) -> dict[str, Any]:
        """Deprovision: delivery stops for good. The record stays, for its history."""
        await self._change(sub_id, "delete")
        return await self.view(sub_id)

    async def pause(self, sub_id: str) -> dict[str, Any]:
        await self._change(sub_id, "pause", check=self._refuse_deprovisioned)
        return await self.view(sub_id)

    async def resume(self, sub_id: str) -> dict[str, Any]:
        await self._change(sub_id, "resume", check=self._refuse_deprovisioned)
        return await self.view(sub_id)

    async def replay(self, sub_id: str, start: int | str) -> dict[str, Any]:
        """Move the cursor back to a position, or to a time (clamped to the oldest retained event).

        A position older than the log's first retained one is 410: those events are gone.
        """
        first = await self.store.first_position()
        if isinstance(start, str):
            position = max(await self.store.position_before(model.start_ms(start, field="from")), first - 1)
        else:
            position = start
            if position < first - 1:
                raise Gone(
                    f"from: position {position} has expired; the oldest retained position is {first}",
                    oldest=first,
                )

        def check(sender: Sender) -> None:
            self._refuse_deprovisioned(sender)
            if position > sender.state.cursor:
                raise Invalid(
                    f"from: replay moves the cursor back; {position} is ahead of the cursor {sender.state.cursor}",
                    field="from",
                )

        await self._change(sub_id, "replay", replay_to=position, check=check)
        return await self.view(sub_id)

    @staticmethod
    def _refuse_deprovisioned(sender: Sender) -> None:
        if sender.state.state == rules.DEPROVISIONED:
            raise Conflict(f"subscription {sender.id} is deprovisioned")

    async def attempts(self, sub_id: str, limit: int) -> bytes:
        """The attempt log, newest first, as a JSON document (stored bytes, joined)."""
        self._get(sub_id)
        docs = await self.store.list_attempts(sub_id, limit)
        return b'{"attempts":[' + b",".join(docs) + b"]}"

    async def dead_letters(self, sub_id: str, limit: int) -> list[dict[str, Any]]:
        self._get(sub_id)
        return [
            {"position": e.position, "eventid": e.eventid, "type": e.type, "id": e.id, "reason": reason}
            for e, reason in await self.store.dead_letters(sub_id, limit)
        ]

    # -- views --------------------------------------------------------------------------------------

    def list_ids(self, munchkin_id: str | None = None) -> list[str]:
        return [
            s.id
            for s in sorted(self.senders.values(), key=lambda s: (s.created_at, s.id))
            if munchkin_id is None or s.config.munchkinId == munchkin_id
        ]

    def munchkin_of(self, sub_id: str) -> str:
        return self._get(sub_id).config.munchkinId

    async def view(self, sub_id: str) -> dict[str, Any]:
        """The subscription as the API shows it: settings (secrets redacted) and live status."""
        sender = self._get(sub_id)
        await self._refresh(sender)
        s = sender.state
        pending, oldest = await self._pending_and_oldest(sender)
        lag = max(0.0, (now_ms() - oldest) / 1000) if oldest is not None else 0.0
        return {
            "id": sender.id,
            **model.redacted(sender.config),
            "createdAt": rfc3339(sender.created_at),
            "state": s.state,
            "pausedReason": s.pausedReason,
            "delivered": s.delivered,
            "pending": pending,
            "expired": s.expired,
            "deadLettered": s.deadLettered,
            "lagSeconds": round(lag, 3),
            "cursor": s.cursor,
            "consecutiveFailures": s.consecutiveFailures,
            "lastSuccessAt": rfc3339(s.lastSuccessAt),
            "lastAttemptAt": rfc3339(s.lastAttemptAt),
            "lastError": s.lastError,
            "nextAttemptAt": rfc3339(s.nextAttemptAt),
        }

    async def _pending_and_oldest(self, sender: Sender) -> tuple[int, int | None]:
        if sender.state.state == rules.DEPROVISIONED:
            return 0, None
        last = await self.store.last_position()
        pending, oldest = sender.pending(last), sender.oldest_held()
        if oldest is None and pending:
            # Nothing in hand (paused, or not read yet): look at one page to be exact when the
            # backlog is small, and to find the oldest waiting event.
            after = max(sender.scanned, sender.state.expiredThrough)  # (a cluster keeps expired events a while)
            events, upto = await read_own(self.store, sender.key, after, 500)
            matching = [e for e in events if sender.matches(e)]
            if upto >= last:
                pending = sender.held() + len(matching)
            oldest = matching[0].ingested_at if matching else None
        return pending, oldest

    def lags(self) -> Iterator[tuple[str, float]]:
        """For the lag gauge: what each sender holds, without touching the store."""
        now = now_ms()
        for sender in self.senders.values():
            if sender.state.state != rules.DEPROVISIONED:
                oldest = sender.oldest_held()
                yield sender.id, max(0.0, (now - oldest) / 1000) if oldest is not None else 0.0

    # -- retention --------------------------------------------------------------------------------

    async def count_expired(self, through: int) -> None:
        """Retention: events at or below ``through`` are past it. Each subscription this node
        delivers counts, in ``expired``, those it matches and has not received, and will not be
        sent them; ``expiredThrough`` (saved with its state, so it moves with the lease) says how
        far it has counted, so nothing is counted twice."""
        self.tail.forget_through(through)  # no sender is served those from memory any more
        for sender in list(self.senders.values()):
            if self._counts(sender) and _received_through(sender.state) < through:
                async with self._lock(sender.id):
                    await self._count_expired(sender, through)

    def _counts(self, sender: Sender) -> bool:
        return sender.state.state != rules.DEPROVISIONED and self._mine(sender.id)  # its owner counts

    async def _count_expired(self, sender: Sender, through: int) -> None:
        counted = False
        while self._counts(sender) and (after := _received_through(sender.state)) < through:
            page = await self.store.read(after, READ_PAGE, stream=sender.key[0], munchkin_id=sender.key[1])
            # No await from here on. The sender may have taken events into a batch during the
            # read: those are received (they will be delivered), so count above where it is now.
            after = _received_through(sender.state)
            upto = min(through, page[-1].position if len(page) == READ_PAGE else through)
            state = sender.state
            state.expired += sum(1 for e in page if after < e.position <= upto and sender.matches(e))
            state.expiredThrough = max(state.expiredThrough, upto)
            sender.drop_expired()  # read ahead but not sent: counted instead
            counted = True
        if counted and self._mine(sender.id):
            await sender.save()


def _received_through(state: rules.DeliveryState) -> int:
    """Matching events at or below it are delivered, in flight, or counted as expired."""
    return max(state.expiredThrough, state.cursor, state.inflight.upto if state.inflight else 0)


def _nothing(event: Event) -> bool:
    return False

