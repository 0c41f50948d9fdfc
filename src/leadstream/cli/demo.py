"""`leadstream demo`: the whole system on one machine, watched live, checked at the end.

A server on a temporary embedded store (a subprocess, as a user runs it), a local OAuth2 token
endpoint, one ready receiver per subscription, subscriptions in each format and auth mode, and
the simulated platform publishing. One receiver fails for a while, so its subscription goes
retrying → paused → active and catches up. Beside it a simulated Marketo instance (SPEC §10.2) of
another tenant is read by a source, which feeds two more subscriptions. At the end every
subscription must hold exactly the events it matches — published, or read by the source — in
order, none lost.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import orjson
import typer
from aiohttp import web
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from leadstream.cli.simulate import RATE, SEED
from leadstream.client import ApiError, Client
from leadstream.receiver import ReceiverConfig, RunningReceiver, start_receiver
from leadstream.sim.marketo import Limits, MarketoInstance
from leadstream.sim.platform import DEFAULT_TENANTS
from leadstream.sim.publish import SimResult, simulate
from leadstream.testing import ServerProcess, free_port, wait_until

TENANT = DEFAULT_TENANTS[0]
OAUTH_CLIENT = ("demo-client", secrets.token_urlsafe(16))
OAUTH_TOKEN = secrets.token_urlsafe(24)
BEARER_TOKEN = secrets.token_urlsafe(24)
EMAIL_TYPES = [6, 7, 8, 9, 10, 11, 27]
SOURCE_TENANT = "246-SRC-135"  # the simulated Marketo instance the source reads
SOURCE_TYPES = [*EMAIL_TYPES, 1, 2, 12]  # one group of ≤ 10 type ids: its order is the instance's order
SOURCE_RATE = 20.0  # activities per second on the simulated instance


@dataclass
class DemoSubscription:
    """One subscription of the demo, its receiver, and what it must end up holding."""

    label: str
    body: dict[str, Any]
    matches: Callable[[str, dict[str, Any]], bool]
    receiver_config: dict[str, Any] = field(default_factory=dict)
    id: str = ""
    receiver: RunningReceiver | None = None
    out: Path | None = None
    expected: list[str] = field(default_factory=list)  # identities, in publish order
    expected_custom: list[str] = field(default_factory=list)
    states_seen: list[str] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)


def identity(stream: str, record: dict[str, Any]) -> tuple[bool, str]:
    """(is a custom object, the id a receiver will see) of a published record."""
    if record.get("kind") == "customObject":
        return True, "/".join(str(record[k]) for k in ("apiName", "marketoGUID", "action", "updatedAt"))
    return False, record["marketoGUID"] if stream == "activity" else str(record["id"])


def received_identity(line: dict[str, Any]) -> tuple[bool, str]:
    """The same identity, read back from a line the receiver wrote (any of the three formats)."""
    if "event_id" in line:  # adobe_io
        return False, str(line["event"]["id"])
    if "specversion" in line:  # cloudevents
        return ".customobject." in line["type"], str(line["id"])
    if "apiName" in line:  # legacy custom object
        return True, "/".join(str(line[k]) for k in ("apiName", "marketoGUID", "action", "updatedAt"))
    return False, line["marketoGUID"]


def demo_subscriptions(fail_for: float) -> list[DemoSubscription]:
    # Intervals shrunk so that a whole retry → pause → probe → recover cycle fits in the run, each
    # state lasting long enough (≥ 1 s) for the live view, which polls every 0.5 s, to show it.
    fast = {
        "munchkinId": TENANT,
        "batchSize": 200,
        "pushIntervalMs": 250,
        "retryIntervalMs": 1000,
        "retryAttempts": 2,
        "probeIntervalMs": 1500,
        "timeoutMs": 5000,
    }

    def tenant_activity(stream: str, record: dict[str, Any]) -> bool:
        return stream == "activity" and record["munchkinId"] == TENANT

    def from_source(stream: str, record: dict[str, Any]) -> bool:
        return False  # filled from the instance's own record at the end (``expect_source``)

    return [
        DemoSubscription(
            "legacy + OAuth2",
            {
                **fast,
                "name": "crm-sync",
                "stream": "activity",
                "format": "legacy",
                "customObjects": True,
                "auth": {
                    "type": "oauth2",
                    "tokenUrl": "{token_url}",
                    "clientId": OAUTH_CLIENT[0],
                    "clientSecret": OAUTH_CLIENT[1],
                },
            },
            tenant_activity,
            {"token": OAUTH_TOKEN},
        ),
        DemoSubscription(
            "cloudevents + token, fails a while",
            {
                **fast,
                "name": "email-analytics",
                "stream": "activity",
                "format": "cloudevents",
                "eventTypes": EMAIL_TYPES,
                "auth": {"type": "token", "token": BEARER_TOKEN},
            },
            lambda stream, r: tenant_activity(stream, r) and r.get("activityTypeId") in EMAIL_TYPES,
            {"token": BEARER_TOKEN, "fail_for": fail_for, "status": 503},
        ),
        DemoSubscription(
            "adobe_io audit",
            {**fast, "name": "security-audit", "stream": "audit", "format": "adobe_io"},
            lambda stream, r: stream == "audit" and r["munchkinId"] == TENANT,
        ),
        DemoSubscription(
            "adobe_io notifications",
            {**fast, "name": "ops-alerts", "stream": "notification", "format": "adobe_io"},
            lambda stream, r: stream == "notification" and r["munchkinId"] == TENANT,
        ),
        DemoSubscription(
            "legacy, from a Marketo source",
            {**fast, "munchkinId": SOURCE_TENANT, "name": "source-all", "stream": "activity", "format": "legacy"},
            from_source,
        ),
        DemoSubscription(
            "cloudevents email, from the source",
            {
                **fast,
                "munchkinId": SOURCE_TENANT,
                "name": "source-email",
                "stream": "activity",
                "format": "cloudevents",
                "eventTypes": EMAIL_TYPES,
            },
            from_source,
        ),
    ]


async def start_marketo() -> tuple[MarketoInstance, dict[str, Any]]:
    """The simulated instance, and the source that reads it (from the instance's first second on)."""
    instance = await MarketoInstance(
        munchkin_id=SOURCE_TENANT, rate=SOURCE_RATE, activity_type_ids=SOURCE_TYPES,
        limits=Limits(daily_quota=500_000),
    ).start()  # fmt: skip
    body = {
        "type": "marketo",
        "name": "demo-instance",
        "munchkinId": SOURCE_TENANT,
        "restUrl": instance.url,
        "clientId": instance.client_id,
        "clientSecret": instance.client_secret,
        "activityTypes": SOURCE_TYPES,
        "deletedLeads": False,
        "startAt": datetime.fromtimestamp(int(instance.schedule.start), UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "pollIntervalMs": 1000,
        # a larger quota than the default 50,000 so that the short demo polls every second or so
        "dailyQuota": 500_000,
    }
    return instance, body


def expect_source(instance: MarketoInstance, subs: list[DemoSubscription]) -> None:
    """Stop the instance's traffic; what the source subscriptions must hold is then known, in its order."""
    instance.advance()
    instance.schedule.rate = 0
    truth = instance.truth()
    for sub in subs:
        if sub.body["munchkinId"] != SOURCE_TENANT:
            continue
        wanted = sub.body.get("eventTypes")
        sub.expected = [r["marketoGUID"] for r in truth if wanted is None or r["activityTypeId"] in wanted]


# -- the parts ---------------------------------------------------------------------------------------


async def start_token_endpoint() -> tuple[web.AppRunner, str]:
    """A tiny OAuth2 token endpoint (client credentials) for the legacy subscription."""

    async def token(request: web.Request) -> web.Response:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        try:  # RFC 6749 §2.3.1: id and secret are form-encoded, then Basic
            pair = base64.b64decode(encoded).decode()
        except ValueError:
            pair = ""
        client = tuple(unquote_plus(part) for part in pair.split(":", 1))
        form = await request.post()
        if scheme != "Basic" or client != OAUTH_CLIENT or form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "invalid_client"}, status=401)
        return web.json_response({"access_token": OAUTH_TOKEN, "token_type": "Bearer", "expires_in": 90})

    app = web.Application()
    app.router.add_post("/oauth/token", token)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/oauth/token"


