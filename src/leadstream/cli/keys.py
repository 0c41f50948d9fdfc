"""`leadstream keys …`: tenant API keys, the master key, and the signing keys.

create/list/revoke talk to a running server with the operator key; rotate-master works on the
store itself (stop the server first, or see ``secretbox.rotate_master`` for a rolling rotation);
rotate works on the signing key files, which a running server picks up.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from urllib.parse import quote

import typer

from leadstream.cli.client import JSON, KEY, SERVER, echo_json, fail, request, show
from leadstream.cli.group import DEFAULTS, CommandGroup, Scope
from leadstream.datadir import KEYS_DIR, STORE_FILE, DataDirError, holder_if_locked, require_existing

keys = CommandGroup(help="Signing keys and API keys.")
DATA_DIR = typer.Option(
    DEFAULTS.data_dir, envvar="LEADSTREAM_DATA_DIR", metavar="DIR", help="the server's data directory"
)


KEY_COLUMNS = ["id", "name", "munchkinIds", "scopes", "createdAt", "lastUsedAt", "revokedAt"]


@keys.command("create")
def create(
    munchkin: list[str] = typer.Option(
        ..., "--munchkin", metavar="MUNCHKIN-ID", help="a tenant the key acts for (repeatable)"
    ),
    scope: list[Scope] = typer.Option(
        ..., "--scope", metavar="ingest|subscriptions|read", help="what the key may do (repeatable)"
    ),
    name: str = typer.Option("", metavar="NAME", help="a name for people"),
    server: str = SERVER,
    key: str | None = KEY,
    as_json: bool = JSON,
) -> None:
    """Create a tenant API key; it is printed once and stored only as a hash."""
    body = {"munchkinIds": munchkin, "scopes": [s.value for s in scope], "name": name}
    created = request(server, key, "POST", "/v1/keys", body)
    if as_json:
        echo_json(created)  # the key included: a script asked for it
        return
    show({k: v for k, v in created.items() if k != "key"}, False, title="created")
    typer.echo(f"API key (shown once, keep it now): {created['key']}")


@keys.command("list")
def list_keys(
    munchkin: str | None = typer.Option(None, "--munchkin", metavar="MUNCHKIN-ID", help="only this tenant's keys"),
    server: str = SERVER,
    key: str | None = KEY,
    as_json: bool = JSON,
) -> None:
    """List tenant API keys (never the keys themselves)."""
    query = f"?munchkinId={quote(munchkin)}" if munchkin else ""
    show(request(server, key, "GET", f"/v1/keys{query}")["keys"], as_json, KEY_COLUMNS, full_columns=("id",))


@keys.command("revoke")
def revoke(
    key_id: str = typer.Argument(..., metavar="KEY-ID", help="the key's id (not the key)"),
    server: str = SERVER,
    key: str | None = KEY,
    as_json: bool = JSON,
) -> None:
    """Revoke a tenant API key."""
    show(request(server, key, "DELETE", f"/v1/keys/{quote(key_id, safe='')}"), as_json, title="revoked")


@keys.command("new-master")
def new_master() -> None:
    """Print a fresh master key (for LEADSTREAM_MASTER_KEY)."""
    from leadstream.security.secretbox import new_master_key

    typer.echo(new_master_key())


@keys.command("rotate-master")
def rotate_master_command(
    data_dir: Path = DATA_DIR,
    database_url: str | None = typer.Option(
        None,
        envvar="LEADSTREAM_DATABASE_URL",
        metavar="URL",
        help="the cluster's database (postgresql://…), instead of --data-dir",
    ),
    new_key: str | None = typer.Option(
        None,
        "--new-key",
        envvar="LEADSTREAM_NEW_MASTER_KEY",
        metavar="KEY",
        help="the new key (required when the current one is in LEADSTREAM_MASTER_KEY)",
    ),
) -> None:
    """Re-seal every stored secret with a new master key (run it with the server stopped)."""
    if not database_url:
        _check_data_dir(data_dir, STORE_FILE)
        holder = holder_if_locked(data_dir)
        if holder:
            fail(f"a server is running on {data_dir} ({holder}): stop it first")
    current = os.environ.get("LEADSTREAM_MASTER_KEY")
    if current and not new_key:
        typer.echo(
            "error: the master key comes from LEADSTREAM_MASTER_KEY: give --new-key (make one with "
            "`leadstream keys new-master`), then set LEADSTREAM_MASTER_KEY to it",
            err=True,
        )
        raise typer.Exit(1)
    changed, key_id = asyncio.run(_rotate_master(data_dir, database_url, current, new_key))
    typer.echo(f"re-sealed the secrets of {changed} subscriptions with master key {key_id}")
    if current:
        typer.echo("now set LEADSTREAM_MASTER_KEY to the new key on every node and restart")


async def _rotate_master(
    data_dir: Path, database_url: str | None, current: str | None, new_key: str | None
) -> tuple[int, str]:
    from leadstream.security.secretbox import KEY_FILE, SecretBox, new_master_key, rotate_master, write_key_file
    from leadstream.store import open_store

    key_file = data_dir / KEY_FILE
    if current:
        old_keys = current.replace("\n", ",").split(",")
    else:
        old_keys = key_file.read_text().split() if key_file.exists() else []
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


@keys.command("rotate")
def rotate_signing(data_dir: Path = DATA_DIR) -> None:
    """Promote signing key 2 to key 1 and create a new key 2 (a running server picks it up)."""
    from leadstream.security.signing import KeyRing

    _check_data_dir(data_dir, KEYS_DIR)
    ring = KeyRing(data_dir / KEYS_DIR)
    ring.rotate()
    typer.echo(
        f"rotated the signing keys in {(data_dir / KEYS_DIR).resolve()}; now serving " + ", ".join(ring.public_paths)
    )


def _check_data_dir(data_dir: Path, what: str) -> None:
    try:
        require_existing(data_dir, what)
    except DataDirError as exc:
        fail(str(exc))
