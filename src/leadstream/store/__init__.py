"""The storage interface and its two backends (SPEC §6)."""

from __future__ import annotations

from pathlib import Path

from leadstream.store.base import Store, StoredSubscription

__all__ = ["Store", "StoredSubscription", "open_store"]

SQLITE_FILE = "leadstream.db"


def open_store(
    target: str | Path, *, node_id: str | None = None, follow_appends: bool = False, commit_interval: float = 0.0
) -> Store:
    """The store at ``target``, not yet opened (``async with open_store(...) as store``, or
    ``await store.open()``).

    ``postgresql://…`` (or ``postgres://…``) is a PostgreSQL database shared by the nodes of a
    cluster; anything else is a data directory holding the embedded SQLite file. For the embedded
    store, ``follow_appends``: another process appends to the same file (the delivery process
    follows the API process's commits), and ``commit_interval``: gather this process's patient
    writes (delivery states, attempts) for that long (seconds) into one commit."""
    if isinstance(target, str) and target.startswith(("postgresql://", "postgres://")):
        from leadstream.store.postgres import PostgresStore

        return PostgresStore(target, node_id=node_id)
    from leadstream.store.sqlite import SqliteStore

    return SqliteStore(Path(target) / SQLITE_FILE, follow_head=follow_appends, commit_interval=commit_interval)
