"""What every command that talks to a running server shares: the ``--server``, ``--key`` and
``--json`` options, one call that turns a failure into one line on stderr, and the printing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

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


def fail(message: str, code: int = 1) -> NoReturn:
    """End the command with one line on stderr (``error: …``) and a non-zero exit."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def call(server: str, key: str | None, work: Callable[[Client], Awaitable[Any]]) -> Any:
    """Run one API conversation; a failure is one clear line on stderr and exit code 1."""

    async def go() -> Any:
        async with Client(check_server(server), operator_key(key)) as client:
            return await work(client)

    try:
        return asyncio.run(go())
    except ApiError as exc:
        fail(str(exc))


def read_json_file(path: Path, option: str) -> Any:
    """The JSON document in ``path``; a file that is not JSON stops the command, naming the place."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        fail(f"{option} {path}: not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}", 2)
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{option} {path}: cannot read it: {exc}", 2)


def check_server(server: str) -> str:
    """``--server`` as given, once it is an http(s) URL with a host; else the command stops."""
    parts = urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        fail(f"--server: {server!r} is not a URL; give the scheme and host, e.g. http://127.0.0.1:8470", 2)
    try:
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        fail(f"--server: {server!r} has a port that is not a number", 2)
    return server


def request(server: str, key: str | None, method: str, path: str, body: Any = None) -> Any:
    """One request (``call`` with a single exchange): the decoded answer."""
    return call(server, key, lambda client: client.request(method, path, json=body))


def echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2))


def show(
    value: Any,
    as_json: bool,
    columns: list[str] | None = None,
    title: str | None = None,
    full_columns: tuple[str, ...] = (),
) -> None:
    """``value`` as JSON, or as a table: one row per item under ``columns``, or one record's fields.
    ``full_columns`` are never shortened (ids a user copies into the next command)."""
    if as_json:
        echo_json(value)
        return
    rows = value if isinstance(value, list) else [value]
    if columns is None:  # one record: a two-column table of its fields
        table = Table("field", "value", title=title, show_header=False)
        for name, field_value in rows[0].items():
            table.add_row(name, _cell(field_value))  # absent values blank, as in the lists
    else:
        table = Table(title=title)
        for column in columns:
            widest = max((len(_cell(row.get(column))) for row in rows), default=0)
            full = column in full_columns
            table.add_column(column, no_wrap=full, min_width=max(widest, len(column)) if full else None)
        for row in rows:
            table.add_row(*(_cell(row.get(c)) for c in columns))
    Console().print(table)


def _cell(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else json.dumps(value)
