"""The scenarios of SPEC §9, each measured on leadstream and on the bare loop in the same run.

A scenario is ``async (bench, sink) -> list[Figure]``. Leadstream's part of a scenario that
needs subscriptions is skipped (with the reason in the figure's note) while the server has no
subscriptions API; the bare loop's part always runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from leadstream.bench.harness import Bench, Figure, Server, Sink, Skipped
from leadstream.bench.procs import cpu_seconds
from leadstream.bench.source import source
from leadstream.testing import wait_until

Scenario = Callable[[Bench, Sink], Awaitable[list[Figure]]]

BATCH_SIZE = 500
PUSH_INTERVAL_MS = 50
LATENCY_RATE = 10_000
STEADY_RATE = 2_000  # what the other subscriptions get while a backlog drains


def _now_us() -> int:
    return time.time_ns() // 1000


def _variants(bench: Bench) -> list[int]:
    return [1, 2] if bench.durations.both_bare_variants else [2]


def _label(processes: int) -> str:
    return "1 process" if processes == 1 else "2 processes"


@dataclass
class Sustained:
    ingested: float  # accepted events/s in the window
    delivered: float  # events (or deliveries) received/s in the window
    caught_up_s: float | None  # after the load stopped, until everything accepted was delivered
    lost: int  # accepted × subscriptions − received, once caught up (or at the deadline)
    detail: dict[str, Any]


def _per_event(cpu: dict[str, float], rate: float) -> dict[str, float]:
    """Each role's CPU µs per event at ``rate`` events/s (from its % of a core)."""
    return {role: round(percent * 1e4 / rate, 1) for role, percent in cpu.items() if role != "other"} if rate else {}


async def _sustained(bench: Bench, sink: Sink, url: str, key: str, prefix: str, subscriptions: int) -> Sustained:
    """Publish as fast as accepted for warm-up + window; measure the window; then wait for the tail."""
    d = bench.durations
    run = await bench.finish_load(await bench.load(url, key, duration=d.warmup + d.window))
    since, until = run.lines[0]["t"] + int(d.warmup * 1e6), run.lines[-1]["t"]
    seconds = (until - since) / 1e6
    ingested = run.rate(since, until)
    delivered = await sink.received(since, until, prefix) / seconds if subscriptions else 0.0
    expected = run.accepted * subscriptions
    caught_up: float | None = None
    if subscriptions:
        stop = time.monotonic()

        async def all_there() -> bool:
            return await sink.total(prefix) >= expected

        try:
            await wait_until(
                all_there, 30 if bench.quick else 180, interval=0.05, what="the sink to receive every accepted event"
            )
            caught_up = time.monotonic() - stop
        except TimeoutError:
            pass
    received = await sink.total(prefix) if subscriptions else 0
    cpu = bench.monitor.cpu_between(since / 1e6, until / 1e6)
    detail = {
        "window_s": round(seconds, 2),
        "ingested_per_s": round(ingested),
        "delivered_per_s": round(delivered),
        "accepted": run.accepted,
        "received": received,
        "catch_up_s": round(caught_up, 2) if caught_up is not None else None,
        "load_errors": run.errors,
        "cpu_percent": cpu,
        # CPU time per event is steadier than a rate when other work shares the machine. Per
        # accepted event for what ingests, per delivered event for what delivers: when delivery
        # falls behind (fan-out), one denominator would misstate the other side's cost.
        "cpu_us_per_accepted_event": _per_event(cpu, ingested),
        "cpu_us_per_delivered_event": _per_event(cpu, delivered / subscriptions) if subscriptions else {},
    }
    return Sustained(ingested, delivered, caught_up, max(0, expected - received), detail)


async def ingest_only(bench: Bench, sink: Sink) -> list[Figure]:
    """Not a §9 target, but what every other figure stands on: accepted events/s, no subscriptions."""
    figure = Figure("ingest", "accepted, no subscriptions", "events/s", None)
    async with bench.span("ingest · leadstream", sink), bench.leadstream("ingest") as server:
        result = await _sustained(bench, sink, server.url, server.key, "", 0)
        figure.leadstream = result.ingested
        figure.detail["leadstream"] = result.detail
    bench.advance()
    async with bench.span("ingest · bare", sink), bench.bare("ingest", [], processes=2, deliver=False) as loop:
        result = await _sustained(bench, sink, loop.url, "", "", 0)
        figure.bare["1 process"] = result.ingested
        figure.detail["bare"] = result.detail
    bench.advance()
    return [figure]


