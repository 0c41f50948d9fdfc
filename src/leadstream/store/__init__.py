"""The storage interface and its two backends (SPEC §6)."""

from __future__ import annotations

from pathlib import Path

from leadstream.store.base import Store, StoredSubscription

__all__ = ["Store", "StoredSubscription", "open_store"]

SQLITE_FILE = "leadstream.db"


def open_store(target: str | Path, *, node_id: str | None = None) -> Store:
    """The store at ``target``, not yet opened (``async with open_store(...) as store``, or
    ``await store.open()``).

    ``postgresql://…`` (or ``postgres://…``) is a PostgreSQL database shared by the nodes of a
    cluster; anything else is a data directory holding the embedded SQLite file."""
    if isinstance(target, str) and target.startswith(("postgresql://", "postgres://")):
        from leadstream.store.postgres import PostgresStore

        return PostgresStore(target, node_id=node_id)
    from leadstream.store.sqlite import SqliteStore

    return SqliteStore(Path(target) / SQLITE_FILE)
