"""The harness: starts every part in its own process on loopback, runs the scenarios, follows them
with a progress bar, and hands the figures to report.py.

Parts: one sink process for the whole run; per scenario a fresh ``leadstream serve`` (or a bare
loop) on a new data directory, and a load generator. A monitor samples CPU and RSS of every part
all along; a sampler records ingest and delivery rates for the plot.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from leadstream.bench.procs import Monitor, Part, PartFailed
from leadstream.security.secretbox import new_master_key
from leadstream.testing import ServerProcess


class Skipped(Exception):
    """A scenario cannot run here (for example: the server has no subscriptions API yet)."""


@dataclass
class Figure:
    """One measured figure, with the bare loop's on the same machine in the same run."""

    scenario: str
    metric: str
    unit: str
    leadstream: float | None
    bare: dict[str, float] = field(default_factory=dict)  # "1 process" / "2 processes" → value
    target: str = ""  # e.g. ">= 50000"
    higher_is_better: bool = True
    note: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def best_bare(self) -> float | None:
        values = [v for v in self.bare.values() if v is not None]
        if not values:
            return None
        return max(values) if self.higher_is_better else min(values)

    @property
    def ratio(self) -> float | None:
        """leadstream / the best bare-loop figure (for latencies: above 1 means slower)."""
        best = self.best_bare
        return self.leadstream / best if self.leadstream is not None and best else None

    @property
    def meets_target(self) -> bool | None:
        if self.leadstream is None or not self.target:
            return None
        op, bound = self.target.split()
        return self.leadstream >= float(bound) if op == ">=" else self.leadstream <= float(bound)


@dataclass
class Point:
    """One sampler tick, for the plot."""

    t: float
    ingested_per_s: float
    delivered_per_s: float
    server_cpu: float
    server_rss_mb: float
    other_cpu: float  # the machine's CPU not used by the benchmark's parts (% of one core)


@dataclass
class Span:
    name: str
    start: float
    end: float


@dataclass
class Durations:
    """How long each scenario measures; --quick keeps the whole run under a minute."""

    warmup: float
    window: float
    backlog: int
    bare_backlog: int
    idle_subscriptions: int
    idle_window: float
    both_bare_variants: bool  # the full run measures the bare loop in one process and in two

    @classmethod
    def for_run(cls, quick: bool) -> Durations:
        if quick:
            return cls(
                warmup=0.5,
                window=2.0,
                backlog=200_000,
                bare_backlog=200_000,
                idle_subscriptions=1000,
                idle_window=2.0,
                both_bare_variants=False,
            )
        return cls(
            warmup=3.0,
            window=15.0,
            backlog=10_000_000,
            bare_backlog=2_000_000,
            idle_subscriptions=1000,
            idle_window=5.0,
            both_bare_variants=True,
        )


class Server(ServerProcess):
    """`leadstream serve` on a fresh data directory, watched by the monitor, and the admin calls the
    scenarios need."""

    def __init__(self, bench: Bench, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        super().__init__(
            bench.workdir / f"leadstream-{name}",
            *args,
            key="bench-" + secrets.token_urlsafe(16),
            env={"LEADSTREAM_LOG_FORMAT": "json", **(env or {})},
            log=bench.workdir / f"leadstream-{name}.log",
        )
        self.bench = bench

    async def metric(self, name: str) -> float:
        """The sum of a Prometheus metric's samples on /metrics (0 if it is not there)."""
        async with self.bench.http.get(self.url + "/metrics") as r:
            text = await r.text()
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))

    async def start(self, timeout: float = 30.0) -> Server:
        await super().start(timeout)
        self.bench.monitor.watch("server", self)
        return self

    async def close(self) -> None:
        await asyncio.to_thread(self.stop)  # its grace period must not stall the monitor and the sampler

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = orjson.dumps(body) if body is not None else None
        headers = {**self.headers, "Content-Type": "application/json"}
        async with self.bench.http.request(method, self.url + path, data=data, headers=headers) as r:
            raw = await r.read()
            return r.status, (orjson.loads(raw) if raw and raw[:1] in b"{[" else raw)

    async def require_subscriptions(self) -> None:
        status, _ = await self.call("GET", "/v1/subscriptions")
        if status in (404, 405):
            raise Skipped(f"the server has no subscriptions API yet (GET /v1/subscriptions answers {status})")

    async def subscribe(self, name: str, endpoint: str, **settings: Any) -> str:
        body = {
            "name": name,
            "munchkinId": self.bench.munchkin,
            "stream": "activity",
            "endpoint": endpoint,
            "eventTypes": ["*"],
            "format": "legacy",
            "auth": {"type": "none"},
            "startAt": "now",
            **settings,
        }
        status, answer = await self.call("POST", "/v1/subscriptions", body)
        if status != 201:
            raise PartFailed(f"POST /v1/subscriptions answered {status}: {answer!r:.500}")
        return str(answer["id"])

    async def action(self, sub_id: str, verb: str) -> None:
        status, answer = await self.call("POST", f"/v1/subscriptions/{sub_id}/{verb}")
        if status >= 300:
            raise PartFailed(f"POST /v1/subscriptions/{sub_id}/{verb} answered {status}: {answer!r:.500}")


