"""The benchmark's receiving endpoint: counts events per subscription, and times them.

Run as its own process (``python -m leadstream.bench.sink``); it prints ``{"port": N}`` once it
listens. Deliveries go to ``POST /count/<name>`` (counted with one byte scan, no decoding: cheap
enough for hundreds of thousands of events a second) or ``POST /lat/<name>`` (counted and each
event's delay computed from the send time in its GUID). The harness reads the tallies through
``/_stats``, ``/_window``, ``/_latency`` and ``/_series``; every time is µs since the epoch.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import math
import sys
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from leadstream.bench.procs import run_event_loop
from leadstream.bench.records import count_events, send_times_us


@dataclass
class Tally:
    """What one subscription received: per batch (time, events) and, in lat mode, per event delays."""

    count: int = 0
    batch_at: array[int] = field(default_factory=lambda: array("q"))  # µs, ascending
    batch_total: array[int] = field(default_factory=lambda: array("q"))  # running count after each batch
    event_at: array[int] = field(default_factory=lambda: array("q"))  # lat mode: µs per event
    delay_ms: array[float] = field(default_factory=lambda: array("f"))

    def received_between(self, since: int, until: int) -> int:
        """Events whose batch arrived in [since, until)."""
        lo = bisect.bisect_left(self.batch_at, since)
        hi = bisect.bisect_left(self.batch_at, until)
        before = self.batch_total[lo - 1] if lo else 0
        upto = self.batch_total[hi - 1] if hi else 0
        return upto - before


class Sink:
    def __init__(self) -> None:
        self.tallies: dict[str, Tally] = {}

    def tally(self, name: str) -> Tally:
        found = self.tallies.get(name)
        if found is None:
            found = self.tallies[name] = Tally()
        return found

    async def deliver(self, request: web.Request) -> web.Response:
        payload = await request.read()
        now = time.time_ns() // 1000
        tally = self.tally(request.match_info["name"])
        if request.match_info["mode"] == "lat":
            sent = send_times_us(payload)
            n = len(sent)
            tally.event_at.extend([now] * n)
            tally.delay_ms.extend([(now - s) / 1000 for s in sent])
        else:
            n = count_events(payload)
        tally.count += n
        tally.batch_at.append(now)
        tally.batch_total.append(tally.count)
        return web.Response()

    async def challenge(self, request: web.Request) -> web.Response:
        return web.Response(text=request.query.get("challenge", ""))

    def _chosen(self, request: web.Request) -> list[Tally]:
        prefix = request.query.get("prefix", "")
        return [t for name, t in self.tallies.items() if name.startswith(prefix)]

    async def stats(self, request: web.Request) -> web.Response:
        subs = {
            name: {
                "count": t.count,
                "first": t.batch_at[0] if t.batch_at else None,
                "last": t.batch_at[-1] if t.batch_at else None,
            }
            for name, t in self.tallies.items()
        }
        return _json({"total": sum(t.count for t in self.tallies.values()), "subs": subs})

    async def window(self, request: web.Request) -> web.Response:
        since, until = int(request.query["since"]), int(request.query["until"])
        return _json({"count": sum(t.received_between(since, until) for t in self._chosen(request))})

    async def latency(self, request: web.Request) -> web.Response:
        since, until = int(request.query["since"]), int(request.query["until"])
        return _json(_percentiles([d for t in self._chosen(request) for d in _slice(t, since, until)]))

    async def series(self, request: web.Request) -> web.Response:
        """Per bucket since ``since``: events received (all subscriptions) and lat-mode delays."""
        since, bucket = int(request.query["since"]), int(request.query.get("bucket_ms", 1000)) * 1000
        until = max((t.batch_at[-1] for t in self.tallies.values() if t.batch_at), default=since) + 1
        rows = []
        for start in range(since, until, bucket):
            end = start + bucket
            delays = [d for t in self.tallies.values() if t.event_at for d in _slice(t, start, end)]
            row = {"t": start, "count": sum(t.received_between(start, end) for t in self.tallies.values())}
            row.update(_percentiles(delays))
            rows.append(row)
        return _json(rows)

    async def reached(self, request: web.Request) -> web.Response:
        """When subscription ``name`` had received ``count`` events (null if not yet)."""
        tally = self.tallies.get(request.query["name"])
        count = int(request.query["count"])
        if tally is None or tally.count < count:
            return _json({"at": None})
        return _json({"at": tally.batch_at[bisect.bisect_left(tally.batch_total, count)]})

    async def reset(self, request: web.Request) -> web.Response:
        self.tallies.clear()
        return web.Response()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/_stats", self.stats)
        app.router.add_get("/_window", self.window)
        app.router.add_get("/_latency", self.latency)
        app.router.add_get("/_series", self.series)
        app.router.add_get("/_reached", self.reached)
        app.router.add_post("/_reset", self.reset)
        app.router.add_post("/{mode:count|lat}/{name}", self.deliver)
        app.router.add_get("/{mode:count|lat}/{name}", self.challenge)
        return app


def _slice(tally: Tally, since: int, until: int) -> array[float]:
    """The delays (ms) of the events that arrived in [since, until)."""
    lo, hi = bisect.bisect_left(tally.event_at, since), bisect.bisect_left(tally.event_at, until)
    return tally.delay_ms[lo:hi]


def _percentiles(delays: list[float]) -> dict[str, Any]:
    if not delays:
        return {"events": 0, "p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(delays)
    p50, p90, p99 = (_percentile(ordered, q) for q in (50, 90, 99))
    return {"events": len(ordered), "p50": p50, "p90": p90, "p99": p99, "max": float(ordered[-1])}


def _percentile(ordered: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default), of a sorted list."""
    rank = (len(ordered) - 1) * q / 100
    below = math.floor(rank)
    above = min(below + 1, len(ordered) - 1)
    return float(ordered[below] + (ordered[above] - ordered[below]) * (rank - below))


def _json(value: Any) -> web.Response:
    return web.Response(body=orjson.dumps(value), content_type="application/json")


async def _serve(host: str, port: int) -> None:
    runner = web.AppRunner(Sink().app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    bound = runner.addresses[0][1]
    sys.stdout.write(orjson.dumps({"port": bound}).decode() + "\n")
    sys.stdout.flush()
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="leadstream bench: the receiving sink")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    run_event_loop(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