async def _end_to_end(bench: Bench, sink: Sink, name: str, subscriptions: int, figure: Figure) -> list[Figure]:
    async def leadstream() -> None:
        async with bench.leadstream(name) as server:
            await server.require_subscriptions()
            for i in range(subscriptions):
                await server.subscribe(
                    f"{name}-{i}", sink.endpoint(f"{name}-{i}"), batchSize=BATCH_SIZE, pushIntervalMs=PUSH_INTERVAL_MS
                )
            result = await _sustained(bench, sink, server.url, server.key, f"{name}-", subscriptions)
            figure.leadstream = result.delivered
            figure.detail["leadstream"] = result.detail
            if result.lost:
                figure.note += f"{result.lost} accepted events not delivered within the deadline. "

    async with bench.span(f"{name} · leadstream", sink):
        await _skippable(figure, leadstream())
    bench.advance()
    for processes in _variants(bench):
        endpoints = [sink.endpoint(f"bare-{i}") for i in range(subscriptions)]
        async with (
            bench.span(f"{name} · bare {processes}p", sink),
            bench.bare(name, endpoints, processes=processes) as loop,
        ):
            result = await _sustained(bench, sink, loop.url, "", "bare-", subscriptions)
            figure.bare[_label(processes)] = result.delivered
            figure.detail[f"bare {_label(processes)}"] = result.detail
        bench.advance()
    return [figure]


async def end_to_end(bench: Bench, sink: Sink) -> list[Figure]:
    """(1) Publish over HTTP as fast as accepted; events/s delivered to one subscription."""
    figure = Figure("e2e", "sustained end to end, 1 subscription", "events/s", None, target=">= 50000")
    return await _end_to_end(bench, sink, "e2e", 1, figure)


async def fan_out(bench: Bench, sink: Sink) -> list[Figure]:
    """(2) The same to 10 subscriptions: deliveries/s (events × subscriptions)."""
    figure = Figure("fanout", "fan-out to 10 subscriptions", "deliveries/s", None, target=">= 200000")
    return await _end_to_end(bench, sink, "fanout", 10, figure)


async def _offered(bench: Bench, sink: Sink, url: str, key: str, prefix: str) -> dict[str, Any]:
    """Offer LATENCY_RATE events/s; the delays (ms) of the events received after the warm-up."""
    d = bench.durations
    run = await bench.finish_load(
        await bench.load(url, key, duration=d.warmup + d.window, rate=LATENCY_RATE, batch=100, connections=8)
    )
    since = run.lines[0]["t"] + int(d.warmup * 1e6)

    async def all_there() -> bool:
        return await sink.total(prefix) >= run.accepted

    await wait_until(all_there, 30, interval=0.05, what="the sink to receive every accepted event")
    delays = await sink.latency(since, _now_us() + 1, prefix)
    delays["offered_per_s"] = LATENCY_RATE
    delays["ingested_per_s"] = round(run.rate(since, run.lines[-1]["t"]))
    delays["load_errors"] = run.errors
    delays["cpu_percent"] = bench.monitor.cpu_between(since / 1e6, run.lines[-1]["t"] / 1e6)
    return delays


