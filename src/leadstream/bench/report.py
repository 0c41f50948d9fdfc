"""What a run reports: the machine, the table, the JSON file and the plot."""

from __future__ import annotations

import os
import platform
import sqlite3
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
import psutil
from rich.console import Console
from rich.table import Table

from leadstream.bench.harness import Bench, Figure, Point

LIBRARIES = ("leadstream", "starlette", "fastapi", "uvicorn", "uvloop", "httptools", "msgspec", "orjson", "aiohttp")


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor() or model
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu_model": model,
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "libraries": versions,
    }


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit in ("ms", "% of a core"):
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def table(
    figures: list[Figure], info: dict[str, Any], console: Console, seconds: float, quick: bool, points: list[Point]
) -> None:
    t = Table(title=f"leadstream bench{' --quick' if quick else ''} — {info['date']}", title_justify="left")
    t.add_column("scenario")
    t.add_column("figure")
    t.add_column("unit")
    t.add_column("leadstream", justify="right", style="bold")
    t.add_column("bare, 1 proc", justify="right")
    t.add_column("bare, 2 procs", justify="right")
    t.add_column("÷ best bare", justify="right")
    t.add_column("target", justify="right")
    t.add_column("", justify="center")
    for f in figures:
        ok = f.meets_target
        mark = "[green]✓[/green]" if ok else "[red]✗[/red]" if ok is False else ""
        t.add_row(
            f.scenario,
            f.metric,
            f.unit,
            _number(f.leadstream, f.unit),
            _number(f.bare.get("1 process"), f.unit),
            _number(f.bare.get("2 processes"), f.unit),
            f"{f.ratio:.2f}×" if f.ratio is not None else "—",
            f.target.replace(">=", "≥").replace("<=", "≤"),
            mark,
        )
    console.print(t)
    for f in figures:
        if f.note:
            console.print(f"[dim]{f.scenario}: {f.note.strip()}[/dim]")
    others = [p.other_cpu for p in points]
    busy = sum(others) / len(others) if others else 0.0
    if busy > 15:
        console.print(
            f"[yellow]other work used {busy:.0f}% of a core on average during the run "
            f"(peak {max(others):.0f}%): the figures are lower than this machine can do[/yellow]"
        )
    console.print(
        f"[dim]{info['cpu_model']}, {info['logical_cores']} cores, {info['memory_gb']} GB; Python {info['python']}, "
        f"SQLite {info['sqlite']}; {info['os']}; run took {seconds:.0f} s[/dim]"
    )


def to_json(path: Path, figures: list[Figure], info: dict[str, Any], bench: Bench, seconds: float) -> None:
    document = {
        "machine": info,
        "quick": bench.quick,
        "durations": asdict(bench.durations),
        "seconds": round(seconds, 1),
        "figures": [
            {**asdict(f), "best_bare": f.best_bare, "ratio_to_bare": f.ratio, "meets_target": f.meets_target}
            for f in figures
        ],
        "spans": [asdict(s) for s in bench.spans],
        "timeline": [asdict(p) for p in bench.points],
        "latency_series": bench.latency_points,
    }
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))


def plot(path: Path, bench: Bench) -> str | None:
    """Throughput, latency, server CPU and RSS over time; None when drawn, else why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'leadstream[plot]')"
    t0 = bench.started
    fig, (rates, delays, server) = plt.subplots(3, 1, figsize=(13, 9), sharex=True)
    xs = [p.t - t0 for p in bench.points]
    rates.plot(xs, [p.ingested_per_s for p in bench.points], label="ingested/s", lw=1)
    rates.plot(xs, [p.delivered_per_s for p in bench.points], label="delivered/s (all subscriptions)", lw=1)
    rates.set_ylabel("events/s")
    rates.legend(loc="upper right", fontsize=8)
    lat = bench.latency_points
    if lat:
        lx: list[float] = []
        p50: list[float] = []
        p99: list[float] = []
        for row in lat:
            x = row["t"] / 1e6 - t0
            if lx and x - lx[-1] > 2:  # a gap between scenarios: break the line
                for series in (lx, p50, p99):
                    series.append(float("nan"))
            lx.append(x)
            p50.append(row["p50"])
            p99.append(row["p99"])
        delays.plot(lx, p50, ".-", label="p50", lw=1, ms=3)
        delays.plot(lx, p99, ".-", label="p99", lw=1, ms=3)
        delays.set_yscale("log")
        delays.legend(loc="upper right", fontsize=8)
    delays.set_ylabel("ingest → delivered, ms (1 s buckets)")
    server.plot(xs, [p.server_cpu for p in bench.points], label="server CPU %", lw=1, color="tab:red")
    server.plot(
        xs, [p.other_cpu for p in bench.points], label="other work on the machine, CPU %", lw=0.8, color="0.6", ls="--"
    )
    server.set_ylabel("CPU, % of a core")
    server.legend(loc="upper left", fontsize=8)
    memory = server.twinx()
    memory.plot(xs, [p.server_rss_mb for p in bench.points], label="server RSS MB", lw=1, color="tab:purple")
    memory.set_ylabel("RSS, MB")
    server.set_xlabel("seconds since the start of the run")
    for i, span in enumerate(bench.spans):
        for axis in (rates, delays, server):
            axis.axvspan(span.start - t0, span.end - t0, color="0.92" if i % 2 else "0.97", zorder=0)
        rates.annotate(
            span.name,
            (span.start - t0, 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=7,
            va="top",
            ha="left",
            color="0.35",
        )
    fig.suptitle(f"leadstream bench{' --quick' if bench.quick else ''}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
