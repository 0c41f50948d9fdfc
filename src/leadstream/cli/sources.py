"""`leadstream sources …`: the admin API of sources (SPEC §10), as commands."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from leadstream.cli.client import JSON, KEY, SERVER, call, request, show
from leadstream.cli.group import CommandGroup
from leadstream.client import Client

sources = CommandGroup(help="Create and manage sources: a Marketo instance read through its REST API.")
SUMMARY = ["id", "name", "munchkinId", "state", "published", "callsToday", "callBudget", "lagSeconds", "lastError"]
SOURCE_ID = typer.Argument(..., metavar="ID", help="the source id")


@sources.command("create")
def create(
    name: str = typer.Option(..., metavar="NAME", help="a name for people"),
    munchkin: str = typer.Option(..., "--munchkin", metavar="MUNCHKIN-ID", help="the instance's Munchkin ID"),
    rest_url: str = typer.Option(
        ..., metavar="URL", help="the REST API endpoint without /rest (https://123-ABC-456.mktorest.com)"
    ),
    client_id: str = typer.Option(..., metavar="ID", help="the custom service's client id"),
    client_secret: str = typer.Option(
        ..., envvar="LEADSTREAM_SOURCE_CLIENT_SECRET", metavar="SECRET", help="the custom service's client secret"
    ),
    identity_url: str | None = typer.Option(
        None, metavar="URL", help="the identity endpoint (default: restUrl/identity)"
    ),
    activity_type: list[str] = typer.Option(
        ["*"], "--activity-type", metavar="TYPE", help="activity type id or name (default: every type); repeatable"
    ),
    deleted_leads: bool = typer.Option(True, help="also read Get Deleted Leads"),
    start_at: str = typer.Option("now", metavar="TIME", help="now, or an RFC 3339 time within retention"),
    quota_share: float | None = typer.Option(None, metavar="SHARE", help="the share of the daily quota to spend"),
    daily_quota: int | None = typer.Option(None, metavar="CALLS", help="the instance's daily API quota"),
    settings_file: Path | None = typer.Option(
        None, "--from-file", metavar="FILE", help="a JSON object with any further source fields"
    ),
    server: str = SERVER,
    key: str | None = KEY,
    as_json: bool = JSON,
) -> None:
    """Create a source on a Marketo instance."""
    body: dict[str, Any] = json.loads(settings_file.read_text()) if settings_file else {}
    body.update(
        type="marketo",
        name=name,
        munchkinId=munchkin,
        restUrl=rest_url,
        clientId=client_id,
        clientSecret=client_secret,
        activityTypes=[int(t) if t.isdigit() else t for t in activity_type],
        deletedLeads=deleted_leads,
        startAt=start_at,
    )
    if identity_url:
        body["identityUrl"] = identity_url
    if quota_share is not None:
        body["quotaShare"] = quota_share
    if daily_quota is not None:
        body["dailyQuota"] = daily_quota
    show(request(server, key, "POST", "/v1/sources", body), as_json, title="created")


@sources.command("list")
def list_sources(
    munchkin: str | None = typer.Option(None, "--munchkin", metavar="MUNCHKIN-ID", help="only this tenant's"),
    server: str = SERVER,
    key: str | None = KEY,
    as_json: bool = JSON,
) -> None:
    """List sources (of one tenant with --munchkin)."""
    query = f"?munchkinId={munchkin}" if munchkin else ""

    async def every_page(client: Client) -> list[Any]:
        items, path = [], f"/v1/sources{query}"
        while path:
            page = await client.request("GET", path)
            items += page["sources"]
            path = page.get("next")
        return items

    show(call(server, key, every_page), as_json, SUMMARY)


def _one(method: str, suffix: str, help_text: str) -> Callable[..., None]:
    def command(source_id: str = SOURCE_ID, server: str = SERVER, key: str | None = KEY, as_json: bool = JSON) -> None:
        path = f"/v1/sources/{source_id}{suffix}"
        show(request(server, key, method, path, {} if method == "POST" else None), as_json)

    command.__doc__ = help_text
    return command


sources.command("show")(_one("GET", "", "Show a source with its status: state, calls today, lag, groups."))
sources.command("pause")(_one("POST", "/pause", "Pause a source: no calls to the instance until resumed."))
sources.command("resume")(_one("POST", "/resume", "Resume a source from its checkpoints."))
sources.command("delete")(_one("DELETE", "", "Delete a source (what it published stays in the log)."))
