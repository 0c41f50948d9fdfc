"""The `leadstream` command: thin — parse, build settings, call the library.

One module per command or group: serve, subscriptions, sources, publish, catalog, receive, simulate, demo,
bench, audit, keys, alerts, db; ``client`` holds what the commands that talk to a server share, and ``group``
how they read (help, and the defaults from ``Settings``).
"""

from __future__ import annotations

import typer

import leadstream
from leadstream.cli.alerts import alerts
from leadstream.cli.audit import audit
from leadstream.cli.bench import bench
from leadstream.cli.catalog import catalog
from leadstream.cli.db import db
from leadstream.cli.demo import demo
from leadstream.cli.group import CommandGroup
from leadstream.cli.keys import keys
from leadstream.cli.publish import publish
from leadstream.cli.receive import receive
from leadstream.cli.serve import serve
from leadstream.cli.simulate import simulate
from leadstream.cli.sources import sources
from leadstream.cli.subscriptions import subscriptions

app = CommandGroup(help="leadstream: Data Streams, self-hosted.")


def _version(shown: bool) -> None:
    if shown:
        typer.echo(f"leadstream {leadstream.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="print the version and exit"
    ),
) -> None:
    """leadstream: Data Streams, self-hosted."""


for command in (serve, publish, catalog, receive, demo, bench, audit):
    app.command()(command)
app.add_typer(subscriptions, name="subscriptions")
app.add_typer(sources, name="sources")
app.add_typer(simulate, name="simulate")
app.add_typer(keys, name="keys")
app.add_typer(alerts, name="alerts")
app.add_typer(db, name="db")