class Sink:
    """The sink process and its tallies."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.part = Part.module("sink", "leadstream.bench.sink", log=bench.workdir / "sink.log")
        self.url = ""

    async def start(self) -> Sink:
        await self.bench.monitor_part(self.part)
        self.url = f"http://127.0.0.1:{(await self.part.first_line())['port']}"
        return self

    def endpoint(self, name: str, *, timed: bool = False) -> str:
        return f"{self.url}/{'lat' if timed else 'count'}/{name}"

    async def _get(self, path: str, **params: Any) -> Any:
        async with self.bench.http.get(self.url + path, params={k: str(v) for k, v in params.items()}) as r:
            return orjson.loads(await r.read())

    async def reset(self) -> None:
        async with self.bench.http.post(self.url + "/_reset") as r:
            await r.read()

    async def total(self, prefix: str = "") -> int:
        stats = await self._get("/_stats")
        return sum(s["count"] for name, s in stats["subs"].items() if name.startswith(prefix))

    async def received(self, since_us: int, until_us: int, prefix: str = "") -> int:
        return (await self._get("/_window", since=since_us, until=until_us, prefix=prefix))["count"]

    async def latency(self, since_us: int, until_us: int, prefix: str = "") -> dict[str, Any]:
        return await self._get("/_latency", since=since_us, until=until_us, prefix=prefix)

    async def reached(self, name: str, count: int) -> int | None:
        """µs when subscription ``name`` had received ``count`` events, or None."""
        return (await self._get("/_reached", name=name, count=count))["at"]

    async def series(self, since_us: int, bucket_ms: int = 1000) -> list[dict[str, Any]]:
        return await self._get("/_series", since=since_us, bucket_ms=bucket_ms)


@dataclass
class LoadRun:
    """What a load generator did: its JSON lines (t in µs)."""

    lines: list[dict[str, Any]]

    @property
    def accepted(self) -> int:
        return self.lines[-1]["accepted"] if self.lines else 0

    @property
    def errors(self) -> list[str]:
        return self.lines[-1].get("errors", []) if self.lines else []

    def rate(self, since_us: int, until_us: int) -> float:
        """Accepted records/s between the progress lines nearest the window's ends."""
        inside = [line for line in self.lines if since_us <= line["t"] <= until_us]
        if len(inside) < 2:
            inside = self.lines[-2:] if len(self.lines) >= 2 else []
        if len(inside) < 2 or inside[-1]["t"] == inside[0]["t"]:
            return 0.0
        return (inside[-1]["accepted"] - inside[0]["accepted"]) * 1e6 / (inside[-1]["t"] - inside[0]["t"])


