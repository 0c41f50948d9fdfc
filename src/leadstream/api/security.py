"""The security services of a running server, reached as ``app.state.security``.

Started by the app's lifespan right after the store opens (before delivery, which needs the
secret box) and closed before the store closes.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from leadstream.api.audit import AuditLog
from leadstream.api.ratelimit import RateLimiter
from leadstream.apikeys import ApiKeys
from leadstream.delivery.guard import GuardPolicy
from leadstream.logs import log
from leadstream.secretbox import KEY_FILE, SecretBox, load_secretbox
from leadstream.settings import Settings
from leadstream.store.base import Store


@dataclass
class Security:
    api_keys: ApiKeys
    audit: AuditLog
    secretbox: SecretBox
    rate_limiter: RateLimiter
    guard: GuardPolicy
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @classmethod
    async def start(cls, settings: Settings, store: Store) -> Security:
        master_key = settings.master_key.get_secret_value() if settings.master_key else None
        if settings.database_url and master_key is None and not (settings.data_dir / KEY_FILE).exists():
            # Each node would make its own key and could not open what the others sealed.
            log.warning("cluster node without LEADSTREAM_MASTER_KEY: set the same master key on every node")
        security = cls(
            api_keys=ApiKeys(store, refresh=settings.key_refresh_interval),
            audit=AuditLog(store),
            secretbox=load_secretbox(settings.data_dir, master_key),
            rate_limiter=RateLimiter(settings.ingest_rate_limit, settings.ingest_burst),
            guard=GuardPolicy.from_settings(settings),
        )
        await security.api_keys.load()
        security.tasks.append(asyncio.create_task(security.api_keys.run(), name="api-keys"))
        return security

    async def close(self) -> None:
        """Stop the background loops (the key loop writes pending last-used times as it stops)."""
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
