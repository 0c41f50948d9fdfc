"""The `leadstream` command: thin — parse, build settings, call the library."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from leadstream.keys_cli import register as register_key_commands
from leadstream.settings import Settings

if TYPE_CHECKING:
    from leadstream.client import Client

app = typer.Typer(no_args_is_help=True, add_completion=False, help="leadstream: Data Streams, self-hosted.")


@app.callback()
def main() -> None:
    """leadstream: Data Streams, self-hosted."""


@app.command()
def serve(
    data_dir: Path = typer.Option(Path("leadstream-data"), envvar="LEADSTREAM_DATA_DIR", help="where the embedded store keeps its files"),
    host: str = typer.Option("127.0.0.1", envvar="LEADSTREAM_HOST"),
    port: int = typer.Option(8470, envvar="LEADSTREAM_PORT"),
    retention: str = typer.Option("7d", envvar="LEADSTREAM_RETENTION", help="how long events are kept: 7d, 12h, 30m, 45s"),
    purge_interval: Optional[str] = typer.Option(None, envvar="LEADSTREAM_PURGE_INTERVAL", help="how often expired events are purged (default: 60s, or retention/10 if shorter)"),
    allow_private_endpoints: bool = typer.Option(False, envvar="LEADSTREAM_ALLOW_PRIVATE_ENDPOINTS", help="allow endpoints on loopback/private addresses (demo, tests)"),
    database_url: Optional[str] = typer.Option(None, envvar="LEADSTREAM_DATABASE_URL", help="postgresql://… to run as a node of a cluster"),
    log_format: str = typer.Option("console", envvar="LEADSTREAM_LOG_FORMAT", help="console or json"),
    tls_cert: Optional[Path] = typer.Option(None, envvar="LEADSTREAM_TLS_CERT", help="serve HTTPS: the certificate (PEM, chain allowed)"),
    tls_key: Optional[Path] = typer.Option(None, envvar="LEADSTREAM_TLS_KEY", help="serve HTTPS: its private key (PEM)"),
    allow_cidr: list[str] = typer.Option([], "--allow-cidr", help="allow endpoints in this private range (repeatable), e.g. 10.20.0.0/16"),
    delivery_process: bool = typer.Option(False, "--delivery-process", envvar="LEADSTREAM_DELIVERY_PROCESS", help="deliver from a second process, so that a node uses two cores (embedded store)"),
) -> None:
    """Run the server: ingest, admin, journal and delivery."""
    from leadstream.server import serve as run
    from leadstream.settings import parse_duration

    keep = parse_duration(retention)
    settings = Settings(
        data_dir=data_dir,
        host=host,
        port=port,
        retention=keep,
        purge_interval=parse_duration(purge_interval) if purge_interval else min(60.0, keep / 10),
        allow_private_endpoints=allow_private_endpoints,
        database_url=database_url,
        log_format=log_format,  # type: ignore[arg-type]
        tls_cert=tls_cert,
        tls_key=tls_key,
        delivery_process=delivery_process,
        **({"allowed_cidrs": allow_cidr} if allow_cidr else {}),
    )
    run(settings)


# -- talking to a running server ------------------------------------------------------------------

ServerOpt = typer.Option("http://127.0.0.1:8470", "--server", envvar="LEADSTREAM_URL", help="leadstream's base URL")
KeyOpt = typer.Option(None, "--key", envvar="LEADSTREAM_ADMIN_KEY", help="API key (default: ./leadstream-data/admin.key)")
JsonOpt = typer.Option(False, "--json", help="print JSON for scripts instead of a table")


def _call(server: str, key: str | None, work: Callable[[Client], Awaitable[Any]]) -> Any:
    """Run one API conversation; a failure is one clear line on stderr and exit code 1."""
    from leadstream.client import ApiError, Client, default_key

    async def go() -> Any:
        async with Client(server, key or default_key()) as client:
            return await work(client)

    try:
        return asyncio.run(go())
    except ApiError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _print(value: Any, as_json: bool, columns: list[str] | None = None, title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    if as_json:
        typer.echo(json.dumps(value, indent=2))
        return
    rows = value if isinstance(value, list) else [value]
    if columns is None:  # one record: a two-column table of its fields
        table = Table("field", "value", title=title, show_header=False)
        for name, field_value in rows[0].items():
            table.add_row(name, field_value if isinstance(field_value, str) else json.dumps(field_value))
    else:
        table = Table(*columns, title=title)
        for row in rows:
            table.add_row(*(_cell(row.get(c)) for c in columns))
    Console().print(table)


def _cell(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else json.dumps(value)


subscriptions = typer.Typer(no_args_is_help=True, help="Create and manage subscriptions (the admin API).")
app.add_typer(subscriptions, name="subscriptions")
SUMMARY = ["id", "name", "munchkinId", "stream", "format", "state", "delivered", "pending", "lagSeconds", "lastError"]


@subscriptions.command("create")
def subscriptions_create(
    name: str = typer.Option(..., help="a name for people"),
    munchkin: str = typer.Option(..., "--munchkin", help="the tenant's Munchkin ID (123-ABC-456)"),
    stream: str = typer.Option(..., help="activity, audit or notification"),
    endpoint: str = typer.Option(..., help="the URL events are POSTed to"),
    event_type: list[str] = typer.Option(["*"], "--event-type", help="activity type id or name, audit component[:action], notification kind; repeatable"),
    format: Optional[str] = typer.Option(None, help="legacy, cloudevents or adobe_io"),
    token: Optional[str] = typer.Option(None, help="send Authorization: Bearer TOKEN"),
    oauth_token_url: Optional[str] = typer.Option(None, help="OAuth2 client credentials: token URL"),
    client_id: Optional[str] = typer.Option(None),
    client_secret: Optional[str] = typer.Option(None, envvar="LEADSTREAM_CLIENT_SECRET"),
    custom_objects: bool = typer.Option(False, help="also deliver custom-object changes (activity stream)"),
    settings_file: Optional[Path] = typer.Option(None, "--from-file", help="JSON with any further fields of SPEC §3"),
    server: str = ServerOpt, key: Optional[str] = KeyOpt, as_json: bool = JsonOpt,
) -> None:
    """Create a subscription."""
    body: dict[str, Any] = json.loads(settings_file.read_text()) if settings_file else {}
    body.update(name=name, munchkinId=munchkin, stream=stream, endpoint=endpoint, customObjects=custom_objects,
                eventTypes=[int(t) if t.isdigit() else t for t in event_type])
    if format:
        body["format"] = format
    if token:
        body["auth"] = {"type": "token", "token": token}
    elif oauth_token_url:
        body["auth"] = {"type": "oauth2", "tokenUrl": oauth_token_url, "clientId": client_id, "clientSecret": client_secret}
    _print(_call(server, key, lambda c: c.request("POST", "/v1/subscriptions", json=body)), as_json, title="created")


@subscriptions.command("list")
def subscriptions_list(munchkin: Optional[str] = typer.Option(None, "--munchkin"), server: str = ServerOpt,
                       key: Optional[str] = KeyOpt, as_json: bool = JsonOpt) -> None:
    """List subscriptions (of one tenant with --munchkin)."""
    query = f"?munchkinId={munchkin}" if munchkin else ""

    async def every_page(client: Client) -> list[Any]:
        items, path = [], f"/v1/subscriptions{query}"
        while path:
            page = await client.request("GET", path)
            items += page["subscriptions"]
            path = page.get("next")
        return items

    _print(_call(server, key, every_page), as_json, SUMMARY)


def _one(method: str, suffix: str, help_text: str, body: Callable[..., Any] | None = None) -> Callable[..., None]:
    def command(subscription_id: str = typer.Argument(..., help="the subscription id"), server: str = ServerOpt,
                key: Optional[str] = KeyOpt, as_json: bool = JsonOpt) -> None:
        path = f"/v1/subscriptions/{subscription_id}{suffix}"
        _print(_call(server, key, lambda c: c.request(method, path, json={} if method == "POST" else None)), as_json)

    command.__doc__ = help_text
    return command


subscriptions.command("show")(_one("GET", "", "Show a subscription with its live status."))
subscriptions.command("pause")(_one("POST", "/pause", "Pause delivery (no probes) until resumed."))
subscriptions.command("resume")(_one("POST", "/resume", "Resume delivery; the backlog drains in order."))
subscriptions.command("delete")(_one("DELETE", "", "Deprovision: delivery stops for good."))


@subscriptions.command("replay")
def subscriptions_replay(subscription_id: str, from_: str = typer.Option(..., "--from", help="RFC 3339 time or a log position"),
                         server: str = ServerOpt, key: Optional[str] = KeyOpt, as_json: bool = JsonOpt) -> None:
    """Move the cursor back (within retention) and deliver again from there."""
    start: Any = int(from_) if from_.isdigit() else from_
    _print(_call(server, key, lambda c: c.request("POST", f"/v1/subscriptions/{subscription_id}/replay", json={"from": start})), as_json)


@subscriptions.command("attempts")
def subscriptions_attempts(subscription_id: str, limit: int = typer.Option(20), server: str = ServerOpt,
                           key: Optional[str] = KeyOpt, as_json: bool = JsonOpt) -> None:
    """The delivery attempt log, newest first."""
    found = _call(server, key, lambda c: c.request("GET", f"/v1/subscriptions/{subscription_id}/attempts?limit={limit}"))
    items = found["attempts"] if isinstance(found, dict) else found
    _print(items, as_json, ["time", "batchId", "events", "status", "error", "durationMs", "retry"])


@app.command()
def publish(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="a JSON array of records, or NDJSON (one record a line)"),
    stream: str = typer.Option("activity", help="activity, audit or notification"),
    batch: int = typer.Option(5000, help="records per request (at most 10,000)"),
    server: str = ServerOpt, key: Optional[str] = KeyOpt, as_json: bool = JsonOpt,
) -> None:
    """Publish records from a file; prints accepted, duplicates and every rejection with its reason."""
    from leadstream.publishing import publish_file

    result = _call(server, key, lambda c: publish_file(c, file, stream, batch))
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(f"accepted {result['accepted']}, duplicates {result['duplicates']}, rejected {len(result['rejected'])}")
    for rejection in result["rejected"]:
        typer.echo(f"  record {rejection['index']}: {'; '.join(rejection['errors'])}")
    if result["rejected"] and not result["accepted"] and not result["duplicates"]:
        raise typer.Exit(1)


@app.command()
def catalog(
    stream: str = typer.Argument("activity", help="activity, audit or notification"),
    munchkin: Optional[str] = typer.Option(None, "--munchkin", help="a tenant: show (or load into) its own types"),
    load: Optional[Path] = typer.Option(None, exists=True, help="load a Get Activity Types response (JSON) for --munchkin"),
    custom: bool = typer.Option(False, help="with --load: register custom activity types (ids >= 100000)"),
    server: str = ServerOpt, key: Optional[str] = KeyOpt, as_json: bool = JsonOpt,
) -> None:
    """Show the catalog of a stream, or load a tenant's activity types."""
    if load:
        if not munchkin:
            typer.echo("error: --load needs --munchkin", err=True)
            raise typer.Exit(2)
        path = f"/v1/catalog/activity/{munchkin}" + ("/custom" if custom else "")
        document = json.loads(load.read_text())
        _print(_call(server, key, lambda c: c.request("POST" if custom else "PUT", path, json=document)), as_json)
        return
    query = f"?munchkinId={munchkin}" if munchkin else ""
    found = _call(server, key, lambda c: c.request("GET", f"/v1/catalog/{stream}{query}"))
    columns = {"activity": ["id", "name", "type"], "audit": ["component", "actions", "type"],
               "notification": ["kind", "name", "type"]}.get(stream)
    _print(found["types"], as_json, columns, title=f"{stream} catalog")



