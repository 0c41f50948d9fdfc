"""`leadstream bench`: SPEC §9 measured on this machine (the benchmark itself is ``leadstream.bench``)."""

from __future__ import annotations

from pathlib import Path

import typer

from leadstream.bench import SCENARIO_NAMES, run_bench


def bench(
    quick: bool = typer.Option(False, "--quick", help="a short run (under a minute)"),
    json_path: Path | None = typer.Option(None, "--json", metavar="FILE", help="write the figures to this JSON file"),
    plot: Path | None = typer.Option(
        None, "--plot", metavar="FILE", help="draw throughput and latency over time (PNG; needs matplotlib)"
    ),
    scenario: list[str] | None = typer.Option(
        None, "--scenario", metavar="NAME", help=f"run only these scenarios (repeatable): {', '.join(SCENARIO_NAMES)}"
    ),
    database_url: str | None = typer.Option(
        None,
        "--database-url",
        metavar="URL",
        help="run leadstream on PostgreSQL (postgresql://…): a fresh database per scenario, dropped after; "
        "adds the cluster scenario (two nodes on one database)",
    ),
) -> None:
    """Measure throughput, latency, idle cost, backlog drain and memory on this machine."""
    raise typer.Exit(run_bench(quick, json_path, plot, scenario or None, database_url=database_url))
