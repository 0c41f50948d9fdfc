"""Shared test helpers: a real server on loopback, waiting on conditions, record factories."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvicorn

from leadstream import testing
from leadstream.api import create_app
from leadstream.settings import Settings
from leadstream.testing import free_port, wait_until

__all__ = [
    "ADMIN_KEY",
    "MUNCHKIN",
    "Server",
    "ServerProcess",
    "activity",
    "free_port",
    "publish",
    "require_node",
    "running_server",
    "wait_until",
]

ADMIN_KEY = "test-admin-key"
MUNCHKIN = "123-ABC-456"


@dataclass
class Server:
    url: str
    app: Any
    key: str = ADMIN_KEY

    @property
    def services(self) -> Any:
        return self.app.state.runtime

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@contextlib.asynccontextmanager
async def running_server(**overrides: Any) -> AsyncIterator[Server]:
    """The real app under uvicorn on 127.0.0.1 (a free port), in this event loop."""
    settings = Settings(admin_key=ADMIN_KEY, allow_private_endpoints=True, **overrides)
    app = create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  (older uvicorn)
    task = asyncio.create_task(server.serve())
    await wait_until(lambda: server.started or task.done(), what="the server to start")
    if task.done():
        task.result()
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Server(f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        await task


def require_node() -> str:
    """The node binary, for checking signatures as Adobe's Node library does (CI must have it)."""
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node is required under CI to check signatures as Adobe's Node library does")
        pytest.skip("node is not on PATH: cannot run tests/node/verify.js")
    return node


class ServerProcess(testing.ServerProcess):
    """`leadstream serve` as a subprocess, with the tests' operator key (``ADMIN_KEY``)."""

    def __init__(self, data_dir: Path, *args: str, key: str = ADMIN_KEY, **options: Any) -> None:
        super().__init__(data_dir, *args, key=key, **options)


def activity(i: int, *, type_id: int = 10, munchkin: str = MUNCHKIN, **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "munchkinId": munchkin,
        "marketoGUID": f"guid-{i}",
        "id": 1000 + i,
        "leadId": 500 + i % 50,
        "activityDate": "2026-11-28T10:00:00Z",
        "activityTypeId": type_id,
        "primaryAttributeValueId": 77,
        "primaryAttributeValue": "Welcome Email",
        "attributes": [{"name": "Device", "value": "iPhone"}, {"name": "Platform", "value": "iOS"}],
    }
    record.update(extra)
    return record


async def publish(
    session: aiohttp.ClientSession, server: Server, stream: str, records: Any, *, ndjson: bool = False
) -> tuple[int, dict[str, Any]]:
    import orjson

    if ndjson:
        body = b"\n".join(orjson.dumps(r) for r in records)
        content_type = "application/x-ndjson"
    else:
        body = orjson.dumps(records)
        content_type = "application/json"
    async with session.post(
        f"{server.url}/v1/streams/{stream}/events", data=body, headers={**server.headers, "Content-Type": content_type}
    ) as r:
        return r.status, await r.json(content_type=None)