async def latency(bench: Bench, sink: Sink) -> list[Figure]:
    """(3) Ingest → delivered at an offered 10,000 events/s, pushIntervalMs=50: p50, p99, max."""
    name = f"latency at {LATENCY_RATE:,}/s, {PUSH_INTERVAL_MS} ms push"
    p50 = Figure("latency", f"p50 {name}", "ms", None, target="<= 60", higher_is_better=False)
    p99 = Figure("latency", f"p99 {name}", "ms", None, target="<= 250", higher_is_better=False)
    worst = Figure("latency", f"max {name}", "ms", None, higher_is_better=False)
    figures = [p50, p99, worst]

    async def leadstream() -> None:
        async with bench.leadstream("latency") as server:
            await server.require_subscriptions()
            await server.subscribe(
                "lat-0", sink.endpoint("lat-0", timed=True), batchSize=BATCH_SIZE, pushIntervalMs=PUSH_INTERVAL_MS
            )
            delays = await _offered(bench, sink, server.url, server.key, "lat-")
            for figure, key in zip(figures, ("p50", "p99", "max")):
                figure.leadstream = delays[key]
            p50.detail["leadstream"] = delays

    async with bench.span("latency · leadstream", sink):
        await _skippable(p50, leadstream(), also=figures[1:])
    bench.advance()
    for processes in _variants(bench):
        async with (
            bench.span(f"latency · bare {processes}p", sink),
            bench.bare(
                "latency", [sink.endpoint("bare-0", timed=True)], processes=processes, interval_ms=PUSH_INTERVAL_MS
            ) as loop,
        ):
            delays = await _offered(bench, sink, loop.url, "", "bare-")
            for figure, key in zip(figures, ("p50", "p99", "max")):
                figure.bare[_label(processes)] = delays[key]
            p50.detail[f"bare {_label(processes)}"] = delays
        bench.advance()
    return figures


async def idle(bench: Bench, sink: Sink) -> list[Figure]:
    """(4) 1,000 subscriptions, every one live (each received a probe), then no traffic: server CPU."""
    n = bench.durations.idle_subscriptions
    figure = Figure(
        "idle",
        f"server CPU, {n:,} idle subscriptions",
        "% of a core",
        None,
        target="<= 5",
        higher_is_better=False,
        note="the bare loop has no subscriptions to keep",
    )

    async def leadstream() -> None:
        async with bench.leadstream("idle") as server:
            await server.require_subscriptions()
            started = time.monotonic()
            limit = asyncio.Semaphore(16)

            async def create(i: int) -> None:
                async with limit:
                    await server.subscribe(f"idle-{i}", sink.endpoint(f"idle-{i}"))  # the platform's defaults

            await asyncio.gather(*(create(i) for i in range(n)))
            created = time.monotonic() - started
            probe = await bench.finish_load(await bench.load(server.url, server.key, count=10, batch=10, connections=1))

            async def all_there() -> bool:
                return await sink.total("idle-") >= probe.accepted * n

            started = time.monotonic()
            await wait_until(all_there, 60, interval=0.1, what=f"the probe events to reach all {n} subscriptions")
            probed = time.monotonic() - started
            await asyncio.sleep(0.5 if bench.quick else 2.0)  # let the last acknowledgements and state saves settle
            # Whole-window CPU time, not an average of samples: idle use is below one clock tick per sample.
            since, used = time.time(), cpu_seconds(server)
            await asyncio.sleep(bench.durations.idle_window)
            seconds = time.time() - since
            figure.leadstream = 100.0 * (cpu_seconds(server) - used) / seconds
            figure.detail["leadstream"] = {
                "create_s": round(created, 2),
                "probe_delivered_s": round(probed, 2),
                "window_s": round(seconds, 2),
                "cpu_percent": bench.monitor.cpu_between(since, time.time()),
            }

    async with bench.span("idle · leadstream", sink):
        await _skippable(figure, leadstream())
    bench.advance()
    return [figure]