@app.command()
def receive(
    port: int = typer.Option(3000, help="port to listen on"),
    host: str = typer.Option("127.0.0.1"),
    out: Optional[Path] = typer.Option(None, help="append each new event to this NDJSON file"),
    token: Optional[str] = typer.Option(None, envvar="LEADSTREAM_RECEIVER_TOKEN", help="require Authorization: Bearer TOKEN"),
    hmac_secret: Optional[str] = typer.Option(None, envvar="LEADSTREAM_RECEIVER_HMAC_SECRET", help="verify Standard Webhooks signatures (whsec_…)"),
    public_key: list[Path] = typer.Option([], help="PEM public key(s): verify x-adobe-digital-signature-1/-2"),
    fail_for: float = typer.Option(0.0, help="answer --status to every delivery for this many seconds"),
    status: int = typer.Option(503, help="the status --fail-for answers"),
    delay: float = typer.Option(0.0, help="seconds to wait before answering each delivery"),
    challenge_format: str = typer.Option("text", help="answer ?challenge= as text or json"),
    max_body: int = typer.Option(10 * 1024 * 1024, help="answer 413 above this many bytes (Express's default is 100000)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log one line per request"),
) -> None:
    """A ready consumer: answers challenges, checks token or signatures, drops duplicates, writes NDJSON."""
    from leadstream.receiver import ReceiverConfig, run_receiver

    config = ReceiverConfig(out=out, token=token, hmac_secret=hmac_secret,
                            public_keys=tuple(p.read_bytes() for p in public_key), fail_for=fail_for,
                            status=status, delay=delay, challenge_format=challenge_format, max_body=max_body)
    if verbose:
        import logging

        logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(message)s")
    typer.echo(f"receiving on http://{host}:{port}" + (f", writing {out}" if out else ""))
    try:
        asyncio.run(run_receiver(config, host, port))
    except KeyboardInterrupt:
        pass




