"""`leadstream keys …` for API keys and the master key; ``register`` adds them to the ``keys`` group.

create/list/revoke talk to a running server with the operator key; rotate-master works on the
store itself (stop the server first, or see ``secretbox.rotate_master`` for a rolling rotation).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any, Optional

import typer


def _api(server: str, key: Optional[str], method: str, path: str, body: Any = None) -> Any:
    from leadstream.client import ApiError, Client, default_key

    async def go() -> Any:
        async with Client(server, key or default_key()) as client:
            return await client.request(method, path, json=body)

    try:
        return asyncio.run(go())
    except ApiError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def register(keys: typer.Typer) -> None:
    server_opt = typer.Option("http://127.0.0.1:8470", "--server", envvar="LEADSTREAM_URL", help="the leadstream server")
    key_opt = typer.Option(None, "--key", envvar="LEADSTREAM_ADMIN_KEY", help="the operator key (default: the local admin.key)")

    @keys.command("create")
    def create(
        munchkin: list[str] = typer.Option(..., "--munchkin", help="a tenant the key acts for (repeatable)"),
        scope: list[str] = typer.Option(..., "--scope", help="ingest, subscriptions or read (repeatable)"),
        name: str = typer.Option("", help="a name for people"),
        server: str = server_opt, key: Optional[str] = key_opt,
    ) -> None:
        """Create a tenant API key; it is printed once and stored only as a hash."""
        created = _api(server, key, "POST", "/v1/keys", {"munchkinIds": munchkin, "scopes": scope, "name": name})
        typer.echo(json.dumps({k: v for k, v in created.items() if k != "key"}, indent=2))
        typer.echo(f"API key (shown once, keep it now): {created['key']}")

    @keys.command("list")
    def list_keys(munchkin: Optional[str] = typer.Option(None, "--munchkin"), server: str = server_opt,
                  key: Optional[str] = key_opt) -> None:
        """List tenant API keys (never the keys themselves)."""
        query = f"?munchkinId={munchkin}" if munchkin else ""
        typer.echo(json.dumps(_api(server, key, "GET", f"/v1/keys{query}")["keys"], indent=2))

    @keys.command("revoke")
    def revoke(key_id: str = typer.Argument(..., help="the key's id (not the key)"), server: str = server_opt,
               key: Optional[str] = key_opt) -> None:
        """Revoke a tenant API key."""
        typer.echo(json.dumps(_api(server, key, "DELETE", f"/v1/keys/{key_id}"), indent=2))

    @keys.command("new-master")
    def new_master() -> None:
        """Print a fresh master key (for LEADSTREAM_MASTER_KEY)."""
        from leadstream.secretbox import new_master_key

        typer.echo(new_master_key())

    @keys.command("rotate-master")
    def rotate_master_command(
        data_dir: Path = typer.Option(Path("leadstream-data"), envvar="LEADSTREAM_DATA_DIR"),
        database_url: Optional[str] = typer.Option(None, envvar="LEADSTREAM_DATABASE_URL"),
        new_key: Optional[str] = typer.Option(None, "--new-key", envvar="LEADSTREAM_NEW_MASTER_KEY",
                                              help="the new key (required when the current one is in LEADSTREAM_MASTER_KEY)"),
    ) -> None:
        """Re-seal every stored secret with a new master key (run it with the server stopped)."""
        current = os.environ.get("LEADSTREAM_MASTER_KEY")
        if current and not new_key:
            typer.echo("error: the master key comes from LEADSTREAM_MASTER_KEY: give --new-key (make one with "
                       "`leadstream keys new-master`), then set LEADSTREAM_MASTER_KEY to it", err=True)
            raise typer.Exit(1)
        changed, key_id = asyncio.run(_rotate(data_dir, database_url, current, new_key))
        typer.echo(f"re-sealed the secrets of {changed} subscriptions with master key {key_id}")
        if current:
            typer.echo("now set LEADSTREAM_MASTER_KEY to the new key on every node and restart")


async def _rotate(data_dir: Path, database_url: str | None, current: str | None, new_key: str | None) -> tuple[int, str]:
    from leadstream.secretbox import KEY_FILE, SecretBox, new_master_key, rotate_master, write_key_file
    from leadstream.store import open_store

    key_file = data_dir / KEY_FILE
    old_keys = current.replace("\n", ",").split(",") if current else key_file.read_text().split() if key_file.exists() else []
    new_key = new_key or new_master_key()
    box = SecretBox([new_key, *old_keys])
    if not current:
        write_key_file(data_dir, [new_key, *old_keys])  # both, until every secret is re-sealed
    store = open_store(database_url or data_dir)
    await store.open()
    try:
        changed = await rotate_master(store, box)
    finally:
        await store.close()
    if not current:
        write_key_file(data_dir, [new_key])
    return changed, box.key_id
