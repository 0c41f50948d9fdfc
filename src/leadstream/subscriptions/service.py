"""The admin commands on subscriptions, and the views the API shows (SPEC §3).

Every command reads the subscription from the store, so any node answers with what has been
committed, and writes what it asks as the subscription's control record (compare-and-set, so two
nodes asking at once both count: ``subscriptions.control``). Then it tells this node's delivery
engine, which applies the change at once when it delivers the subscription; otherwise the node
that does notices within its follow interval.

A view shows the live state when this node delivers the subscription (``Delivery.live``), and
otherwise the state its owner last saved; either way with the changes asked and not applied yet
laid over it, so a change made on any node shows in every node's next answer (SPEC §12).

The engine is reached through the ``Delivery`` port below, which ``leadstream.delivery.engine``
implements: this package never imports delivery.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import aiohttp

from leadstream import positions
from leadstream.catalog import Catalog
from leadstream.catalog import persistence as catalogs
from leadstream.clock import now_ms, rfc3339
from leadstream.errors import Conflict, Gone, Invalid, NotFound
from leadstream.events import Event
from leadstream.samples import sample_event
from leadstream.security.guard import GuardPolicy
from leadstream.security.secretbox import SecretBox
from leadstream.store.base import Store, StoredSubscription
from leadstream.subscriptions import control as admin
from leadstream.subscriptions import state as rules
from leadstream.subscriptions.challenge import CHALLENGE_SECONDS, verify_challenge
from leadstream.subscriptions.config import SubscriptionConfig, redacted, seal, unseal
from leadstream.subscriptions.matching import Matcher, compile_leniently, compile_matcher, compile_type_filter
from leadstream.subscriptions.state import DeliveryState
from leadstream.subscriptions.validation import apply_patch, check_endpoints, complete_signing, parse_new, start_ms
from leadstream.tenants import Visible, visible_page

# Subscription id → (delivery state, control revision it reflects), newest saves of another process.
SavedElsewhere = Callable[[], dict[str, tuple[bytes, int]]]

PENDING_PAGE = 500  # events read to make a small backlog's pending exact, and to find its oldest event
CHANGE_ATTEMPTS = 10  # compare-and-set rounds before an admin change gives up (another writer each time)


@dataclass(frozen=True, slots=True)
class Live:
    """A subscription as the sender delivering it knows it."""

    state: DeliveryState
    scanned: int  # the log is read up to here
    held: int  # events read and not yet delivered
    share: float  # the share of the log this subscription takes, so far (for the unread rest)
    oldest: int | None  # ingest time (ms) of the oldest undelivered event read
    matches: Matcher
    applied: int = 0  # the control revision the state reflects


class SampleAnswer(Protocol):
    @property
    def status(self) -> int | None: ...

    @property
    def duration(self) -> float: ...

    @property
    def ok(self) -> bool: ...

    def describe(self) -> str: ...


SendSample = Callable[[str, SubscriptionConfig, Event], Awaitable[SampleAnswer]]


class Delivery(Protocol):
    """This node's delivery engine, as the admin side sees it."""

    def live(self, sub_id: str) -> Live | None:
        """The subscription's live state, if this node delivers it."""

    async def changed(self, sub_id: str) -> None:
        """An admin change was asked (or the subscription created): apply it now if this node
        delivers the subscription."""


def _everyone(munchkin_id: str) -> bool:
    return True


