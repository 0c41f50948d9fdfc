"""The ``marketo`` source at work (SPEC §10.1): Marketo's REST API read as a stream into the log.

On start (and every ``catalog_refresh``) Get Activity Types is loaded into the tenant's catalog, so
custom types validate and stream too. The types to read are split into groups of at most 10 ids
(``planner.type_groups``), plus one group for Get Deleted Leads when ``deletedLeads`` is on. A
group's poll starts from its checkpointed paging token (the first one from a paging token for
``startAt``) and reads pages while ``moreResult`` is true (short pages included). Each page's
records are validated like any producer's (§1.2) and appended; only once the append has returned
(durable) is the page's ``nextPageToken`` checkpointed. A crash or a lease move in between reads
the page again, and its records are duplicates by ``marketoGUID``: no gap, nothing stored twice.
Records of one group are appended in the order the instance returned them.

Which group is polled next, and when, is the planner's (``planner.plan_polls``), from what is
left of today's budget; every call holds a reservation of the Munchkin ID's budget
(``budget.ApiBudget``), shared with every other source and node. Errors go through
``budget.react`` (SPEC §10.1's table); the waits it names are settable (``PollerOptions``) so that
tests need not wait minutes. ``lastError`` quotes Marketo's code and message.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from leadstream.catalog import Catalog
from leadstream.catalog import persistence as catalogs
from leadstream.clock import rfc3339
from leadstream.errors import LeadstreamError
from leadstream.events import Event, RecordError, Validator
from leadstream.logs import log
from leadstream.sources import metrics
from leadstream.sources.budget import ApiBudget, ShareSpent, backoff_delay, react
from leadstream.sources.config import MarketoSourceConfig, resolve_types
from leadstream.sources.marketo.client import MarketoClient, Page
from leadstream.sources.marketo.errors import (
    AuthFailed,
    MarketoError,
    QuotaExhausted,
    RateLimited,
    TooManyConcurrent,
    Transient,
)
from leadstream.sources.planner import (
    DELETED_LEADS,
    DayBudget,
    GroupHistory,
    GroupPlan,
    Plan,
    group_key,
    plan_polls,
    record_poll,
    type_groups,
)
from leadstream.store.base import Store


@dataclass(frozen=True, slots=True)
class PollerOptions:
    window_seconds: float = 20.0  # Marketo's rate window
    backoff_base: float = 1.0
    backoff_cap: float = 300.0
    auth_retry: float = 300.0
    quota_probe: float = 3600.0
    catalog_refresh: float = 86_400.0
    call_timeout: float = 30.0


@dataclass(slots=True)
class Group:
    key: str
    type_ids: tuple[int, ...]  # () for Get Deleted Leads
    token: str | None = None  # the checkpointed nextPageToken (None: start from startAt)
    checkpoint_at: str | None = None  # activityDate of the last record read
    caught_up_at: float | None = None  # every activity dated before this has been read (epoch s)
    last_poll_at: float | None = None
    history: GroupHistory = field(init=False)

    def __post_init__(self) -> None:
        self.history = GroupHistory(self.key, self.type_ids)

    @property
    def deleted_leads(self) -> bool:
        return self.key == DELETED_LEADS


class MarketoPoller:
    def __init__(
        self, source_id: str, config: MarketoSourceConfig, *, store: Store, catalog: Catalog, validator: Validator,
        client: MarketoClient, budget: ApiBudget, options: PollerOptions, clock: Callable[[], float] = time.time,
        saved: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        self.source_id, self.config = source_id, config
        self.store, self.catalog, self.validator = store, catalog, validator
        self.client, self.budget, self.options, self.clock = client, budget, options, clock
        self.saved = saved or {}  # the status a runner saved last (here or on another node): counts go on
        self.groups: list[Group] | None = None
        self.plan: Plan | None = None
        self.state = "running"
        self.last_error: str | None = None
        counts = {name: int(self.saved.get(name, 0)) for name in ("published", "duplicates", "rejected", "failures")}
        self.published, self.duplicates = counts["published"], counts["duplicates"]
        self.rejected, self.failures = counts["rejected"], counts["failures"]
        self.last_poll_at: float | None = None
        self._catalog_due = 0.0
        self.peers = 1  # sources of this Munchkin ID on this node, which share what is left of the budget
        self._rng = random.Random()
        self._started_at = datetime.fromisoformat(config.startAt.replace("Z", "+00:00"))

    # -- status ---------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        groups = self.groups or []
        planned = {g.key: g.planned_poll_interval_ms for g in self.plan.groups} if self.plan else {}
        caught_up = self._caught_up()
        return {
            "state": self.state,
            "published": self.published,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "failures": self.failures,
            "lastPollAt": rfc3339(int(self.last_poll_at * 1000)) if self.last_poll_at else None,
            "caughtUpAt": int(caught_up * 1000) if caught_up is not None else None,
            "lastError": self.last_error,
            "groups": [
                {
                    "key": g.key,
                    "activityTypeIds": list(g.type_ids) if not g.deleted_leads else [37],
                    "checkpointAt": g.checkpoint_at,
                    "plannedPollIntervalMs": planned.get(g.key),
                    "lastPollAt": rfc3339(int(g.last_poll_at * 1000)) if g.last_poll_at else None,
                }
                for g in groups
            ],
        }

    def _caught_up(self) -> float | None:
        """Every group has read everything dated before this (None: some group has not caught up once)."""
        moments = [g.caught_up_at for g in self.groups or []]
        known = [m for m in moments if m is not None]
        return min(known) if known and len(known) == len(moments) else None

    def lag(self) -> float:
        caught_up = self._caught_up()
        return max(0.0, self.clock() - (caught_up if caught_up is not None else self._started_at.timestamp()))

    async def _save_status(self) -> None:
        try:
            await self.store.save_source_status(self.source_id, orjson.dumps(self.status()))
        except LeadstreamError as exc:  # the store is down: the next save carries it
            log.warning("source status not saved", source=self.source_id, error=str(exc))

    # -- the loop -------------------------------------------------------------------------------------
    async def run(self) -> None:
        failures_in_row = 0
        while True:
            try:
                await self._prepare()
                group, due = self._next()
                # a quiet group's poll may be planned far off: the catalog refresh comes in time regardless
                await asyncio.sleep(max(0.0, min(due, self._catalog_due) - self.clock()))
                if self.clock() < due:
                    continue  # woken for the refresh (the next round's _prepare)
                await self._poll(group)
                failures_in_row = 0
            except (MarketoError, ShareSpent) as error:
                wait = self._react(error, failures_in_row)
                failures_in_row += 1
                await self._save_status()
                await asyncio.sleep(wait)
            except LeadstreamError as error:  # the store is unavailable, an activity type name is gone…
                self._move("failing", str(error))
                self.failures += 1
                failures_in_row += 1
                await self._save_status()
                await asyncio.sleep(backoff_delay(failures_in_row, self._rng, **self._backoff()))

    def _move(self, state: str, error: str | None) -> None:
        """Set the state and ``lastError``; a move to another state is logged once, with its reason
        (each failed call has its own line: "source call failed")."""
        was, self.state, self.last_error = self.state, state, error
        if state == was:
            return
        (log.info if state == "running" else log.warning)(
            "source state changed", source=self.source_id, munchkin_id=self.config.munchkinId, state=state, was=was,
            reason=error or "Marketo answered again: the page was read and checkpointed",
        )  # fmt: skip

    def _backoff(self) -> dict[str, float]:
        return {"base": self.options.backoff_base, "cap": self.options.backoff_cap}

    def _react(self, error: Exception, attempt: int) -> float:
        """State and lastError from SPEC §10.1's table; returns how long to wait before trying again."""
        now = self.clock()
        reaction = react(error, now=now, attempt=attempt, rng=self._rng)
        if isinstance(error, RateLimited):
            retry_at = reaction.retry_at
        elif isinstance(error, QuotaExhausted):  # until the reset; probed now and then (uncounted when refused)
            retry_at = min(reaction.retry_at, now + self.options.quota_probe)
        elif isinstance(error, ShareSpent):
            retry_at = reaction.retry_at
        elif isinstance(error, TooManyConcurrent):
            retry_at = now + backoff_delay(attempt, self._rng, base=self.options.backoff_base, cap=20.0)
        elif isinstance(error, Transient):
            retry_at = now + backoff_delay(attempt, self._rng, **self._backoff())
        else:  # AuthFailed, 603, a call refused as made
            retry_at = now + self.options.auth_retry
        self._move(reaction.state, reaction.last_error)
        if not isinstance(error, (RateLimited, TooManyConcurrent, ShareSpent, QuotaExhausted)):
            self.failures += 1
        level = log.error if isinstance(error, AuthFailed) else log.warning
        level("source call failed", source=self.source_id, state=self.state, error=self.last_error)
        return max(0.0, retry_at - now)

    async def _prepare(self) -> None:
        """Get Activity Types into the catalog (on start and every ``catalog_refresh``), and the groups
        from it: once, and again when the types to read changed (``"*"`` and a type new on the
        instance). A group made anew reads from ``startAt``; what it had read is dropped as duplicates."""
        now = self.clock()
        if self.groups is not None and now < self._catalog_due:
            return
        listed = await self.client.get_activity_types()
        await catalogs.load_activity_types(self.catalog, self.store, self.config.munchkinId, {"result": listed})
        self._catalog_due = now + self.options.catalog_refresh
        ids = resolve_types(self.config.activityTypes, self.catalog, self.config.munchkinId)
        if ids is None:
            ids = [int(entry["id"]) for entry in listed if isinstance(entry, dict) and "id" in entry]
        wanted: list[tuple[str, tuple[int, ...]]] = [(group_key(chunk), chunk) for chunk in type_groups(ids)]
        if self.config.deletedLeads:
            wanted.append((DELETED_LEADS, ()))
        keys = [key for key, _ in wanted]
        if self.groups is not None and [g.key for g in self.groups] == keys:
            return
        if not keys:
            raise LeadstreamError("the instance lists no activity types to read, and deletedLeads is off")
        kept = {g.key: g for g in self.groups or []}
        groups = [kept.get(key) or Group(key, chunk) for key, chunk in wanted]
        saved = await self.store.source_checkpoints(self.source_id)
        for group in groups:
            if group.key in saved and group.key not in kept:
                checkpoint = orjson.loads(saved[group.key])
                group.token, group.checkpoint_at = checkpoint["token"], checkpoint.get("checkpointAt")
        if self.groups is not None:
            log.info("source type groups changed", source=self.source_id, groups=keys)
        self.groups = groups
        await self._replan()

    async def _replan(self) -> None:
        status = await self.budget.status()
        limits = self.budget.limits
        day = DayBudget(
            calls_left=(status.call_budget - status.calls_today) // max(1, self.peers),
            seconds_until_reset=status.resets_at - self.clock(),
            calls_per_window=limits.calls_per_20s,
            window_seconds=limits.window_seconds,
        )
        self.plan = plan_polls(
            [g.history for g in self.groups or []], day, poll_interval_ms=self.config.pollIntervalMs, now=self.clock()
        )

    def _next(self) -> tuple[Group, float]:
        """The group whose poll has been due longest (never polled: first), and when it is due. By the
        unclamped due time: when polls take longer than the intervals, every group is due "now", and
        the plan's ties would starve the groups listed last."""
        assert self.groups and self.plan is not None
        by_key = {g.key: g for g in self.groups}

        def due(plan: GroupPlan) -> float:
            last = by_key[plan.key].history.last_poll_at
            return -math.inf if last is None else last + plan.planned_poll_interval_ms / 1000

        chosen = min(self.plan.groups, key=due)
        return by_key[chosen.key], chosen.next_poll_at

    async def _poll(self, group: Group) -> None:
        started = self.clock()
        if group.token is None:
            group.token = await self.client.get_paging_token(self._started_at)
        pages = records = 0
        while True:
            page = await self._page(group, group.token)
            pages += 1
            records += len(page.records)
            await self._publish(page.records)
            if page.records:
                group.checkpoint_at = str(page.records[-1].get("activityDate"))
            group.token = page.next_page_token
            checkpoint = {"token": group.token, "checkpointAt": group.checkpoint_at}
            await self.store.save_source_checkpoint(self.source_id, group.key, orjson.dumps(checkpoint))
            self._move("running", None)
            if not page.more_result:
                break
            await self._save_status()  # with each checkpoint: counts stay exact over a crash, others see it move
        group.caught_up_at = started
        group.last_poll_at = self.last_poll_at = self.clock()
        group.history = record_poll(group.history, at=started, records=records, pages=pages)
        await self._replan()
        await self._save_status()

    async def _page(self, group: Group, token: str) -> Page:
        if group.deleted_leads:
            return await self.client.get_deleted_leads(token)
        return await self.client.get_activities(token, group.type_ids)

    async def _publish(self, records: list[dict[str, Any]]) -> None:
        """The page's records as events, appended (durable on return); a record that fails validation is
        counted and named in the log (storing it is impossible, stopping the source would lose the rest)."""
        events: list[Event] = []
        for record in records:
            try:
                raw = orjson.dumps({**record, "munchkinId": self.config.munchkinId})
                events.append(self.validator.event("activity", raw))
            except (RecordError, TypeError) as exc:
                self.rejected += 1
                log.warning("source record rejected", source=self.source_id, id=record.get("id"), error=str(exc))
        if not events:
            return
        duplicates = len(await self.store.append(events))
        self.published += len(events) - duplicates
        self.duplicates += duplicates
        metrics.PUBLISHED.labels(self.source_id).inc(len(events) - duplicates)
        if duplicates:
            metrics.DUPLICATES.labels(self.source_id).inc(duplicates)
