"""Shared test helpers: a real server on loopback, waiting on conditions, record factories."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvicorn

from leadstream.api import create_app
from leadstream.settings import Settings

ADMIN_KEY = "test-admin-key"
MUNCHKIN = "123-ABC-456"


async def wait_until(condition: Callable[[], Any | Awaitable[Any]], timeout: float = 10.0, interval: float = 0.02, what: str = "condition") -> Any:
    """Poll ``condition`` until it is truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


@dataclass
class Server:
    url: str
    app: Any
    key: str = ADMIN_KEY

    @property
    def services(self) -> Any:
        return self.app.state.services

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`leadstream serve` as a subprocess, as a user runs it."""

    def __init__(self, data_dir: Path, *args: str, port: int | None = None, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = args
        self.env = {**os.environ, "LEADSTREAM_ADMIN_KEY": ADMIN_KEY, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"server-{self.port}.log"

    async def start(self) -> ServerProcess:
        cmd = [sys.executable, "-m", "leadstream.cli", "serve", "--data-dir", str(self.data_dir), "--port", str(self.port),
               "--allow-private-endpoints", *self.args]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)

        async def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                async with aiohttp.ClientSession() as s, s.get(self.url + "/healthz") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await wait_until(up, timeout=20, what="leadstream serve to answer /healthz")
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


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


async def publish(session: aiohttp.ClientSession, server: Server, stream: str, records: Any, *, ndjson: bool = False) -> tuple[int, dict[str, Any]]:
    import orjson

    if ndjson:
        body = b"\n".join(orjson.dumps(r) for r in records)
        content_type = "application/x-ndjson"
    else:
        body = orjson.dumps(records)
        content_type = "application/json"
    async with session.post(f"{server.url}/v1/streams/{stream}/events", data=body,
                            headers={**server.headers, "Content-Type": content_type}) as r:
        return r.status, await r.json(content_type=None)