# -- the live view and the closing check ----------------------------------------------------------------


WIDTH = 100  # the live view fits a 100-column terminal (rich narrows it further on a smaller one)


def where(server: ServerProcess | None) -> Text:
    """How to look inside while the demo runs: the server's URL, the API docs, the console and the key."""
    if server is None:
        return Text("")
    return Text.assemble(
        ("server ", "dim"), server.url, ("   (API docs at /docs, the console at /ui/)", "dim"),
        ("\noperator key ", "dim"), server.key,
    )  # fmt: skip


def view(
    subs: list[DemoSubscription],
    sim: SimResult | None,
    phase: str,
    source: dict[str, Any] | None = None,
    server: ServerProcess | None = None,
) -> Group:
    table = Table(title="subscriptions", width=WIDTH)
    for column in ("subscription", "state", "delivered", "pending", "lag s"):
        table.add_column(column, no_wrap=True, overflow="ellipsis")
    table.add_column("last error", no_wrap=True, overflow="ellipsis", ratio=1)
    colors = {"active": "green", "retrying": "yellow", "paused": "red", "deprovisioned": "dim"}
    for sub in subs:
        state = sub.status.get("state", "…")
        reason = f" ({sub.status['pausedReason']})" if sub.status.get("pausedReason") else ""
        table.add_row(
            sub.label,
            Text(state + reason, style=colors.get(state, "")),
            str(sub.status.get("delivered", 0)),
            str(sub.status.get("pending", 0)),
            f"{sub.status.get('lagSeconds') or 0:.1f}",
            sub.status.get("lastError") or "",
        )
    published = sim.published if sim else 0
    parts: list[Any] = [where(server), Text(f"{phase} — published {published} events", style="bold"), table]
    if source:
        sources = Table(title="source (simulated Marketo instance)", width=WIDTH)
        for column in ("source", "state", "read", "calls today", "budget", "lag s"):
            sources.add_column(column, no_wrap=True, overflow="ellipsis")
        sources.add_column("last error", no_wrap=True, overflow="ellipsis", ratio=1)
        sources.add_row(
            source.get("name", ""), source.get("state", "…"), str(source.get("published", 0)),
            str(source.get("callsToday", 0)), str(source.get("callBudget", "")),
            f"{source.get('lagSeconds') or 0:.1f}", source.get("lastError") or "",
        )  # fmt: skip
        parts.append(sources)
    return Group(*parts)


