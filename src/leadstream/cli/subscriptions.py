"""`leadstream subscriptions …`: the admin API of subscriptions, as commands."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from leadstream.cli.client import JSON, KEY, SERVER, call, request, show
from leadstream.cli.group import CommandGroup
from leadstream.client import Client

subscriptions = CommandGroup(help="Create and manage subscriptions (the admin API).")
SUMMARY = ["id", "name", "munchkinId", "stream", "format", "state", "delivered", "pending", "lagSeconds", "lastError"]
SUBSCRIPTION_ID = typer.Argument(..., metavar="ID", help="the subscription id")


@subscriptions.command("create")
def create(
    name: str = typer.Option(..., metavar="NAME", help="a name for people"),
    munchkin: str = typer.Option(
        ..., "--munchkin", metavar="MUNCHKIN-ID", help="the tenant's Munchkin ID (123-ABC-456)"
    ),
    stream: str = typer.Option(..., metavar="STREAM", help="activity, audit or notification"),
    endpoint: str = typer.Option(..., metavar="URL", help="the URL events are POSTed to"),
    event_type: list[str] = typer.Option(
        ["*"],
        "--event-type",
        metavar="TYPE",
        help="activity type id or name, audit component[:action], notification kind; repeatable",
    ),
    format: str | None = typer.Option(None, metavar="FORMAT", help="legacy, cloudevents or adobe_io"),
    token: str | None = typer.Option(None, metavar="TOKEN", help="send Authorization: Bearer TOKEN"),
    oauth_token_url: str | None = typer.Option(None, metavar="URL", help="OAuth2 client credentials: token URL"),
    client_id: str | None = typer.Option(None, metavar="ID", help="OAuth2 client credentials: client id"),
    client_secret: str | None = typer.Option(
        None, envvar="LEADSTREAM_CLIENT_SECRET", metavar="SECRET", help="OAuth2 client credentials: client secret"
    ),
    custom_objects: bool = typer.Option(False, help="also deliver custom-object changes (activity stream)"),
    settings_file: Path | None = typer.Option(
        None, "--from-file", metavar="FILE", help="JSON with any further fields of SPEC §3"
    ),
    server: str = SERVER,
    key: str | None = KEY,
    as_json: bool = JSON,
) -> None:
    """Create a subscription."""
    body: dict[str, Any] = json.loads(settings_file.read_text()) if settings_file else {}
    body.update(
        name=name,
        munchkinId=munchkin,
        stream=stream,
        endpoint=endpoint,
        customObjects=custom_objects,
        eventTypes=[int(t) if t.isdigit() else t for t in event_type],
    )
    if format:
        body["format"] = format
    if token:
        body["auth"] = {"type": "token", "token": token}
    elif oauth_token_url:
        body["auth"] = {
            "type": "oauth2",
            "tokenUrl": oauth_token_url,
            "clientId": client_id,
            "clientSecret": client_secret,
        }
    show(request(server, key, "POST", "/v1/subscriptions", body), as_json, title="created")


@subscriptions.command("list")
def list_subscriptions(
    munchkin: str | None = typer.Option(None, "--munchkin", metavar="MUNCHKIN-ID", help="only this tenant's"),
    server: str = SERVER,
    key: str | None = KEY,
    as_json: bool = JSON,
) -> None:
    """List subscriptions (of one tenant with --munchkin)."""
    query = f"?munchkinId={munchkin}" if munchkin else ""

    async def every_page(client: Client) -> list[Any]:
        items, path = [], f"/v1/subscriptions{query}"
        while path:
            page = await client.request("GET", path)
            items += page["subscriptions"]
            path = page.get("next")
        return items

    show(call(server, key, every_page), as_json, SUMMARY)


def _one(method: str, suffix: str, help_text: str) -> Callable[..., None]:
    """A command that sends ``method`` to one subscription (``suffix`` after its path) and shows the answer."""

    def command(
        subscription_id: str = SUBSCRIPTION_ID, server: str = SERVER, key: str | None = KEY, as_json: bool = JSON
    ) -> None:
        path = f"/v1/subscriptions/{subscription_id}{suffix}"
        show(request(server, key, method, path, {} if method == "POST" else None), as_json)

    command.__doc__ = help_text
    return command


subscriptions.command("show")(_one("GET", "", "Show a subscription with its live status."))
subscriptions.command("pause")(_one("POST", "/pause", "Pause delivery (no probes) until resumed."))
subscriptions.command("resume")(_one("POST", "/resume", "Resume delivery; the backlog drains in order."))
subscriptions.command("delete")(_one("DELETE", "", "Deprovision: delivery stops for good."))


@subscriptions.command("replay")
def replay(
    subscription_id: str = SUBSCRIPTION_ID,
    from_: str = typer.Option(..., "--from", metavar="TIME|POSITION", help="RFC 3339 time or a log position"),
    server: str = SERVER,
    key: str | None = KEY,
    as_json: bool = JSON,
) -> None:
    """Move the cursor back (within retention) and deliver again from there."""
    start: Any = int(from_) if from_.isdigit() else from_
    show(request(server, key, "POST", f"/v1/subscriptions/{subscription_id}/replay", {"from": start}), as_json)


@subscriptions.command("attempts")
def attempts(
    subscription_id: str = SUBSCRIPTION_ID,
    limit: int = typer.Option(20, metavar="N", help="how many attempts, newest first"),
    server: str = SERVER,
    key: str | None = KEY,
    as_json: bool = JSON,
) -> None:
    """The delivery attempt log, newest first."""
    found = request(server, key, "GET", f"/v1/subscriptions/{subscription_id}/attempts?limit={limit}")
    items = found["attempts"] if isinstance(found, dict) else found
    show(items, as_json, ["time", "batchId", "events", "status", "error", "durationMs", "retry"])