class Bench:
    """Everything a scenario needs: the sink, servers, bare loops, load, timing, and the monitor."""

    munchkin = "123-ABC-456"

    def __init__(
        self, quick: bool, console: Console, *, durations: Durations | None = None, keep: bool = False,
        database_url: str | None = None,
    ) -> None:  # fmt: skip
        self.quick = quick
        self.database_url = database_url  # PostgreSQL: each scenario on a fresh database of this server
        self.durations = durations or Durations.for_run(quick)
        self.console = console
        self.workdir = Path(tempfile.mkdtemp(prefix="leadstream-bench-"))
        self.keep = keep or bool(os.environ.get("LEADSTREAM_BENCH_KEEP"))
        self.http: aiohttp.ClientSession  # set by the runner
        self.monitor = Monitor()
        self.points: list[Point] = []
        self.latency_points: list[dict[str, Any]] = []
        self.spans: list[Span] = []
        self.parts: list[Part] = []
        self.servers: list[Server] = []
        self.loads: list[Part] = []
        self.started = time.time()
        self._tags = 0
        self.progress = Progress(
            TextColumn("[bold]{task.fields[step]:<34}"),
            BarColumn(bar_width=30),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[live]}"),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task("bench", total=1, step="starting", live="")

    # -- parts ----------------------------------------------------------------------------------
    async def monitor_part(self, part: Part) -> Part:
        await part.start()
        self.parts.append(part)
        self.monitor.watch(part.role, part)
        return part

    async def server(self, name: str, *args: str, env: dict[str, str] | None = None) -> Server:
        server = Server(self, name, *args, env=env)
        self.servers.append(server)
        return await server.start()

    @contextlib.asynccontextmanager
    async def leadstream(self, name: str) -> AsyncIterator[Server]:
        """One node: on an embedded store, or with --database-url on a fresh PostgreSQL database."""
        async with self.nodes(name, 1) as (server,):
            yield server

    @contextlib.asynccontextmanager
    async def nodes(self, name: str, count: int) -> AsyncIterator[list[Server]]:
        """``count`` nodes; more than one share a fresh PostgreSQL database (dropped after)."""
        async with self.database(name) as url:
            args = ("--database-url", url) if url else ()
            env = {"LEADSTREAM_MASTER_KEY": new_master_key()} if url else None
            servers: list[Server] = []
            try:
                for n in range(count):
                    node = f"{name}-{n}" if count > 1 else name
                    servers.append(await self.server(node, *args, env={**(env or {}), "LEADSTREAM_NODE_ID": node}))
                yield servers
            finally:
                for server in servers:
                    await server.close()
                    self._forget(server.data_dir)

    @contextlib.asynccontextmanager
    async def database(self, name: str) -> AsyncIterator[str | None]:
        """A fresh database on the --database-url server for one scenario, dropped after (None:
        the embedded store)."""
        if self.database_url is None:
            yield None
            return
        database = f"leadstream_bench_{name.replace('-', '_')}_{secrets.token_hex(3)}"
        admin = await asyncpg.connect(self.database_url)
        try:
            await admin.execute(f'CREATE DATABASE "{database}"')
        finally:
            await admin.close()
        parts = urllib.parse.urlsplit(self.database_url)
        try:
            yield parts._replace(path=f"/{database}").geturl()
        finally:
            admin = await asyncpg.connect(self.database_url)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            finally:
                await admin.close()

    @contextlib.asynccontextmanager
    async def bare(
        self, name: str, endpoints: list[str], *, processes: int, interval_ms: int = 50, deliver: bool = True
    ) -> AsyncIterator[BareLoop]:
        """The bare loop: ingest and delivery in one process, or in two (``processes=2``)."""
        loop = BareLoop(self, name, endpoints, processes, interval_ms)
        try:
            await loop.start_ingest()
            if deliver and processes == 2:
                await loop.start_delivery()
            yield loop
        finally:
            for part in loop.parts:
                await part.stop()
            self._forget(loop.db.parent)

    def tag(self) -> str:
        """A GUID prefix no earlier load used (so no record is a duplicate)."""
        self._tags += 1
        return f"r{secrets.token_hex(3)}{self._tags}"

    async def load(
        self,
        url: str,
        key: str = "",
        *,
        duration: float = 0.0,
        count: int = 0,
        rate: float = 0.0,
        batch: int = 1000,
        connections: int = 4,
    ) -> Part:
        args = ["--url", url, "--tag", self.tag(), "--batch", str(batch), "--connections", str(connections)]
        if key:
            args += ["--key", key]
        if duration:
            args += ["--duration", str(duration)]
        if count:
            args += ["--count", str(count)]
        if rate:
            args += ["--rate", str(rate)]
        part = Part.module("load", "leadstream.bench.load", *args, log=self.workdir / "load.log")
        await self.monitor_part(part)
        self.loads.append(part)
        return part

    async def finish_load(self, part: Part, timeout: float = 600) -> LoadRun:
        await part.wait(timeout)
        self.loads.remove(part)
        run = LoadRun(part.lines)
        if not run.lines or not run.lines[-1].get("done"):
            raise PartFailed(f"the load generator did not finish: {part.tail()}")
        return run

    def _forget(self, path: Path) -> None:
        if not self.keep:
            shutil.rmtree(path, ignore_errors=True)

    # -- progress and sampling ---------------------------------------------------------------------
    def step(self, label: str) -> None:
        self.progress.update(self.task, step=label)

    def advance(self) -> None:
        self.progress.advance(self.task)

    async def sample_forever(self, sink: Sink) -> None:
        """Every half second: ingest and delivery rates, server CPU and RSS (for the plot and the bar)."""
        previous_t, previous_delivered, previous_accepted = time.time(), 0, 0
        while True:
            await asyncio.sleep(0.5)
            now = time.time()
            delivered = await sink.total() if sink.part.running() else 0
            accepted = sum(p.last.get("accepted", 0) for p in self.loads)
            sample = self.monitor.samples[-1] if self.monitor.samples else None
            elapsed = now - previous_t
            ingested_rate = max(0, accepted - previous_accepted) / elapsed if accepted >= previous_accepted else 0.0
            delivered_rate = (
                (delivered - previous_delivered) / elapsed if delivered >= previous_delivered else delivered / elapsed
            )
            self.points.append(
                Point(
                    now,
                    ingested_rate,
                    delivered_rate,
                    sum(v for k, v in sample.cpu.items() if k in ("server", "bare-ingest", "bare-deliver"))
                    if sample
                    else 0.0,
                    sum(v for k, v in sample.rss.items() if k in ("server", "bare-ingest", "bare-deliver")) / 2**20
                    if sample
                    else 0.0,
                    sample.others if sample else 0.0,
                )
            )
            self.progress.update(
                self.task, live=f"ingest {ingested_rate:>9,.0f}/s  delivered {delivered_rate:>9,.0f}/s"
            )
            previous_t, previous_delivered, previous_accepted = now, delivered, accepted

    @contextlib.asynccontextmanager
    async def span(self, name: str, sink: Sink) -> AsyncIterator[None]:
        """Mark a stretch of the run for the plot and collect its latency series from the sink."""
        await sink.reset()
        start = time.time()
        self.step(name)
        try:
            yield
        finally:
            self.spans.append(Span(name, start, time.time()))
            with contextlib.suppress(Exception):
                for row in await sink.series(int(start * 1e6)):
                    if row["events"]:
                        self.latency_points.append(row)

    async def close(self) -> None:
        for server in self.servers:
            await server.close()
        for part in reversed(self.parts):
            with contextlib.suppress(Exception):
                await part.stop()
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