async def poll_status(client: Client, subs: list[DemoSubscription]) -> None:
    for sub in subs:
        try:
            sub.status = await client.request("GET", f"/v1/subscriptions/{sub.id}")
        except ApiError:
            continue
        state = sub.status.get("state")
        if state and (not sub.states_seen or sub.states_seen[-1] != state):
            sub.states_seen.append(state)


def check(sub: DemoSubscription) -> list[str]:
    """Problems with what this subscription's receiver holds (an empty list: all is well)."""
    assert sub.out is not None
    got: list[str] = []
    got_custom: list[str] = []
    if sub.out.exists():
        for raw in sub.out.read_bytes().splitlines():
            custom, ident = received_identity(orjson.loads(raw))
            (got_custom if custom else got).append(ident)
    problems = []
    for what, expected, received in (
        ("events", sub.expected, got),
        ("custom objects", sub.expected_custom, got_custom),
    ):
        if received == expected:
            continue
        missing = set(expected) - set(received)
        extra = set(received) - set(expected)
        if missing:
            problems.append(f"{len(missing)} {what} lost")
        if extra:
            problems.append(f"{len(extra)} unexpected {what}")
        if not missing and not extra:
            problems.append(f"{what} out of order")
    return problems


# -- the run ---------------------------------------------------------------------------------------------


