"""What every command that talks to a running server shares: the ``--server``, ``--key`` and
``--json`` options, one call that turns a failure into one line on stderr, and the printing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from leadstream.client import DEFAULT_URL, LOCAL_KEY_FILE, ApiError, Client, operator_key

SERVER = typer.Option(DEFAULT_URL, "--server", envvar="LEADSTREAM_URL", metavar="URL", help="leadstream's base URL")
KEY = typer.Option(
    None,
    "--key",
    envvar="LEADSTREAM_ADMIN_KEY",
    metavar="KEY",
    help=f"API key (default: the operator key in ./{LOCAL_KEY_FILE})",
)
JSON = typer.Option(False, "--json", help="print JSON for scripts instead of a table")


def call(server: str, key: str | None, work: Callable[[Client], Awaitable[Any]]) -> Any:
    """Run one API conversation; a failure is one clear line on stderr and exit code 1."""

    async def go() -> Any:
        async with Client(server, operator_key(key)) as client:
            return await work(client)

    try:
        return asyncio.run(go())
    except ApiError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def request(server: str, key: str | None, method: str, path: str, body: Any = None) -> Any:
    """One request (``call`` with a single exchange): the decoded answer."""
    return call(server, key, lambda client: client.request(method, path, json=body))


def echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2))


def show(value: Any, as_json: bool, columns: list[str] | None = None, title: str | None = None) -> None:
    """``value`` as JSON, or as a table: one row per item under ``columns``, or one record's fields."""
    if as_json:
        echo_json(value)
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
