"""Operator alerts on their way: the triggers, and the outbox sender (SPEC §11).

Triggers, once per transition and not once per attempt:
- ``paused`` / ``reactivated``: a sender moved into ``paused`` (failures, a 410, or by hand), or
  from ``paused`` back to ``active`` (``DeliveryEngine.on_transition``);
- ``expiring``: retention counted events the subscription will never receive
  (``DeliveryEngine.on_expired``); told once until it is active again or has caught up;
- ``lagging``: the age of its oldest undelivered event passed ``lag_threshold``; told once until
  the lag is back under half of it (checked every ``lag_check_interval``);
- sources (checked as often): ``quota_exhausted`` and ``failing`` when a source this node runs
  enters that state, ``recovered`` when it is running again after one of them.
The ``expiring``, ``lagging`` and sources' marks are kept in the store (a setting per subscription
or source) and read again every ``lag_check_interval``, so neither a restart nor a lease that
moves to another node tells them again.

Listeners run on the event loop and must be quick: they queue the alert; a task writes it to the
store's outbox, one row per endpoint that wants it — from then on a restart loses nothing. The
send loop claims due rows (held for a while, so one node of a cluster sends each), POSTs each with
Standard Webhooks HMAC (``webhook-id`` = the CloudEvent's id, the same on every retry), and
retries a failure after ``retry_interval``, doubling up to ``retry_max_interval``, at most
``retry_attempts`` times.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from leadstream.alerts import model
from leadstream.alerts.service import Alerts
from leadstream.clock import now_ms
from leadstream.delivery.engine import DeliveryEngine, Expiry
from leadstream.delivery.http import post
from leadstream.logs import log
from leadstream.security.signing import hmac_headers
from leadstream.settings import Settings
from leadstream.sources.runner import SourceRunner
from leadstream.store.base import AlertMessage, Store
from leadstream.subscriptions import state as rules
from leadstream.subscriptions.state import DeliveryState, Transition

FLAG_SETTING = "alerts.flags."  # + subscription id: the marks it carries ("expiring", "lagging")
KEEP_MESSAGES = 10_000  # outbox rows kept once sent (or given up), for the recent alerts
CLAIM = 20  # rows claimed per round
SOURCE_ALERTS = {"quota_exhausted": model.SOURCE_QUOTA_EXHAUSTED, "failing": model.SOURCE_FAILING}


@dataclass(frozen=True)
class DispatchOptions:
    retry_interval: float = 5.0  # seconds before the first retry; doubles every time…
    retry_max_interval: float = 600.0  # …up to this
    retry_attempts: int = 15  # attempts in all, then the alert is given up (state "failed")
    poll_interval: float = 1.0  # how often due retries (and other nodes' alerts) are looked for
    timeout: float = 10.0  # per POST
    lag_threshold: float = 900.0  # seconds of lag that make a subscription "lagging"
    lag_check_interval: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> DispatchOptions:
        return cls(
            retry_interval=settings.alert_retry_interval,
            retry_max_interval=settings.alert_retry_max_interval,
            retry_attempts=settings.alert_retry_attempts,
            poll_interval=settings.alert_poll_interval,
            timeout=settings.alert_timeout,
            lag_threshold=settings.alert_lag_threshold,
            lag_check_interval=settings.alert_lag_check_interval,
        )


def backoff(failed_attempts: int, initial: float, maximum: float) -> float:
    """Seconds to wait after ``failed_attempts`` failures in a row: initial, twice that, … capped."""
    return min(maximum, initial * 2 ** max(0, failed_attempts - 1))


class AlertDispatcher:
    def __init__(
        self, store: Store, alerts: Alerts, session: aiohttp.ClientSession, options: DispatchOptions,
        engine: DeliveryEngine | None = None, sources: SourceRunner | None = None,
    ) -> None:  # fmt: skip
        self.store = store
        self.alerts = alerts
        self.session = session
        self.options = options
        self.engine = engine  # lags and subscription names; None: no subscription triggers here
        self.sources = sources  # the sources this node runs, whose states are watched
        self.flags: dict[str, set[str]] = {}
        self._queued: list[tuple[str, str, dict[str, Any]] | str] = []  # alerts to write; a str: flags to save
        self._has_queued = asyncio.Event()
        self._wake = asyncio.Event()  # something may be due to send
        self._writing = asyncio.Lock()  # marks are not read back while they are being written
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.reload_marks()
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="alerts-write"),
            asyncio.create_task(self._send_loop(), name="alerts-send"),
        ]
        self._tasks.append(asyncio.create_task(self._watch_loop(), name="alerts-watch"))

    async def stop(self) -> None:
        """Stop sending; write what is queued (it is sent after the next start)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self._write()
        except Exception as exc:
            log.warning("alerts could not be written at shutdown", error=str(exc), alerts=len(self._queued))

    # -- triggers (on the event loop, quick) ------------------------------------------------------------

    def raise_alert(self, event_type: str, subject: str, data: dict[str, Any]) -> None:
        """Queue an alert for every endpoint that wants ``event_type`` (sources call this too)."""
        self._queued.append((event_type, subject, data))
        self._has_queued.set()

    def on_transition(self, transition: Transition) -> None:
        before, after, sub_id = transition.before, transition.after, transition.subscription
        if after.state == rules.PAUSED and before.state != rules.PAUSED:  # (not a paused one paused by hand too)
            self._subscription_alert(model.SUBSCRIPTION_PAUSED, sub_id, transition.munchkin_id, after)
        elif after.state == rules.ACTIVE and before.state == rules.PAUSED:
            self._subscription_alert(model.SUBSCRIPTION_REACTIVATED, sub_id, transition.munchkin_id, after)
        if after.state == rules.ACTIVE:
            self._mark(sub_id, "expiring", False)
        elif after.state == rules.DEPROVISIONED:
            self._mark(sub_id, "expiring", False)
            self._mark(sub_id, "lagging", False)

    def on_expired(self, expiry: Expiry) -> None:
        if self._mark(expiry.subscription, "expiring", True):
            extra = {"newlyExpired": expiry.newly, "expired": expiry.total}
            self._subscription_alert(model.SUBSCRIPTION_EXPIRING, expiry.subscription, expiry.munchkin_id, None, extra)

    def check_lags(self) -> None:
        """Mark (and tell) the subscriptions whose lag passed the threshold; unmark those back under half."""
        if self.engine is None:
            return
        threshold = self.options.lag_threshold
        for sub_id, lag in list(self.engine.lags()):
            if lag >= threshold:
                if self._mark(sub_id, "lagging", True):
                    sender = self.engine.senders.get(sub_id)
                    munchkin = sender.config.munchkinId if sender is not None else ""
                    extra = {"lagSeconds": round(lag, 1), "thresholdSeconds": threshold}
                    self._subscription_alert(model.SUBSCRIPTION_LAGGING, sub_id, munchkin, None, extra)
            elif lag < threshold / 2:
                self._mark(sub_id, "lagging", False)
                if lag == 0:
                    self._mark(sub_id, "expiring", False)  # caught up

    def check_sources(self) -> None:
        """Tell a source entering ``quota_exhausted`` or ``failing``, and its recovery from them."""
        if self.sources is None:
            return
        for source_id, poller in list(self.sources.states()):
            state = poller.state
            if state not in SOURCE_ALERTS and (state != "running" or poller.last_poll_at is None):
                continue  # throttled (Marketo's 20 s window: nothing for a person to do), or not polled yet
            if state in SOURCE_ALERTS:
                told = self._mark(source_id, state, True)
            else:
                told = bool([flag for flag in SOURCE_ALERTS if self._mark(source_id, flag, False)])  # clear all
            if told:
                data = {
                    "sourceId": source_id, "munchkinId": poller.config.munchkinId, "name": poller.config.name,
                    "state": state, "lastError": poller.last_error,
                }  # fmt: skip
                self.raise_alert(SOURCE_ALERTS.get(state, model.SOURCE_RECOVERED), source_id, data)

    def _mark(self, sub_id: str, flag: str, on: bool) -> bool:
        """Set or clear a mark; True when that changed it (then it is saved, and told if set)."""
        marks = self.flags.setdefault(sub_id, set())
        if (flag in marks) == on:
            return False
        if on:
            marks.add(flag)
        else:
            marks.discard(flag)
        self._queued.append(sub_id)
        self._has_queued.set()
        return True

    def _subscription_alert(
        self, event_type: str, sub_id: str, munchkin_id: str, state: DeliveryState | None,
        extra: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        sender = self.engine.senders.get(sub_id) if self.engine is not None else None
        state = state or (sender.state if sender is not None else None)
        data: dict[str, Any] = {"subscriptionId": sub_id, "munchkinId": munchkin_id}
        if sender is not None:
            data["name"] = sender.config.name
        if state is not None:
            data.update(
                state=state.state, pausedReason=state.pausedReason, lastError=state.lastError,
                consecutiveFailures=state.consecutiveFailures,
            )  # fmt: skip
        data.update(extra or {})
        self.raise_alert(event_type, sub_id, data)

    # -- into the outbox ------------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            await self._has_queued.wait()
            self._has_queued.clear()
            try:
                await self._write()
            except Exception as exc:  # the store is down: keep them queued, try again shortly
                log.warning("alerts not written yet; retrying", error=str(exc), alerts=len(self._queued))
                await asyncio.sleep(1.0)
                self._has_queued.set()

    async def reload_marks(self) -> None:
        """The marks as the store has them: set or cleared by another node too (whose lease moved here)."""
        async with self._writing:
            stored = await self.store.settings(FLAG_SETTING)
        changing = {q for q in self._queued if isinstance(q, str)}  # set here, not written yet: ours stand
        for name, value in stored.items():
            sub_id = name.removeprefix(FLAG_SETTING)
            if sub_id not in changing:
                self.flags[sub_id] = set(orjson.loads(value))

    async def _write(self) -> None:
        async with self._writing:
            await self._write_queued()

    async def _write_queued(self) -> None:
        queued, self._queued = self._queued, []
        try:
            rows: list[tuple[str | None, bytes]] = []
            endpoints = await self.alerts.all() if any(not isinstance(q, str) for q in queued) else []
            for item in queued:
                if isinstance(item, str):
                    continue
                event_type, subject, data = item
                message = model.cloudevent(event_type, subject, data)
                wanted = [(alert.id, message) for alert in endpoints if alert.wants(event_type)]
                rows.extend(wanted or [(None, message)])  # kept either way: the console shows it
                log.info("alert", type=event_type, subject=subject, endpoints=len(wanted))
            if rows:
                await self.store.enqueue_alert_messages(rows, now_ms(), KEEP_MESSAGES)
            for sub_id in dict.fromkeys(q for q in queued if isinstance(q, str)):
                marks = sorted(self.flags.get(sub_id, ()))
                await self.store.put_setting(FLAG_SETTING + sub_id, orjson.dumps(marks))
        except BaseException:
            self._queued[:0] = queued  # nothing is lost: written next time (an alert may then come twice)
            raise
        if rows:
            self._wake.set()

    # -- out of it ------------------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        while True:
            # (asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that comes as
            # the wake does, and stop() would wait for this task for ever)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.poll_interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.send_due()
            except Exception as exc:  # the store is down: the next round tries again
                log.warning("alerts not sent this round", error=str(exc))

    async def send_due(self) -> int:
        """Send what is due now; returns how many were tried."""
        hold_ms = int((self.options.timeout + 5) * 1000)  # longer than any POST takes
        claimed = await self.store.claim_alert_messages(now_ms(), hold_ms, CLAIM)
        if claimed:
            endpoints = {alert.id: alert for alert in await self.alerts.all()}
            await asyncio.gather(*(self._send(row, endpoints.get(row.alert_id or "")) for row in claimed))
            if len(claimed) == CLAIM:
                self._wake.set()  # more may be waiting
        return len(claimed)

    async def _send(self, row: AlertMessage, alert: model.Alert | None) -> None:
        attempts = row.attempts + 1
        if alert is None:  # deleted while this was claimed
            await self.store.settle_alert_message(row.seq, "failed", row.attempts, 0, "the alert endpoint is gone")
            return
        event_id = orjson.loads(row.message)["id"]
        headers = {"Content-Type": "application/cloudevents+json", **hmac_headers(alert.secret, event_id, row.message)}
        answer = await post(self.session, alert.endpoint, row.message, headers, self.options.timeout)
        if answer.ok:
            await self.store.settle_alert_message(row.seq, "sent", attempts, 0, None)
            return
        error = answer.describe()
        if attempts >= self.options.retry_attempts:
            log.warning("alert given up", alert=alert.id, alert_event=event_id, attempts=attempts, error=error)
            await self.store.settle_alert_message(row.seq, "failed", attempts, 0, error)
            return
        wait = backoff(attempts, self.options.retry_interval, self.options.retry_max_interval)
        await self.store.settle_alert_message(row.seq, "pending", attempts, now_ms() + int(wait * 1000), error)

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.lag_check_interval)
            try:
                await self.reload_marks()
            except Exception as exc:  # the store is down: go on with the marks known here
                log.warning("alert marks not read", error=str(exc))
            self.check_lags()
            self.check_sources()