@app.command()
def simulate(
    rate: float = typer.Option(200.0, help="records per second"),
    duration: float = typer.Option(30.0, help="seconds"),
    seed: int = typer.Option(0, help="the same seed gives the same records"),
    batch: int = typer.Option(500, help="records per request"),
    server: str = ServerOpt, key: Optional[str] = KeyOpt, as_json: bool = JsonOpt,
) -> None:
    """Publish realistic traffic of a simulated platform (several tenants, every stream)."""
    from leadstream.client import default_key
    from leadstream.sim.publish import PublishError, simulate as run

    stop = asyncio.Event()

    async def go() -> Any:
        task = asyncio.create_task(run(server, key or default_key() or "", rate=rate, duration=duration, seed=seed,
                                       batch=batch, stop=stop))
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
        typer.echo(json.dumps(summary, indent=2))
        return
    typer.echo(f"published {summary['published']} records in {summary['elapsed']} s: accepted {summary['accepted']}, "
               f"duplicates {summary['duplicates']}, rejected {summary['rejected']}")
    for error in summary["errors"]:
        typer.echo(f"  {error}")


@app.command()
def demo(
    duration: float = typer.Option(60.0, help="seconds of simulated traffic"),
    rate: float = typer.Option(200.0, help="records per second"),
    seed: int = typer.Option(0),
    keep: bool = typer.Option(False, help="keep the temporary store and the receivers' files"),
) -> None:
    """The whole system on this machine: server, simulated platform, receivers, a live view, a closing check."""
    from leadstream.demo import run_demo

    raise typer.Exit(asyncio.run(run_demo(duration=duration, rate=rate, seed=seed, keep=keep)))



