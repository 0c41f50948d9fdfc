"""Tenant catalogs in the store: each loaded activity type is a setting of its own.

``catalog.activity.<munchkin id>.<type id>`` holds the type as it was loaded (a Get Activity Types
entry). One row per type, not one document per tenant or for all tenants, so two nodes loading
types at the same time never overwrite each other's; a later load of the same type replaces it,
as it does in memory. Every node replays the rows on start, and again when it follows changes
made elsewhere.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from leadstream.catalog.model import Catalog

PREFIX = "catalog.activity."


class Settings(Protocol):
    """The part of the store this needs (the catalog sits below the store and does not import it)."""

    async def put_setting(self, name: str, value: bytes) -> None: ...

    async def settings(self, prefix: str) -> dict[str, bytes]: ...


async def load_activity_types(
    catalog: Catalog, store: Settings, munchkin_id: str, document: Any, *, custom_only: bool = False
) -> int:
    """``Catalog.load_activity_types``, then each loaded type kept in the store. Returns how many."""
    loaded = catalog.load_activity_types(munchkin_id, document, custom_only=custom_only)
    for entry in catalog.tenant_documents[munchkin_id][-loaded:]:
        await store.put_setting(f"{PREFIX}{munchkin_id}.{entry['id']}", orjson.dumps(entry))
    return loaded


async def restore(catalog: Catalog, store: Settings) -> None:
    """Load every tenant type kept in the store (what earlier runs, or other nodes, loaded)."""
    by_tenant: dict[str, list[Any]] = {}
    for name, value in (await store.settings(PREFIX)).items():
        munchkin_id = name[len(PREFIX) :].rsplit(".", 1)[0]
        by_tenant.setdefault(munchkin_id, []).append(orjson.loads(value))
    for munchkin_id, entries in by_tenant.items():
        catalog.load_activity_types(munchkin_id, {"result": entries})
