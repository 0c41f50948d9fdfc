"""The admin commands on sources, and the views the API shows (SPEC §10).

Every command reads the source from the store, so any node answers with what has been committed,
and writes with compare-and-set on its revision, so two nodes changing it at once both count.
Then it tells this node's runner (``Runner`` below), which restarts the source at once when it
runs it; the node that does otherwise notices within its follow interval.

A view shows the runner's live status when this node runs the source, and otherwise the status
its runner last saved; the calls spent today come from the shared ledger, so every node shows
the same figure.
"""

from __future__ import annotations

import math
import time
import uuid
from datetime import datetime
from typing import Any, Protocol

import orjson

from leadstream.catalog import Catalog
from leadstream.clock import now_ms, rfc3339
from leadstream.errors import Conflict, Invalid, NotFound
from leadstream.security.guard import GuardPolicy
from leadstream.security.secretbox import SecretBox
from leadstream.sources import config as rules
from leadstream.sources.budget import day_start, next_reset
from leadstream.sources.config import MarketoSourceConfig
from leadstream.store.base import Store, StoredSource
from leadstream.tenants import Visible, visible_page

CHANGE_ATTEMPTS = 10


class Runner(Protocol):
    """This node's source runner, as the admin side sees it."""

    def live(self, source_id: str) -> dict[str, Any] | None:
        """The source's status document, if this node runs it."""

    async def changed(self, source_id: str) -> None:
        """A source was created, changed or deleted: act on it now if it is (or becomes) ours."""


def _everyone(munchkin_id: str) -> bool:
    return True


class Sources:
    def __init__(
        self, store: Store, catalog: Catalog, *, secretbox: SecretBox | None, policy: GuardPolicy,
        retention_ms: int, rate_window: float = 20.0, runner: Runner | None = None,
    ) -> None:  # fmt: skip
        self.store, self.catalog, self.secretbox, self.policy = store, catalog, secretbox, policy
        self.retention_ms, self.rate_window, self.runner = retention_ms, rate_window, runner

    # -- reading --------------------------------------------------------------------------------------
    async def get(self, source_id: str, visible: Visible = _everyone) -> StoredSource:
        """The stored source, or NotFound — also when it is another tenant's."""
        stored = await self.store.get_source(source_id)
        if stored is None or not visible(stored.munchkin_id):
            raise NotFound(f"there is no source {source_id!r}")
        return stored

    def config_of(self, stored: StoredSource) -> MarketoSourceConfig:
        return rules.unseal(stored.config, self.secretbox)

    async def view(self, source_id: str, visible: Visible = _everyone) -> dict[str, Any]:
        return await self._view(await self.get(source_id, visible))

    async def views(
        self, munchkin_id: str | None, visible: Visible, *, after: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        page, more = visible_page(await self.store.list_sources(munchkin_id), visible, after=after, limit=limit)
        return [await self._view(s) for s in page], more

    async def _view(self, stored: StoredSource) -> dict[str, Any]:
        config = self.config_of(stored)
        live = self.runner.live(stored.id) if self.runner is not None else None
        status: dict[str, Any] = live if live is not None else orjson.loads(stored.status or b"{}")
        now = time.time()
        counts = await self.store.api_call_counts(
            stored.munchkin_id, now=now, window=self.rate_window, day_start=day_start(now)
        )
        caught_up = status.get("caughtUpAt")
        if caught_up is None:
            started = datetime.fromisoformat(config.startAt.replace("Z", "+00:00")).timestamp() * 1000
            caught_up = min(started, stored.created_at)
        state = "paused" if stored.paused else status.get("state", "running")
        return {
            "id": stored.id,
            **rules.redacted(config),
            "createdAt": rfc3339(stored.created_at),
            "state": state,
            "published": status.get("published", 0),
            "duplicates": status.get("duplicates", 0),
            "rejected": status.get("rejected", 0),
            "callsToday": counts.today,
            "callBudget": math.floor(config.dailyQuota * config.quotaShare),
            "quotaResetsAt": rfc3339(int(next_reset(now) * 1000)),
            "lastPollAt": status.get("lastPollAt"),
            "lagSeconds": round(max(0.0, now - caught_up / 1000), 3),
            "lastError": status.get("lastError"),
            "groups": status.get("groups", []),
        }

    # -- commands -------------------------------------------------------------------------------------
    async def create(self, document: dict[str, Any]) -> dict[str, Any]:
        config = await rules.parse_new(
            document, self.catalog, self.policy, now_ms=now_ms(), retention_ms=self.retention_ms
        )
        stored = StoredSource(
            id=f"src_{uuid.uuid4().hex[:20]}",
            munchkin_id=config.munchkinId,
            config=rules.seal(config, self.secretbox),
            status=b"{}",
            created_at=now_ms(),
        )
        await self.store.create_source(stored)
        await self._tell(stored.id)
        return await self._view(stored)

    async def patch(self, source_id: str, document: dict[str, Any], visible: Visible = _everyone) -> dict[str, Any]:
        if not document:
            raise Invalid("the body names no field to change")

        async def change(stored: StoredSource) -> tuple[bytes, bool]:
            config = await rules.apply_patch(self.config_of(stored), document, self.catalog, self.policy)
            return rules.seal(config, self.secretbox), stored.paused

        return await self._change(source_id, visible, change)

    async def pause(self, source_id: str, visible: Visible = _everyone) -> dict[str, Any]:
        async def change(stored: StoredSource) -> tuple[bytes, bool]:
            return stored.config, True

        return await self._change(source_id, visible, change)

    async def resume(self, source_id: str, visible: Visible = _everyone) -> dict[str, Any]:
        async def change(stored: StoredSource) -> tuple[bytes, bool]:
            return stored.config, False

        return await self._change(source_id, visible, change)

    async def delete(self, source_id: str, visible: Visible = _everyone) -> dict[str, Any]:
        """Stops the source for good and forgets it (its checkpoints too; what it published stays in the log)."""
        stored = await self.get(source_id, visible)
        view = await self._view(stored)
        if not await self.store.delete_source(source_id):
            raise NotFound(f"there is no source {source_id!r}")
        await self._tell(source_id)
        return {**view, "state": "deleted"}

    async def _change(self, source_id: str, visible: Visible, change: Any) -> dict[str, Any]:
        for _ in range(CHANGE_ATTEMPTS):
            stored = await self.get(source_id, visible)
            config, paused = await change(stored)
            if await self.store.update_source(source_id, config, paused, expected_rev=stored.rev):
                await self._tell(source_id)
                return await self._view(await self.get(source_id, visible))
        raise Conflict(f"source {source_id} is being changed by others; try again")

    async def _tell(self, source_id: str) -> None:
        if self.runner is not None:
            await self.runner.changed(source_id)
