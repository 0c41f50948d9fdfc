"""Alert endpoints as the API and the console see them: register, list, delete, and the recent alerts."""

from __future__ import annotations

from typing import Any

import orjson

from leadstream.alerts import model
from leadstream.alerts.model import Alert
from leadstream.clock import rfc3339
from leadstream.errors import NotFound
from leadstream.security.guard import GuardPolicy
from leadstream.security.secretbox import SecretBox
from leadstream.store.base import AlertMessage, Store
from leadstream.subscriptions.validation import check_endpoint


class Alerts:
    def __init__(self, store: Store, secretbox: SecretBox, policy: GuardPolicy) -> None:
        self.store = store
        self.secretbox = secretbox
        self.policy = policy

    async def create(self, document: dict[str, Any]) -> dict[str, Any]:
        """Register an endpoint (``model.parse_new`` checks the body; the outbound guard its address)."""
        alert, generated = model.parse_new(document)
        await check_endpoint(alert.endpoint, self.policy)
        await self.store.put_alert(alert.id, model.seal(alert, self.secretbox))
        return alert.view(secret_shown=generated)

    async def all(self) -> list[Alert]:
        return [model.unseal(record, self.secretbox) for _, record in await self.store.alerts()]

    async def get(self, alert_id: str) -> Alert:
        for alert in await self.all():
            if alert.id == alert_id:
                return alert
        raise NotFound(f"no alert {alert_id!r}")

    async def delete(self, alert_id: str) -> dict[str, Any]:
        """Stop sending to an endpoint; what was still pending for it is dropped."""
        alert = await self.get(alert_id)
        if not await self.store.delete_alert(alert_id):
            raise NotFound(f"no alert {alert_id!r}")
        return alert.view()

    async def recent(self, limit: int) -> list[dict[str, Any]]:
        """The newest alerts, newest first: each CloudEvent once, with how its sending goes to
        each endpoint (none: no endpoint wanted it)."""
        # An alert has a row per endpoint that wanted it (one if none did), written together: a
        # page of ``limit`` × endpoints rows holds ``limit`` alerts unless endpoints were deleted
        # since, and another page is read only then. Reading stops at the first row of an alert
        # beyond the limit, which also shows that the last one shown is whole.
        page = limit * max(1, len(await self.store.alerts()))
        by_id: dict[str, dict[str, Any]] = {}
        before: int | None = None
        while limit > 0:
            rows = await self.store.alert_messages(page, before=before)
            for row in rows:
                event = orjson.loads(row.message)
                shown = by_id.get(event["id"])
                if shown is None:
                    if len(by_id) == limit:
                        return list(by_id.values())
                    shown = by_id[event["id"]] = {**event, "deliveries": []}
                if row.alert_id is not None:
                    shown["deliveries"].append(_delivery(row))
            if len(rows) < page:
                break
            before = rows[-1].seq
        return list(by_id.values())


def _delivery(row: AlertMessage) -> dict[str, Any]:
    return {
        "alert": row.alert_id,
        "state": row.state,
        "attempts": row.attempts,
        "lastError": row.last_error,
        "nextAttemptAt": rfc3339(row.next_at) if row.state == "pending" else None,
    }
