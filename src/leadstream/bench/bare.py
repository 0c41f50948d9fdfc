"""The bare loop: the least code that does leadstream's job with the same parts, and no features.

Starlette + msgspec ingest → SQLite append with group commit (one writer thread, WAL,
synchronous=FULL: a 200 means fsync'd) → read back → aiohttp POST of the joined stored bytes
to every endpoint. It keeps what the job cannot do without (a record's shape is checked, its key
is unique, order is kept, one batch in flight, a batch waits at most ``--interval-ms``) and
nothing else: no catalog, no formats, no auth, no per-subscription cursors (every endpoint gets
the same batch, in lockstep), no retention, no metrics.

    python -m leadstream.bench.bare ingest --db F [--to URL …]   # ingest (and delivery, if --to)
    python -m leadstream.bench.bare deliver --db F --to URL …    # delivery alone, a second process

Each prints ``{"port": N}`` or ``{"ready": true}`` once it is up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import queue
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import msgspec
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from leadstream.bench.procs import run_event_loop

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    position INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    data BLOB NOT NULL,
    ingested_at INTEGER NOT NULL
);
"""


class Record(msgspec.Struct):
    munchkinId: str
    marketoGUID: str
    leadId: int
    activityDate: str
    activityTypeId: int


_records = msgspec.json.Decoder(list[msgspec.Raw])
_record = msgspec.json.Decoder(Record)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    return conn


class Log:
    """Appends on one writer thread: whatever queued up meanwhile is one transaction, one fsync."""

    def __init__(self, path: Path, on_commit: Callable[[], object] | None = None) -> None:
        self.conn = _connect(path)
        self.conn.executescript(SCHEMA)
        self.conn.execute("PRAGMA synchronous=FULL")
        self.on_commit = on_commit
        self.jobs: queue.SimpleQueue[tuple[list[tuple[str, bytes]], asyncio.Future[int]] | None] = queue.SimpleQueue()
        self.loop = asyncio.get_running_loop()
        self.thread = threading.Thread(target=self._write, daemon=True)
        self.thread.start()

    def append(self, rows: list[tuple[str, bytes]]) -> asyncio.Future[int]:
        """How many rows were new, once they are on disk."""
        future = self.loop.create_future()
        self.jobs.put((rows, future))
        return future

    def _write(self) -> None:
        conn = self.conn
        while (job := self.jobs.get()) is not None:
            group = [job]
            with contextlib.suppress(queue.Empty):
                while len(group) < 512:
                    more = self.jobs.get_nowait()
                    if more is None:
                        self.jobs.put(None)
                        break
                    group.append(more)
            now = time.time_ns() // 1_000_000
            stored = []
            conn.execute("BEGIN IMMEDIATE")
            for rows, _ in group:
                before = conn.total_changes
                conn.executemany(
                    "INSERT OR IGNORE INTO events (key, data, ingested_at) VALUES (?, ?, ?)",
                    [(key, data, now) for key, data in rows],
                )
                stored.append(conn.total_changes - before)
            conn.execute("COMMIT")
            for (_, future), count in zip(group, stored):
                self.loop.call_soon_threadsafe(_settle, future, count)
            if self.on_commit is not None:
                self.loop.call_soon_threadsafe(self.on_commit)
        conn.close()

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join()


def _settle(future: asyncio.Future[int], count: int) -> None:
    if not future.done():
        future.set_result(count)


