"""`leadstream simulate`: realistic traffic of a simulated platform, published to a server."""

from __future__ import annotations

import asyncio
from typing import Any

import typer

from leadstream.cli.client import JSON, KEY, SERVER, check_server, echo_json
from leadstream.client import operator_key

RATE = typer.Option(200.0, metavar="N", help="records per second")
SEED = typer.Option(0, metavar="N", help="the same seed gives the same records")


def simulate(
    rate: float = RATE,
    duration: float = typer.Option(30.0, metavar="SECONDS", help="how long to publish"),
    seed: int = SEED,
    batch: int = typer.Option(500, metavar="N", help="records per request"),
    server: str = SERVER,
    key: str | None = KEY,
    as_json: bool = JSON,
) -> None:
    """Publish realistic traffic of a simulated platform (several tenants, every stream)."""
    from leadstream.sim.publish import PublishError
    from leadstream.sim.publish import simulate as run

    check_server(server)
    stop = asyncio.Event()

    async def go() -> Any:
        task = asyncio.create_task(
            run(server, operator_key(key) or "", rate=rate, duration=duration, seed=seed, batch=batch, stop=stop)
        )
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:  # Ctrl-C: stop and report what was published
            stop.set()
            return await task

    try:
        result = asyncio.run(go())
    except PublishError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(1) from None
    summary = result.as_json()
    if as_json:
        echo_json(summary)
        return
    typer.echo(
        f"published {summary['published']} records in {summary['elapsed']} s: accepted {summary['accepted']}, "
        f"duplicates {summary['duplicates']}, rejected {summary['rejected']}"
    )
    for error in summary["errors"]:
        typer.echo(f"  {error}")