async def run_demo(
    duration: float = 60.0, rate: float = 200.0, seed: int = 0, keep: bool = False, console: Console | None = None
) -> int:
    console = console or Console()
    work = Path(tempfile.mkdtemp(prefix="leadstream-demo-"))
    server = ServerProcess(work / "store", "--retention", "1h", log=work / "server.log")
    subs = demo_subscriptions(fail_for=max(3.0, duration * 0.25))
    token_runner, token_url = await start_token_endpoint()
    sim: SimResult | None = None
    stop = asyncio.Event()
    marketo: MarketoInstance | None = None
    source: dict[str, Any] = {}
    try:
        await server.start()
        async with Client(server.url, server.key) as client:
            marketo, source_body = await start_marketo()
            for sub in subs:
                sub.out = work / f"{sub.body['name']}.ndjson"
                sub.receiver = await start_receiver(ReceiverConfig(out=sub.out, **sub.receiver_config))
                body = orjson.loads(orjson.dumps(sub.body).replace(b"{token_url}", token_url.encode()))
                created = await client.request("POST", "/v1/subscriptions", json={**body, "endpoint": sub.receiver.url})
                sub.id = created["id"]
            # The source only once its subscriptions exist: they start at "now", and what the source
            # appended before one was created is not for it (a loaded machine lost the first few so).
            source = await client.request("POST", "/v1/sources", json=source_body)

            def published(stream: str, records: list[dict[str, Any]]) -> None:
                for record in records:
                    for sub in subs:
                        if sub.matches(stream, record):
                            custom, ident = identity(stream, record)
                            (sub.expected_custom if custom else sub.expected).append(ident)

            def progress(result: SimResult) -> None:
                nonlocal sim
                sim = result

            publisher = asyncio.create_task(
                simulate(
                    server.url,
                    server.key,
                    rate=rate,
                    duration=duration,
                    seed=seed,
                    on_progress=progress,
                    on_published=published,
                    stop=stop,
                )
            )
            interrupted = False

            async def poll_source() -> dict[str, Any]:
                with contextlib.suppress(ApiError):
                    source.update(await client.request("GET", f"/v1/sources/{source['id']}"))
                return source

            with Live(view(subs, sim, "publishing", server=server), console=console, refresh_per_second=4) as live:
                try:
                    while not publisher.done():
                        await poll_status(client, subs)
                        live.update(view(subs, sim, "publishing", await poll_source(), server))
                        await asyncio.wait({publisher}, timeout=0.5)
                except asyncio.CancelledError:  # Ctrl-C: stop publishing, then drain and check as usual
                    interrupted = True
                    stop.set()
                sim = await publisher
                expect_source(marketo, subs)

                async def drained() -> bool:
                    await poll_status(client, subs)
                    live.update(view(subs, sim, "draining", await poll_source(), server))
                    return all(
                        s.status.get("pending") == 0 and s.status.get("state") == "active" and not check(s)
                        for s in subs
                    )

                with contextlib.suppress(TimeoutError):  # not drained in a minute: the check says what is missing
                    await wait_until(drained, 60, interval=0.5, what="every subscription to drain")
                live.update(view(subs, sim, "done", await poll_source(), server))
        return report(console, subs, sim, interrupted)
    finally:
        stop.set()
        server.stop()
        if marketo is not None:
            await marketo.stop()
        for sub in subs:
            if sub.receiver:
                await sub.receiver.close()
        await token_runner.cleanup()
        if keep:
            console.print(f"kept the demo's files in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def selects(body: dict[str, Any]) -> str:
    """What a subscription takes, said for the closing counts: why it holds fewer than were published."""
    what = f"{body['stream']} of tenant {body['munchkinId']}"
    types = body.get("eventTypes", ["*"])
    if types != ["*"]:
        what += f", activity types {', '.join(str(t) for t in types)}"
    if body.get("customObjects"):
        what += ", with custom objects"
    return what


def report(console: Console, subs: list[DemoSubscription], sim: SimResult | None, interrupted: bool) -> int:
    failures = 0
    console.print()
    if interrupted:
        console.print("[yellow]interrupted: stopped publishing, drained, checking[/yellow]")
    if sim is not None:
        console.print(
            f"published {sim.published:,} records over every stream and tenant; each subscription must hold "
            "exactly those its settings select:"
        )
    for sub in subs:
        problems = check(sub)
        failures += bool(problems)
        states = " → ".join(sub.states_seen)
        total = len(sub.expected) + len(sub.expected_custom)
        mark = "[green]✔[/green]" if not problems else "[red]✘[/red]"
        console.print(
            f"{mark} {sub.label}: {total} events expected ({selects(sub.body)}), states seen: {states}"
            + (f" — {'; '.join(problems)}" if problems else "")
        )
    if sim is not None and sim.rejected:
        failures += 1
        console.print(f"[red]✘ the server rejected {sim.rejected} simulated records[/red]")
    if failures:
        console.print(
            "[bold red]the check failed: some events were lost, duplicated into the wrong place "
            "or out of order[/bold red]"
        )
        return 1
    console.print(
        "[bold green]every published event reached each matching subscription, in order, none lost[/bold green]"
    )
    return 0


def demo(
    duration: float = typer.Option(60.0, metavar="SECONDS", help="seconds of simulated traffic"),
    rate: float = RATE,
    seed: int = SEED,
    keep: bool = typer.Option(False, help="keep the temporary store and the receivers' files"),
) -> None:
    """The whole system on this machine: server, simulated platform, receivers, a live view, a closing check."""
    raise typer.Exit(asyncio.run(run_demo(duration=duration, rate=rate, seed=seed, keep=keep)))
