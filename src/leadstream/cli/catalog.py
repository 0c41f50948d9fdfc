"""`leadstream catalog`: the event types of a stream, and loading a tenant's activity types."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from leadstream.cli.client import JSON, KEY, SERVER, request, show

COLUMNS = {
    "activity": ["id", "name", "type"],
    "audit": ["component", "actions", "type"],
    "notification": ["kind", "name", "type"],
}


def catalog(
    stream: str = typer.Argument("activity", metavar="STREAM", help="activity, audit or notification"),
    munchkin: str | None = typer.Option(
        None, "--munchkin", metavar="MUNCHKIN-ID", help="a tenant: show (or load into) its own types"
    ),
    load: Path | None = typer.Option(
        None, exists=True, metavar="FILE", help="load a Get Activity Types response (JSON) for --munchkin"
    ),
    custom: bool = typer.Option(False, help="with --load: register custom activity types (ids >= 100000)"),
    server: str = SERVER,
    key: str | None = KEY,
    as_json: bool = JSON,
) -> None:
    """Show the catalog of a stream, or load a tenant's activity types."""
    if load:
        if not munchkin:
            typer.echo("error: --load needs --munchkin", err=True)
            raise typer.Exit(2)
        path = f"/v1/catalog/activity/{munchkin}" + ("/custom" if custom else "")
        show(request(server, key, "POST" if custom else "PUT", path, json.loads(load.read_text())), as_json)
        return
    query = f"?munchkinId={munchkin}" if munchkin else ""
    found = request(server, key, "GET", f"/v1/catalog/{stream}{query}")
    show(found["types"], as_json, COLUMNS.get(stream), title=f"{stream} catalog")