async def backlog(bench: Bench, sink: Sink) -> list[Figure]:
    """(5) A paused subscription with N events; resume: drain rate, and the others' latency meanwhile."""
    n = bench.durations.backlog
    drain = Figure("backlog", f"drain of a {n:,}-event backlog", "events/s", None, target=">= 50000")
    others = Figure(
        "backlog",
        f"others' p99 during the drain ({STEADY_RATE:,}/s)",
        "ms",
        None,
        higher_is_better=False,
        note="bare loop: every endpoint is in lockstep, so there are no 'others'",
    )

    async def leadstream() -> None:
        async with bench.leadstream("backlog") as server:
            await server.require_subscriptions()
            paused = await server.subscribe(
                "backlog", sink.endpoint("backlog"), batchSize=BATCH_SIZE, pushIntervalMs=PUSH_INTERVAL_MS
            )
            await server.action(paused, "pause")
            bench.step(f"backlog · leadstream: fill {n:,}")
            fill = await bench.finish_load(await bench.load(server.url, server.key, count=n), timeout=3600)
            fill_rate = fill.rate(fill.lines[0]["t"], fill.lines[-1]["t"])
            for i in range(3):
                await server.subscribe(
                    f"other-{i}",
                    sink.endpoint(f"other-{i}", timed=True),
                    batchSize=BATCH_SIZE,
                    pushIntervalMs=PUSH_INTERVAL_MS,
                )
            bench.step("backlog · leadstream: drain")
            result = await _drain_beside_others(bench, sink, server, paused, fill.accepted)
            drain.leadstream = result["drain_per_s"]
            others.leadstream = result["during"]["p99"]
            drain.detail["leadstream"] = {"fill_per_s": round(fill_rate), **result}

    async with bench.span("backlog · leadstream", sink):
        await _skippable(drain, leadstream(), also=[others])
    bench.advance()

    m = min(n, bench.durations.bare_backlog)
    async with (
        bench.span("backlog · bare 2p", sink),
        bench.bare("backlog", [sink.endpoint("bare-0")], processes=2, deliver=False) as loop,
    ):
        bench.step(f"backlog · bare: fill {m:,}")
        fill = await bench.finish_load(await bench.load(loop.url, count=m), timeout=3600)
        bench.step("backlog · bare: drain")
        await loop.start_delivery()
        resumed = _now_us()

        async def drained() -> int | None:
            return await sink.reached("bare-0", fill.accepted)

        done = await wait_until(drained, 600, interval=0.05, what="the bare loop to drain its backlog")
        drain.bare["2 processes"] = fill.accepted / ((done - resumed) / 1e6)
        drain.detail["bare 2 processes"] = {
            "backlog": fill.accepted,
            "drain_s": round((done - resumed) / 1e6, 2),
            "fill_per_s": round(fill.rate(fill.lines[0]["t"], fill.lines[-1]["t"])),
        }
        if m != n:
            drain.note = f"bare loop measured on a {m:,}-event backlog (a rate; saves minutes)"
    bench.advance()
    return [drain, others]


async def _drain_beside_others(bench: Bench, sink: Sink, server: Server, paused: str, backlog: int) -> dict[str, Any]:
    baseline_s = 1.5 if bench.quick else 5.0
    steady = await bench.load(
        server.url, server.key, rate=STEADY_RATE, batch=100, connections=2, duration=baseline_s + 3600
    )
    try:
        await steady.first_line()
        await asyncio.sleep(baseline_s)
        resumed = _now_us()
        before = await sink.latency(resumed - int((baseline_s - 0.5) * 1e6), resumed, "other-")
        await server.action(paused, "resume")

        async def drained() -> int | None:
            return await sink.reached("backlog", backlog)

        done = await wait_until(drained, 3600, interval=0.05, what="the paused subscription to drain its backlog")
        during = await sink.latency(resumed, done, "other-")
    finally:
        await steady.stop()
        bench.loads.remove(steady)
    seconds = (done - resumed) / 1e6
    return {
        "backlog": backlog,
        "drain_s": round(seconds, 2),
        "drain_per_s": backlog / seconds,
        "before": before,
        "during": during,
        "cpu_percent": bench.monitor.cpu_between(resumed / 1e6, done / 1e6),
    }


async def _skippable(figure: Figure, work: Awaitable[None], also: Sequence[Figure] = ()) -> None:
    try:
        await work
    except Skipped as exc:
        for f in (figure, *also):
            f.note = f"leadstream skipped: {exc}. " + f.note


def memory(bench: Bench) -> Figure:
    """(6) Peak RSS of the server across the whole run (every scenario), sampled every 250 ms."""
    peak = bench.monitor.peak_rss
    figure = Figure("memory", "peak server RSS, whole run", "MB", None, target="<= 300", higher_is_better=False)
    if "server" in peak:
        figure.leadstream = peak["server"] / 2**20
    bare = max(peak.get("bare-ingest", 0), peak.get("bare-deliver", 0))
    if bare:
        figure.bare["2 processes"] = bare / 2**20
    figure.detail["per_span"] = _peaks_per_span(bench)
    return figure


