"""`leadstream simulate`: realistic traffic of a simulated platform, published to a server; and
`leadstream simulate marketo`: a simulated Marketo instance to point a source at (SPEC §10.2)."""

from __future__ import annotations

import asyncio
from typing import Any

import typer

from leadstream.cli.client import JSON, KEY, SERVER, check_server, echo_json
from leadstream.cli.group import CommandGroup
from leadstream.client import operator_key

RATE = typer.Option(200.0, metavar="N", help="records per second")
SEED = typer.Option(0, metavar="N", help="the same seed gives the same records")


simulate = CommandGroup(
    help="Publish realistic traffic of a simulated platform (several tenants, every stream); "
    "`simulate marketo` serves a simulated Marketo instance instead.",
    runs_alone=True,
)


@simulate.callback(invoke_without_command=True)
def platform(
    ctx: typer.Context,
    rate: float = RATE,
    duration: float = typer.Option(30.0, metavar="SECONDS", help="how long to publish"),
    seed: int = SEED,
    batch: int = typer.Option(500, metavar="N", help="records per request"),
    server: str = SERVER,
    key: str | None = KEY,
    as_json: bool = JSON,
) -> None:
    """Publish realistic traffic of a simulated platform (several tenants, every stream)."""
    if ctx.invoked_subcommand is not None:
        return
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


@simulate.command("marketo")
def marketo(
    port: int = typer.Option(8471, metavar="PORT", help="the port on 127.0.0.1"),
    munchkin: str = typer.Option("123-ABC-456", metavar="MUNCHKIN-ID", help="the instance's Munchkin ID"),
    rate: float = typer.Option(10.0, metavar="N", help="activities per second"),
    token_ttl: float = typer.Option(3600.0, metavar="SECONDS", help="how long an access token lasts"),
    faults: str = typer.Option(
        "", metavar="KINDS", help="faults to inject: 601,602,604,606,607,608,611,615,713,5xx,timeout"
    ),
    fault_rate: float = typer.Option(0.05, metavar="SHARE", help="the share of calls that get a fault (with --faults)"),
    calls_per_20s: int = typer.Option(100, "--calls-per-20s", metavar="N", help="the rate limit (606 beyond)"),
    max_concurrent: int = typer.Option(10, metavar="N", help="calls in flight at most (615 beyond)"),
    daily_quota: int = typer.Option(50_000, metavar="N", help="calls per day (607 beyond)"),
    client_secret: str | None = typer.Option(None, metavar="SECRET", help="the client secret (default: a new one)"),
    seed: int = SEED,
) -> None:
    """Serve a simulated Marketo instance (REST API, limits, expiring tokens, faults) until Ctrl-C."""
    from leadstream.sim.marketo import run_marketo

    try:
        asyncio.run(
            run_marketo(
                port=port, munchkin=munchkin, rate=rate, token_ttl=token_ttl, faults=faults,
                fault_rate=fault_rate if faults else 0.0, calls_per_20s=calls_per_20s,
                max_concurrent=max_concurrent, daily_quota=daily_quota, client_secret=client_secret, seed=seed,
            )
        )  # fmt: skip
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        pass
