"""`leadstream alerts …`: the operator's alert endpoints (``/v1/alerts``), as commands."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import typer

from leadstream.cli.client import JSON, KEY, SERVER, request, show
from leadstream.cli.group import CommandGroup

alerts = CommandGroup(help="Operator alerts: endpoints that get a signed CloudEvent when something needs attention.")
COLUMNS = ["id", "name", "endpoint", "events", "createdAt"]
RECENT_COLUMNS = ["time", "type", "subject", "deliveries"]


@alerts.command("create")
def create(
    endpoint: str = typer.Option(..., "--endpoint", metavar="URL", help="where the alerts are POSTed"),
    event: list[str] = typer.Option(
        [],
        "--event",
        metavar="TYPE",
        help="an alert type (com.leadstream.subscription.paused, …); repeatable; default all",
    ),
    hmac_secret: str | None = typer.Option(
        None,
        "--hmac-secret",
        envvar="LEADSTREAM_HMAC_SECRET",
        metavar="SECRET",
        help="sign with this whsec_… secret (default: one is generated and shown once)",
    ),
    name: str = typer.Option("", "--name", metavar="NAME", help="a name for people"),
    server: str = SERVER,
    key: str | None = KEY,
    as_json: bool = JSON,
) -> None:
    """Register an alert endpoint (operator key)."""
    body: dict[str, Any] = {"endpoint": endpoint, "name": name, "events": event or ["*"]}
    body["signing"] = {"hmacSecret": hmac_secret} if hmac_secret else {"hmac": True}
    created = request(server, key, "POST", "/v1/alerts", body)
    show(created, as_json, title="alert endpoint")
    if not hmac_secret and not as_json:
        typer.echo("The HMAC secret above is shown this once: keep it to check the signatures.")


@alerts.command("list")
def list_(server: str = SERVER, key: str | None = KEY, as_json: bool = JSON) -> None:
    """The alert endpoints (their secrets are not shown)."""
    show(request(server, key, "GET", "/v1/alerts")["alerts"], as_json, COLUMNS, full_columns=("id",))


@alerts.command("delete")
def delete(
    alert_id: str = typer.Argument(..., metavar="ID", help="the alert endpoint's id"),
    server: str = SERVER,
    key: str | None = KEY,
    as_json: bool = JSON,
) -> None:
    """Delete an alert endpoint; what is still pending for it is dropped."""
    show(request(server, key, "DELETE", f"/v1/alerts/{quote(alert_id, safe='')}"), as_json, title="deleted")


@alerts.command("recent")
def recent(
    limit: int = typer.Option(20, min=1, max=500, metavar="N", help="how many alerts, newest first"),
    server: str = SERVER,
    key: str | None = KEY,
    as_json: bool = JSON,
) -> None:
    """The recent alerts, and how their sending went to each endpoint."""
    found = request(server, key, "GET", f"/v1/alerts/recent?limit={limit}")["alerts"]
    if not as_json:
        for alert in found:
            alert["deliveries"] = (
                ", ".join(f"{d['alert']}: {d['state']} ({d['attempts']})" for d in alert["deliveries"]) or "no endpoint"
            )
    show(found, as_json, RECENT_COLUMNS)