@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="a short run (under a minute)"),
    json_path: Optional[Path] = typer.Option(None, "--json", help="write the figures to this JSON file"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="draw throughput and latency over time (PNG; needs matplotlib)"),
    scenario: list[str] = typer.Option([], "--scenario", help="run only these scenarios (repeatable)"),
) -> None:
    """Measure throughput, latency, idle cost, backlog drain and memory on this machine (SPEC §9)."""
    from leadstream.bench import run_bench

    raise typer.Exit(run_bench(quick, json_path, plot, scenario or None))


keys = typer.Typer(no_args_is_help=True, help="Signing keys and API keys.")
app.add_typer(keys, name="keys")
register_key_commands(keys)


@keys.command("rotate")
def keys_rotate(data_dir: Path = typer.Option(Path("leadstream-data"), envvar="LEADSTREAM_DATA_DIR")) -> None:
    """Promote signing key 2 to key 1 and create a new key 2 (a running server picks it up)."""
    from leadstream.delivery.signing import KeyRing

    ring = KeyRing(data_dir / "keys")
    ring.rotate()
    typer.echo("rotated; now serving " + ", ".join(ring.public_paths))


db = typer.Typer(no_args_is_help=True, help="The PostgreSQL database of a cluster.")
app.add_typer(db, name="db")


@db.command("upgrade")
def db_upgrade(
    database_url: str = typer.Option(..., "--database-url", envvar="LEADSTREAM_DATABASE_URL", help="postgresql://…"),
) -> None:
    """Create or migrate the schema (idempotent; nodes also do it on start)."""
    from leadstream.errors import Unavailable
    from leadstream.store.postgres import upgrade

    try:
        version = asyncio.run(upgrade(database_url))
    except Unavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"database schema at version {version}")


if __name__ == "__main__":
    app()