def _peaks_per_span(bench: Bench) -> dict[str, float]:
    peaks: dict[str, float] = {}
    for span in bench.spans:
        peak = max((s.rss.get("server", 0) for s in bench.monitor.samples if span.start <= s.t <= span.end), default=0)
        if peak:
            peaks[span.name] = round(peak / 2**20, 1)
    return peaks


LOCK_WAIT = "leadstream_append_lock_wait_seconds_total"


async def cluster(bench: Bench, sink: Sink) -> list[Figure]:
    """PostgreSQL (--database-url): one node, then two nodes on one database, each node taking
    half the load (as behind a load balancer), one subscription. Aggregate ingest and end to end,
    and how long appends waited for each other (for the numbering lock, the one step they share)."""
    ingest = Figure("cluster", "PostgreSQL ingest, 2 nodes on one database", "events/s", None)
    e2e = Figure("cluster", "PostgreSQL end to end, 2 nodes, 1 subscription", "events/s", None)
    waited = Figure("cluster", "appends waiting for each other, 2 nodes", "ms per s", None, higher_is_better=False)
    for f in (ingest, e2e, waited):
        f.note = "'bare' column: one node on the same database (ratio = scaling)"
    for count in (1, 2):
        label = "1 node" if count == 1 else "2 nodes"
        prefix = f"cluster{count}-"
        async with bench.span(f"cluster · {label}", sink), bench.nodes(f"cluster{count}", count) as nodes:
            await nodes[0].require_subscriptions()
            await nodes[0].subscribe(
                prefix + "0", sink.endpoint(prefix + "0"), batchSize=BATCH_SIZE, pushIntervalMs=PUSH_INTERVAL_MS
            )
            numbered = sum([await node.metric(LOCK_WAIT) for node in nodes])
            d = bench.durations
            loads = [
                await bench.load(node.url, node.key, duration=d.warmup + d.window, connections=4 // count)
                for node in nodes
            ]
            runs = [await bench.finish_load(load) for load in loads]
            since = max(run.lines[0]["t"] for run in runs) + int(d.warmup * 1e6)
            until = min(run.lines[-1]["t"] for run in runs)
            seconds = (until - since) / 1e6
            ingested = sum(run.rate(since, until) for run in runs)
            delivered = await sink.received(since, until, prefix) / seconds
            accepted = sum(run.accepted for run in runs)
            waited_ms = 1000 * (sum([await node.metric(LOCK_WAIT) for node in nodes]) - numbered)

            async def all_there(prefix: str = prefix, accepted: int = accepted) -> bool:
                return await sink.total(prefix) >= accepted

            await wait_until(
                all_there, 30 if bench.quick else 180, interval=0.05, what="every accepted event delivered"
            )
            detail = {
                "window_s": round(seconds, 2),
                "ingested_per_s": round(ingested),
                "delivered_per_s": round(delivered),
                "accepted": accepted,
                "appends_waited_ms_per_s": round(waited_ms / seconds, 1),
                "appends_waited_us_per_event": round(waited_ms * 1000 / max(accepted, 1), 2),
                "load_errors": [e for run in runs for e in run.errors],
                "cpu_percent": bench.monitor.cpu_between(since / 1e6, until / 1e6),
            }
        for figure, value in ((ingest, ingested), (e2e, delivered), (waited, waited_ms / seconds)):
            if count == 1:
                figure.bare[label] = value
            else:
                figure.leadstream = value
            figure.detail[label] = detail
        bench.advance()
    return [ingest, e2e, waited]


SCENARIOS: dict[str, Scenario] = {
    "ingest": ingest_only,
    "e2e": end_to_end,
    "fanout": fan_out,
    "latency": latency,
    "idle": idle,
    "backlog": backlog,
    "source": source,
    "cluster": cluster,
}


def steps(name: str, bench: Bench) -> int:
    """Progress steps of a scenario (leadstream, then each bare variant), for the bar's total."""
    return {"ingest": 2, "idle": 1, "backlog": 2, "source": 2, "cluster": 2}.get(name, 1 + len(_variants(bench)))
