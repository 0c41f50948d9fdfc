"""``leadstream bench``: SPEC §9 measured on this machine, beside a bare loop of the same parts.

Every part runs in its own process on loopback: ``leadstream serve`` (or the bare loop,
bare.py), the load generator (load.py) and the receiving sink (sink.py). The harness
(harness.py) runs the scenarios (scenarios.py) and report.py prints the table, writes the JSON
and draws the plot. See BENCHMARKS.md.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from rich.console import Console

if TYPE_CHECKING:
    from leadstream.bench.harness import Durations

SCENARIO_NAMES = ("ingest", "e2e", "fanout", "latency", "idle", "backlog", "source", "cluster")
# Run unless asked for by name: the cluster scenario needs --database-url.
ON_REQUEST = ("cluster",)
# Left out of --quick unless asked for by name: the source scenario waits for the planned polls of
# its quiet groups (minutes), which would break --quick's under-a-minute promise.
NOT_QUICK = ("source",)


def default_scenarios(quick: bool, database_url: str | None) -> list[str]:
    """The scenarios a run without --scenario measures, in order."""
    return [
        name
        for name in SCENARIO_NAMES
        if (database_url or name not in ON_REQUEST) and not (quick and name in NOT_QUICK)
    ]


def run_bench(
    quick: bool,
    json_path: Path | None,
    plot_path: Path | None,
    scenarios: list[str] | None,
    *,
    durations: Durations | None = None,
    database_url: str | None = None,
) -> int:
    """Run the benchmark; print the table; write ``json_path`` and ``plot_path`` if given.

    ``scenarios``: a subset of ``SCENARIO_NAMES`` (default: all, in that order; ``cluster`` only
    with ``database_url``; ``source`` not with ``quick``). ``database_url``: run leadstream on
    PostgreSQL (each scenario on a fresh database of that server, dropped after) instead of the
    embedded store. ``durations`` overrides how long each part measures (tests run tiny ones).
    Returns the exit code: 0 when every chosen scenario ran (a missed target is a figure, not an
    error), 1 when one failed, 2 for an unknown scenario name.
    """
    console = Console()
    if not console.is_terminal:
        console = Console(width=150)  # a file or a pipe: keep the table on one line per figure
    chosen = list(scenarios or default_scenarios(quick, database_url))
    if "cluster" in chosen and not database_url:
        console.print("[red]the cluster scenario needs --database-url postgresql://…[/red]")
        return 2
    unknown = [name for name in chosen if name not in SCENARIO_NAMES]
    if unknown:
        console.print(f"[red]unknown scenario {', '.join(unknown)}; choose from {', '.join(SCENARIO_NAMES)}[/red]")
        return 2
    try:
        return asyncio.run(_run(quick, chosen, json_path, plot_path, console, durations, database_url))
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        return 130


async def _run(
    quick: bool,
    chosen: list[str],
    json_path: Path | None,
    plot_path: Path | None,
    console: Console,
    durations: Durations | None,
    database_url: str | None,
) -> int:
    from leadstream.bench.harness import Bench, Sink
    from leadstream.bench.report import machine, plot, table, to_json
    from leadstream.bench.scenarios import SCENARIOS, memory, steps

    info = machine()
    bench = Bench(quick, console, durations=durations, database_url=database_url)
    figures, failed = [], []
    started = time.monotonic()
    background: list[asyncio.Task[None]] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as bench.http:
        try:
            with bench.progress:
                bench.progress.update(bench.task, total=sum(steps(name, bench) for name in chosen))
                background.append(asyncio.create_task(bench.monitor.run()))
                sink = await Sink(bench).start()
                background.append(asyncio.create_task(bench.sample_forever(sink)))
                for name in chosen:
                    try:
                        figures += await SCENARIOS[name](bench, sink)
                    except Exception as exc:  # one broken scenario must not lose the others' figures
                        failed.append(name)
                        console.print(f"[red]scenario {name} failed: {type(exc).__name__}: {exc}[/red]")
                figures.append(memory(bench))
                bench.step("done")
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            bench.keep = bench.keep or bool(failed)  # a failed scenario's logs are worth reading
            await bench.close()
    seconds = time.monotonic() - started
    table(figures, info, console, seconds, quick, bench.points)
    if json_path is not None:
        to_json(json_path, figures, info, bench, seconds)
        console.print(f"figures written to {json_path}")
    if plot_path is not None:
        problem = plot(plot_path, bench)
        console.print(f"plot: {problem}" if problem else f"plot written to {plot_path}")
    if failed:
        console.print(f"[red]failed: {', '.join(failed)} (logs were in {bench.workdir})[/red]")
    return 1 if failed else 0