class Deliverer:
    """Reads the log once from the last position sent and POSTs each batch to every endpoint."""

    def __init__(
        self, path: Path, endpoints: list[str], batch: int, interval_ms: int, wake: asyncio.Event | None
    ) -> None:
        self.path, self.endpoints, self.batch, self.interval = path, endpoints, batch, interval_ms / 1000
        self.wake = wake  # set on every commit when ingest is in the same process; else poll
        self.conn: sqlite3.Connection | None = None
        self.cursor = 0

    def _read(self) -> list[tuple[int, bytes, int]]:
        if self.conn is None:
            self.conn = _connect(self.path)
            self.conn.executescript(SCHEMA)
        return self.conn.execute(
            "SELECT position, data, ingested_at FROM events WHERE position > ? ORDER BY position LIMIT ?",
            (self.cursor, self.batch),
        ).fetchall()

    async def _idle(self, at_most: float) -> None:
        if self.wake is None:
            await asyncio.sleep(min(at_most, 0.002))
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.wake.wait(), at_most)

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
            while True:
                if self.wake is not None:
                    self.wake.clear()  # before reading: a commit from now on wakes the wait below
                rows = await asyncio.to_thread(self._read)
                if len(rows) < self.batch:
                    # Not a full batch: send once the oldest has waited the push interval.
                    wait = rows[0][2] / 1000 + self.interval - time.time() if rows else 1.0
                    if wait > 0:
                        await self._idle(wait)
                        continue
                payload = b'{"activities":[' + b",".join(row[1] for row in rows) + b"]}"
                await asyncio.gather(*(self._post(session, url, payload) for url in self.endpoints))
                self.cursor = rows[-1][0]

    async def _post(self, session: aiohttp.ClientSession, url: str, payload: bytes) -> None:
        while True:  # until a 2xx: at-least-once, in order
            try:
                async with session.post(url, data=payload, headers={"Content-Type": "application/json"}) as response:
                    await response.read()
                    if response.status < 300:
                        return
            except (TimeoutError, aiohttp.ClientError):
                pass
            await asyncio.sleep(0.1)


def ingest_app(path: Path, deliver: dict | None) -> Starlette:  # type: ignore[type-arg]
    state: dict[str, Log] = {}

    async def publish(request: Request) -> Response:
        rows, rejected = [], []
        for index, raw in enumerate(_records.decode(await request.body())):
            try:
                record = _record.decode(raw)
            except msgspec.ValidationError as exc:
                rejected.append({"index": index, "errors": [str(exc)]})
                continue
            rows.append((f"{record.munchkinId}/{record.marketoGUID}", bytes(raw)))
        stored = await state["log"].append(rows) if rows else 0
        body = {"accepted": stored, "duplicates": len(rows) - stored, "rejected": rejected}
        return Response(
            orjson.dumps(body), status_code=200 if stored or not rejected else 422, media_type="application/json"
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        wake = asyncio.Event() if deliver else None
        state["log"] = Log(path, on_commit=wake.set if wake else None)
        task = asyncio.create_task(Deliverer(path, wake=wake, **deliver).run()) if deliver else None
        yield
        if task:
            task.cancel()
        await asyncio.to_thread(state["log"].close)

    return Starlette(routes=[Route("/v1/streams/{stream}/events", publish, methods=["POST"])], lifespan=lifespan)


async def _serve_ingest(args: argparse.Namespace) -> None:
    deliver = {"endpoints": args.to, "batch": args.batch, "interval_ms": args.interval_ms} if args.to else None
    config = uvicorn.Config(
        ingest_app(Path(args.db), deliver),
        host="127.0.0.1",
        port=args.port,
        loop="none",
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            return
        await asyncio.sleep(0.01)
    _ready({"port": server.servers[0].sockets[0].getsockname()[1]})
    await task


async def _serve_delivery(args: argparse.Namespace) -> None:
    task = asyncio.create_task(Deliverer(Path(args.db), args.to, args.batch, args.interval_ms, wake=None).run())
    _ready({"ready": True})
    await task


def _ready(line: dict) -> None:  # type: ignore[type-arg]
    sys.stdout.write(orjson.dumps(line).decode() + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description="leadstream bench: the bare loop")
    parser.add_argument("role", choices=["ingest", "deliver"])
    parser.add_argument("--db", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--to", action="append", default=[], help="an endpoint (repeat for fan-out)")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--interval-ms", type=int, default=50)
    args = parser.parse_args()
    if args.role == "deliver" and not args.to:
        parser.error("deliver needs at least one --to")
    run_event_loop(_serve_ingest(args) if args.role == "ingest" else _serve_delivery(args))


if __name__ == "__main__":
    main()
