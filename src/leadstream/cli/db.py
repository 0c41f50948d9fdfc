"""`leadstream db …`: the PostgreSQL database of a cluster."""

from __future__ import annotations

import asyncio

import typer

from leadstream.cli.group import CommandGroup

db = CommandGroup(help="The PostgreSQL database of a cluster.")


@db.command("upgrade")
def upgrade(
    database_url: str = typer.Option(
        ..., "--database-url", envvar="LEADSTREAM_DATABASE_URL", metavar="URL", help="postgresql://…"
    ),
) -> None:
    """Create or migrate the schema (idempotent; nodes also do it on start)."""
    from leadstream.errors import Unavailable
    from leadstream.store.postgres import upgrade as upgrade_schema

    try:
        version = asyncio.run(upgrade_schema(database_url))
    except Unavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"database schema at version {version}")