class Subscriptions:
    def __init__(
        self, store: Store, catalog: Catalog, *, secretbox: SecretBox | None, policy: GuardPolicy,
        session: aiohttp.ClientSession, send_sample: SendSample, delivery: Delivery | None = None,
        challenge_timeout: float = CHALLENGE_SECONDS, saved_elsewhere: SavedElsewhere | None = None,
    ) -> None:  # fmt: skip
        self.store = store
        self.catalog = catalog
        self.secretbox = secretbox
        self.policy = policy  # where endpoints may be (the outbound guard)
        self.session = session  # for challenges
        self.send_sample = send_sample
        self.delivery = delivery  # None: delivery runs in another process, which follows the store
        # That process's saves since its last checkpoint to the store (a second old at most): views
        # show them, not the checkpoint.
        self.saved_elsewhere = saved_elsewhere
        self.challenge_timeout = challenge_timeout

    # -- reading ------------------------------------------------------------------------------------

    async def get(self, sub_id: str, visible: Visible = _everyone) -> StoredSubscription:
        """The stored subscription, or NotFound — also when it is another tenant's."""
        stored = await self.store.get_subscription(sub_id)
        if stored is None or not visible(stored.munchkin_id):
            raise NotFound(f"there is no subscription {sub_id!r}")
        return stored

    def config_of(self, stored: StoredSubscription) -> SubscriptionConfig:
        """The settings, secrets opened (for whoever must use them; never shown)."""
        return unseal(stored.config, self.secretbox)

    def state_of(self, stored: StoredSubscription) -> DeliveryState:
        """The delivery state now: live where this node delivers it, else as saved with the
        changes asked since laid over it."""
        live = self.delivery.live(stored.id) if self.delivery is not None else None
        return self._projected(stored, live)

    @staticmethod
    def _projected(stored: StoredSubscription, live: Live | None = None) -> DeliveryState:
        """The state with the changes asked after it laid over it (asked on another node, say,
        and not seen by the sender yet)."""
        if live is not None:
            state, applied = live.state, live.applied
        else:
            state, applied = rules.decode(stored.state), stored.applied
        change = admin.pending_change(state, stored.control, applied)
        return change.state if change is not None else state

    async def active(self, sub_id: str, visible: Visible = _everyone) -> tuple[StoredSubscription, SubscriptionConfig]:
        """A subscription that is not deprovisioned (else Conflict), and its settings."""
        stored = await self.get(sub_id, visible)
        if self.state_of(stored).state == rules.DEPROVISIONED:
            raise Conflict(f"subscription {sub_id} is deprovisioned")
        return stored, self.config_of(stored)

    async def view(self, sub_id: str, visible: Visible = _everyone) -> dict[str, Any]:
        return (await self._views([await self.get(sub_id, visible)]))[0]

    async def views(
        self, munchkin_id: str | None, visible: Visible, *, after: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """A page of views, oldest first, after the subscription ``after``; and whether more follow."""
        page, more = visible_page(await self.store.list_subscriptions(munchkin_id), visible, after=after, limit=limit)
        return await self._views(page), more

    async def _views(self, found: list[StoredSubscription]) -> list[dict[str, Any]]:
        saved = self.saved_elsewhere() if self.saved_elsewhere is not None and found else {}
        fresher = [replace(s, state=saved[s.id][0], applied=saved[s.id][1]) if s.id in saved else s for s in found]
        return [await self._view(s) for s in fresher]

    async def _view(self, stored: StoredSubscription, *, live: bool = True) -> dict[str, Any]:
        """The subscription as the API shows it: settings (secrets redacted) and live status —
        or, with ``live`` False, as its last save in the store (the answer to an admin command:
        the state the change left, before the sender moved on)."""
        config = self.config_of(stored)
        s, pending, oldest = await self._status(stored, config, live)
        lag = max(0.0, (now_ms() - oldest) / 1000) if oldest is not None else 0.0
        return {
            "id": stored.id,
            **redacted(config),
            "createdAt": rfc3339(stored.created_at),
            "state": s.state,
            "pausedReason": s.pausedReason,
            "delivered": s.delivered,
            "pending": pending,
            "expired": s.expired,
            "deadLettered": s.deadLettered,
            "lagSeconds": round(lag, 3),
            "cursor": positions.encode(s.cursor),
            "consecutiveFailures": s.consecutiveFailures,
            "lastSuccessAt": rfc3339(s.lastSuccessAt),
            "lastAttemptAt": rfc3339(s.lastAttemptAt),
            "lastError": s.lastError,
            "nextAttemptAt": rfc3339(s.nextAttemptAt),
        }

    async def _status(
        self, stored: StoredSubscription, config: SubscriptionConfig, use_live: bool
    ) -> tuple[DeliveryState, int, int | None]:
        """The state, the matching events not delivered yet (exact for what is read; for the
        unread rest estimated from the subscription's share of the log), and the ingest time of
        the oldest of them."""
        live = self.delivery.live(stored.id) if self.delivery is not None and use_live else None
        if live is None:
            state = self._projected(stored)
            live = Live(state, state.cursor, 0, 1.0, None, compile_leniently(config, self.catalog, stored.id)[0])
        elif stored.control.rev > live.applied:  # asked elsewhere, not applied by the sender yet
            state = self._projected(stored, live)
            live = Live(state, state.cursor, 0, 1.0, None, live.matches, stored.control.rev)
        state = live.state
        if state.state == rules.DEPROVISIONED:
            return state, 0, None
        last = await self.store.last_position()
        pending = live.held + round(max(0, last - live.scanned) * min(1.0, live.share))
        oldest = live.oldest
        if oldest is None and pending:
            # Nothing in hand (paused, or not read yet): look at one page to be exact when the
            # backlog is small, and to find the oldest waiting event.
            after = max(live.scanned, state.expiredThrough)  # (a cluster keeps expired events a while)
            events, upto = await self.store.read_page(
                after, PENDING_PAGE, stream=config.stream, munchkin_id=config.munchkinId
            )
            matching = [e for e in events if live.matches(e)]
            if upto >= last:
                pending = live.held + len(matching)
            oldest = matching[0].ingested_at if matching else None
        return state, pending, oldest

    async def attempts(self, sub_id: str, limit: int, visible: Visible = _everyone) -> bytes:
        """The attempt log, newest first, as a JSON document (stored bytes, joined)."""
        await self.get(sub_id, visible)
        docs = await self.store.list_attempts(sub_id, limit)
        return b'{"attempts":[' + b",".join(docs) + b"]}"

    async def dead_letters(self, sub_id: str, limit: int, visible: Visible = _everyone) -> list[dict[str, Any]]:
        """The events refused for good; 404 once deprovisioned (nothing can be redelivered any more)."""
        if self.state_of(await self.get(sub_id, visible)).state == rules.DEPROVISIONED:
            raise NotFound(f"subscription {sub_id} is deprovisioned: its dead letters are no longer kept for it")
        return [
            {
                "position": positions.encode(e.position),
                "eventid": e.eventid,
                "type": e.type,
                "id": e.id,
                "reason": reason,
            }
            for e, reason in await self.store.dead_letters(sub_id, limit)
        ]

    # -- commands -----------------------------------------------------------------------------------

    async def create(self, document: dict[str, Any]) -> dict[str, Any]:
        """A new subscription (SPEC §3); its view, with a generated HMAC secret shown this once."""
        config = await self._with_catalog(lambda: parse_new(document, self.catalog))
        await check_endpoints(config, self.policy)
        generated = complete_signing(config)
        if config.needs_challenge:
            await verify_challenge(self.session, config.endpoint, timeout=self.challenge_timeout)
        sub_id = str(uuid.uuid4())
        compile_matcher(config, self.catalog, sub_id)  # refused here if it does not compile
        state = DeliveryState(cursor=await self._start_cursor(config.startAt))
        created = now_ms()
        await self.store.create_subscription(
            StoredSubscription(
                sub_id, config.munchkinId, seal(config, self.secretbox), rules.encode(state), created,
                admin.created(created), applied=created,
            )
        )  # fmt: skip
        await self._tell(sub_id)
        return _with_secret(await self._answer(sub_id), generated)

    async def _with_catalog(self, parse: Callable[[], SubscriptionConfig]) -> SubscriptionConfig:
        """``parse``; refused, once more after reading the tenant catalogs from the store: the
        event type it names may have been loaded on another node just now (read-your-writes)."""
        try:
            return parse()
        except Invalid:
            await catalogs.restore(self.catalog, self.store)
            return parse()

    async def _start_cursor(self, start_at: str) -> int:
        if start_at == "now":
            return await self.store.last_position()
        if start_at == "earliest":
            return await self.store.first_position() - 1
        return await self.store.position_before(start_ms(start_at))

    async def patch(self, sub_id: str, document: dict[str, Any], visible: Visible = _everyone) -> dict[str, Any]:
        stored = await self.get(sub_id, visible)
        _refuse_deprovisioned(sub_id, self.state_of(stored), "it cannot change any more")
        current = self.config_of(stored)
        config = await self._with_catalog(lambda: apply_patch(current, document, self.catalog))
        await check_endpoints(config, self.policy)
        generated = complete_signing(config)
        compile_matcher(config, self.catalog, sub_id)  # refused here if it does not compile
        # Challenged when the endpoint changes, or when it starts to need the challenge (legacy →
        # cloudevents/adobe_io, or "challenge": true on a legacy subscription).
        newly_challenged = config.endpoint != current.endpoint or not current.needs_challenge
        if config.needs_challenge and newly_challenged:
            await verify_challenge(self.session, config.endpoint, timeout=self.challenge_timeout)
        await self._ask(sub_id, "patch", config=config, check=lambda s: _refuse_deprovisioned(sub_id, s))
        return _with_secret(await self._answer(sub_id), generated)

    async def pause(self, sub_id: str, visible: Visible = _everyone) -> dict[str, Any]:
        await self.get(sub_id, visible)
        await self._ask(sub_id, "pause", check=lambda s: _refuse_deprovisioned(sub_id, s))
        return await self._answer(sub_id)

    async def resume(self, sub_id: str, visible: Visible = _everyone) -> dict[str, Any]:
        await self.get(sub_id, visible)
        await self._ask(sub_id, "resume", check=lambda s: _refuse_deprovisioned(sub_id, s))
        return await self._answer(sub_id)

    async def delete(self, sub_id: str, visible: Visible = _everyone) -> dict[str, Any]:
        """Deprovision: delivery stops for good. The record stays, for its history."""
        await self.get(sub_id, visible)
        await self._ask(sub_id, "delete")
        return await self._answer(sub_id)

    async def replay(self, sub_id: str, start: int | str, visible: Visible = _everyone) -> dict[str, Any]:
        """Move the cursor back to a position (a token, or the bare integer of the first API), or to
        a time (clamped to the oldest retained event).

        A position older than the log's first retained one is 410: those events are gone.
        """
        await self.get(sub_id, visible)
        first = await self.store.first_position()
        position = positions.decode_or_none(start) if isinstance(start, str) else start
        if position is None:
            assert isinstance(start, str)
            position = max(await self.store.position_before(start_ms(start, field="from")), first - 1)
        elif position < first - 1:
            raise Gone(
                f"from: position {positions.encode(position)} has expired; the oldest retained position is "
                f"{positions.encode(first)}",
                oldest=positions.encode(first),
            )

        def check(state: DeliveryState) -> None:
            _refuse_deprovisioned(sub_id, state)
            if position > state.cursor:
                raise Invalid(
                    f"from: replay moves the cursor back; {positions.encode(position)} is ahead of the cursor "
                    f"{positions.encode(state.cursor)}",
                    field="from",
                )

        await self._ask(sub_id, "replay", replay_to=position, check=check)
        return await self._answer(sub_id)

    async def sample(self, sub_id: str, requested: Any, visible: Visible = _everyone) -> dict[str, Any]:
        """Push a sample event of a type to the endpoint (SPEC §5) and say what it answered."""
        stored, config = await self.active(sub_id, visible)
        if isinstance(requested, bool) or not isinstance(requested, int | str):
            raise Invalid(f"type: expected an event type (an id or a name), got {requested!r}", field="type")
        event = sample_event(self.catalog, config.stream, requested, config.munchkinId)
        if not compile_type_filter(config, self.catalog)(event):
            raise Invalid(
                f"type: subscription {sub_id} does not take {requested!r} (its eventTypes: {config.eventTypes}"
                f"{', customObjects: false' if event.etype.startswith('co:') and not config.customObjects else ''})",
                field="type",
            )
        answer = await self.send_sample(stored.id, config, event)
        return {
            "delivered": answer.ok,
            "status": answer.status,
            "error": None if answer.ok else answer.describe(),
            "durationMs": round(answer.duration * 1000, 2),
            "event": {"eventid": event.eventid, "type": event.type, "id": event.id},
        }

    async def _ask(
        self, sub_id: str, op: admin.Op, *, config: SubscriptionConfig | None = None, replay_to: int = 0,
        check: Callable[[DeliveryState], None] | None = None,
    ) -> None:  # fmt: skip
        """Record an admin change as desired settings, then let this node's engine apply it."""
        sealed = seal(config, self.secretbox) if config is not None else None
        for _ in range(CHANGE_ATTEMPTS):
            stored = await self.get(sub_id)
            if check is not None:
                check(self.state_of(stored))
            control = admin.asked(stored.control, op, replay_to=replay_to)
            if await self.store.update_control(sub_id, control, expected_rev=stored.control.rev, config=sealed):
                break
        else:
            raise Conflict(f"subscription {sub_id} is being changed by other requests at this moment; try again")
        await self._tell(sub_id)

    async def _tell(self, sub_id: str) -> None:
        if self.delivery is not None:
            await self.delivery.changed(sub_id)

    async def _answer(self, sub_id: str) -> dict[str, Any]:
        """What an admin command answers: the subscription as the change left it."""
        return await self._view(await self.get(sub_id), live=False)


def _refuse_deprovisioned(sub_id: str, state: DeliveryState, why: str = "") -> None:
    if state.state == rules.DEPROVISIONED:
        raise Conflict(f"subscription {sub_id} is deprovisioned" + (f"; {why}" if why else ""))


def _with_secret(view: dict[str, Any], generated: str | None) -> dict[str, Any]:
    """A view that shows an HMAC secret just generated (``"signing":{"hmac":true}``), this once."""
    if generated:
        view["signing"] = {"hmacSecret": generated}
    return view
