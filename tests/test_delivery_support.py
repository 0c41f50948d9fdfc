"""What the delivery tests share: a recording subscriber endpoint on loopback, the service on a real
SQLite file, and a way to publish records straight into the log. (No tests in here.)"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from helpers import ADMIN_KEY, MUNCHKIN, wait_until
from leadstream.delivery.engine import DeliveryEngine
from leadstream.events import Event
from leadstream.runtime import Role, Runtime, running
from leadstream.settings import Settings
from leadstream.store import Store
from leadstream.subscriptions.service import Subscriptions

FAST = {"pushIntervalMs": 20, "retryIntervalMs": 50, "probeIntervalMs": 100, "timeoutMs": 2000}


@dataclass
class Received:
    at: float  # time.monotonic()
    headers: dict[str, str]
    body: bytes
    status: int = 0  # what we answered; 0 while (or if never) answered

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return orjson.loads(self.body)


Answer = Callable[[Received], "web.StreamResponse | Awaitable[web.StreamResponse | None] | None"]


@dataclass
class Receiver:
    """A subscriber endpoint: answers the challenge, records every POST, answers 200 unless
    ``answer`` says otherwise (return a response, or None for 200)."""

    max_body: int = 64 * 1024 * 1024
    answer: Answer | None = None
    requests: list[Received] = field(default_factory=list)
    url: str = ""

    async def start(self) -> Receiver:
        app = web.Application(client_max_size=self.max_body)
        app.router.add_get("/hook", self._challenge)
        app.router.add_post("/hook", self._post)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, shutdown_timeout=0.1)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def close(self) -> None:
        await self._runner.cleanup()

    async def _challenge(self, request: web.Request) -> web.Response:
        return web.json_response({"challenge": request.query.get("challenge", "")})

    async def _post(self, request: web.Request) -> web.StreamResponse:
        seen = Received(time.monotonic(), {k.lower(): v for k, v in request.headers.items()}, b"")
        try:
            seen.body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            seen.status = 413
            self.requests.append(seen)
            raise
        self.requests.append(seen)
        response = None
        if self.answer is not None:
            response = self.answer(seen)
            if inspect.isawaitable(response):
                response = await response
        if response is None:
            response = web.Response(status=200, text="ok")
        seen.status = response.status
        return response

    # -- what arrived -------------------------------------------------------------------------------
    @property
    def delivered(self) -> list[Received]:
        return [r for r in self.requests if r.ok]

    def ids(self) -> list[str]:
        """The ids (marketoGUID / CloudEvent id) of every event delivered with a 2xx, in arrival order."""
        return [event_id(e) for r in self.delivered for e in events_of(r.json())]


def events_of(body: Any) -> list[dict[str, Any]]:
    if isinstance(body, dict) and "activities" in body:
        return body["activities"] + body.get("customObjects", [])
    return body if isinstance(body, list) else [body]


def event_id(event: dict[str, Any]) -> str:
    if "event" in event:  # adobe_io
        return event["event"]["id"]
    return event.get("marketoGUID") or event["id"]


def assert_only_the_batch_in_flight_came_twice(r: Receiver) -> None:
    """At-least-once after a crash: at most one batch was sent again, under its own id, with the
    same events, and nothing else arrived twice."""
    ids = r.ids()
    by_batch: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    for request in r.delivered:
        by_batch[request.headers["x-leadstream-delivery"]].append(tuple(event_id(e) for e in events_of(request.json())))
    resent = {batch: sends for batch, sends in by_batch.items() if len(sends) > 1}
    duplicates = {event for event, n in Counter(ids).items() if n > 1}
    assert len(resent) <= 1  # at most the batch in flight
    if duplicates:
        [(_, sends)] = resent.items()
        assert all(s == sends[0] for s in sends)  # the same events under the same batch id
        assert duplicates == set(sends[0])  # and nothing else came twice


@contextlib.asynccontextmanager
async def receiver(**kwargs: Any) -> AsyncIterator[Receiver]:
    r = await Receiver(**kwargs).start()
    try:
        yield r
    finally:
        await r.close()


@dataclass
class Bench:
    """The service (``leadstream.runtime``, node role) on a real SQLite file in ``path``, in this
    event loop, without the HTTP API in front."""

    settings: Settings
    runtime: Runtime
    stack: contextlib.AsyncExitStack

    @property
    def store(self) -> Store:
        return self.runtime.store

    @property
    def engine(self) -> DeliveryEngine:
        assert self.runtime.delivery is not None
        return self.runtime.delivery

    @property
    def subscriptions(self) -> Subscriptions:
        return self.runtime.subscriptions

    async def publish(self, stream: str, records: list[dict[str, Any]]) -> list[Event]:
        events = [self.runtime.validator.event(stream, orjson.dumps(r)) for r in records]
        duplicates = await self.store.append(events)
        assert not duplicates
        return events

    async def subscribe(self, endpoint: str, **settings: Any) -> dict[str, Any]:
        document = {"name": "test", "munchkinId": MUNCHKIN, "stream": "activity", "endpoint": endpoint, **FAST}
        document.update(settings)
        return await self.subscriptions.create(document)

    async def status(self, sub_id: str) -> dict[str, Any]:
        return await self.subscriptions.view(sub_id)

    async def wait_status(self, sub_id: str, what: str, timeout: float = 10.0, **expected: Any) -> dict[str, Any]:
        async def matches() -> dict[str, Any] | None:
            view = await self.status(sub_id)
            return view if all(view[k] == v for k, v in expected.items()) else None

        return await wait_until(matches, timeout=timeout, what=what)

    async def restart(self) -> None:
        """Stop the service (every sender saves where it is) and start it again on the same files."""
        await self.stack.aclose()
        self.stack = contextlib.AsyncExitStack()
        self.runtime = await self.stack.enter_async_context(running(self.settings, Role.NODE))


def node_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings of a test node: private endpoints allowed, the test admin key."""
    return Settings(**{"data_dir": data_dir, "admin_key": ADMIN_KEY, "allow_private_endpoints": True, **overrides})


@contextlib.asynccontextmanager
async def bench(path: Path, **overrides: Any) -> AsyncIterator[Bench]:
    settings = node_settings(path, **overrides)
    stack = contextlib.AsyncExitStack()
    b = Bench(settings, await stack.enter_async_context(running(settings, Role.NODE)), stack)
    try:
        yield b
    finally:
        await b.stack.aclose()


async def wait_ids(r: Receiver, expected: list[str], timeout: float = 10.0) -> None:
    await wait_until(
        lambda: len(r.ids()) >= len(expected),
        timeout=timeout,
        what=f"{len(expected)} events at the receiver (have {len(r.ids())})",
    )


async def never_answer(seen: Received) -> web.Response:
    await asyncio.sleep(3600)
    return web.Response(status=200)