class BareLoop:
    def __init__(self, bench: Bench, name: str, endpoints: list[str], processes: int, interval_ms: int) -> None:
        self.bench = bench
        self.db = bench.workdir / f"bare-{name}" / "bare.db"
        self.endpoints = endpoints
        self.processes = processes
        self.interval_ms = interval_ms
        self.parts: list[Part] = []
        self.url = ""

    def _targets(self) -> list[str]:
        return [arg for url in self.endpoints for arg in ("--to", url)] + ["--interval-ms", str(self.interval_ms)]

    async def start_ingest(self) -> None:
        self.db.parent.mkdir(parents=True, exist_ok=True)
        args = ["ingest", "--db", str(self.db)] + (self._targets() if self.processes == 1 else [])
        part = Part.module("bare-ingest", "leadstream.bench.bare", *args, log=self.db.parent / "ingest.log")
        self.parts.append(await self.bench.monitor_part(part))
        self.url = f"http://127.0.0.1:{(await part.first_line())['port']}"

    async def start_delivery(self) -> None:
        part = Part.module(
            "bare-deliver",
            "leadstream.bench.bare",
            "deliver",
            "--db",
            str(self.db),
            *self._targets(),
            log=self.db.parent / "deliver.log",
        )
        self.parts.append(await self.bench.monitor_part(part))
        await part.first_line()
