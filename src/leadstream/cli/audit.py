"""`leadstream audit`: the audit trail of admin actions (``GET /v1/audit``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import typer

from leadstream.cli.client import JSON, KEY, SERVER, call, show
from leadstream.client import Client

COLUMNS = ["time", "actor", "action", "target", "changes"]


def audit(
    limit: int = typer.Option(50, min=1, max=1000, metavar="N", help="how many entries, newest first"),
    munchkin: str | None = typer.Option(None, "--munchkin", metavar="MUNCHKIN-ID", help="only about this tenant"),
    action: str | None = typer.Option(
        None, metavar="ACTION", help="an action (subscription.pause) or a family (subscription)"
    ),
    server: str = SERVER,
    key: str | None = KEY,
    as_json: bool = JSON,
) -> None:
    """The audit trail: who created, changed, paused, replayed or deleted what, and when."""
    query = {"limit": limit, "munchkinId": munchkin, "action": action}

    async def entries(client: Client) -> list[Any]:
        found: list[Any] = []
        path: str | None = "/v1/audit?" + urlencode({k: v for k, v in query.items() if v is not None})
        while path and len(found) < limit:
            page = await client.request("GET", path)
            found += page["entries"]
            path = page.get("next")
        return found[:limit]

    show(call(server, key, entries), as_json, COLUMNS)
