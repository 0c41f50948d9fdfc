"""`leadstream catalog`: the event types of a stream, and loading a tenant's activity types."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import typer

from leadstream.cli.client import JSON, KEY, SERVER, fail, read_json_file, request, show
from leadstream.cli.group import Stream

COLUMNS = {
    "activity": ["id", "name", "type"],
    "audit": ["component", "actions", "type"],
    "notification": ["kind", "name", "type"],
}


def catalog(
    stream: Stream = typer.Argument(Stream.activity, help="the stream whose event types to show"),
    munchkin: str | None = typer.Option(
        None, "--munchkin", metavar="MUNCHKIN-ID", help="a tenant: show (or load into) its own types"
    ),
    load: Path | None = typer.Option(
        None,
        exists=True,
        dir_okay=False,
        metavar="FILE",
        help="load a Get Activity Types response (JSON) for --munchkin",
    ),
    custom: bool = typer.Option(False, help="with --load: register custom activity types (ids >= 100000)"),
    server: str = SERVER,
    key: str | None = KEY,
    as_json: bool = JSON,
) -> None:
    """Show the catalog of a stream, or load a tenant's activity types."""
    if load:
        if not munchkin:
            fail("--load needs --munchkin", 2)
        path = f"/v1/catalog/activity/{munchkin}" + ("/custom" if custom else "")
        document = read_json_file(load, "--load")
        show(request(server, key, "POST" if custom else "PUT", path, document), as_json)
        return
    query = f"?munchkinId={quote(munchkin)}" if munchkin else ""
    found = request(server, key, "GET", f"/v1/catalog/{stream.value}{query}")
    show(found["types"], as_json, COLUMNS[stream.value], title=f"{stream.value} catalog")
