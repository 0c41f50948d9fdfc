"""Tenant API keys: created by the operator, stored only as SHA-256 hashes, shown once, revocable.

A key reads ``lst_<id>.<secret>``: the id (public, shown in listings and the audit trail) finds
the record, and the digest of the whole key is compared in constant time. Keys are random
(256 bits), so a fast hash is enough: there is nothing to brute-force.

Each key is a row of the store's ``api_keys`` table, so keys created or revoked on several nodes
at once never overwrite each other. Every node keeps all keys in memory, so checking a key costs
no I/O on the ingest path; a node reloads them every ``refresh`` seconds, so a revocation reaches
the other nodes of a cluster within that time and this node at once. Last-used times are kept in
memory and written at most once a minute per key (a column of their own, only ever raised).

Read-your-writes (SPEC §12): a key id this node does not know makes it read the store before it
refuses the key (``identify_fresh``), so a key created on one node works on every node at once;
the admin answers (``fresh``, ``listed``) read the store, so they show other nodes' changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import secrets
from typing import Literal

import msgspec

from leadstream.clock import now_ms, rfc3339
from leadstream.errors import Invalid, NotFound
from leadstream.store.base import Store
from leadstream.store.readthrough import ReadThrough
from leadstream.tenants import check_munchkin_id

Scope = Literal["ingest", "subscriptions", "read"]
SCOPES: tuple[str, ...] = ("ingest", "subscriptions", "read")
PREFIX = "lst_"
USED_EVERY_MS = 60_000


class ApiKey(msgspec.Struct, omit_defaults=True):
    id: str
    munchkinIds: list[str]
    scopes: list[Scope]
    hash: str  # sha256 hex of the whole key
    createdAt: int  # ms
    name: str = ""
    createdBy: str = ""
    revokedAt: int | None = None
    lastUsedAt: int | None = None

    def public(self) -> dict[str, object]:
        """What the API shows: everything but the hash."""
        return {
            "id": self.id,
            "name": self.name,
            "munchkinIds": self.munchkinIds,
            "scopes": self.scopes,
            "createdAt": rfc3339(self.createdAt),
            "createdBy": self.createdBy,
            "lastUsedAt": rfc3339(self.lastUsedAt),
            "revokedAt": rfc3339(self.revokedAt),
        }


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


_record_decoder = msgspec.json.Decoder(ApiKey)
_encoder = msgspec.json.Encoder()


class ApiKeys:
    """All tenant keys of the deployment, in memory, backed by the store."""

    def __init__(self, store: Store, *, refresh: float = 2.0) -> None:
        self.store = store
        self.refresh = refresh
        self._keys: dict[str, ApiKey] = {}
        self._used: dict[str, int] = {}  # id → last use not yet written
        # An unknown id asks the store; ids it did not have either stay unknown for a second.
        self._lookup = ReadThrough(self._keys_get, self.load, quiet=1.0)

    def _keys_get(self, key_id: str) -> ApiKey | None:
        return self._keys.get(key_id)

    # -- checking a presented key (sync: the hot path) ------------------------------------------------
    def identify(self, presented: str) -> ApiKey | None:
        """The live key whose secret this is, or None (unknown, malformed or revoked)."""
        if not presented.startswith(PREFIX):
            return None
        key_id, dot, _ = presented[len(PREFIX) :].partition(".")
        record = self._keys.get(key_id) if dot else None
        if record is None or record.revokedAt is not None:
            return None
        if not hmac.compare_digest(digest(presented), bytes.fromhex(record.hash)):
            return None
        now = now_ms()
        if (record.lastUsedAt or 0) + USED_EVERY_MS <= now:
            record.lastUsedAt = now
            self._used[key_id] = now
        return record

    async def identify_fresh(self, presented: str) -> ApiKey | None:
        """``identify``, reading the store first when the key's id is not known here (a key
        just created on another node)."""
        record = self.identify(presented)
        if record is None and presented.startswith(PREFIX):
            key_id, dot, _ = presented[len(PREFIX) :].partition(".")
            if dot and key_id not in self._keys and await self._lookup.find(key_id) is not None:
                record = self.identify(presented)
        return record

    # -- administration -----------------------------------------------------------------------------
    async def create(
        self, munchkin_ids: list[str], scopes: list[str], *, name: str = "", created_by: str
    ) -> tuple[ApiKey, str]:
        """A new key and its secret, which is not kept: the caller shows it once."""
        if not munchkin_ids:
            raise Invalid("munchkinIds: name at least one tenant", field="munchkinIds")
        for index, munchkin_id in enumerate(munchkin_ids):
            check_munchkin_id(munchkin_id, f"munchkinIds[{index}]")
        if not scopes or not set(scopes) <= set(SCOPES):
            raise Invalid(f"scopes: give one or more of {', '.join(SCOPES)}, got {scopes!r}", field="scopes")
        key_id = secrets.token_hex(6)
        secret = f"{PREFIX}{key_id}.{secrets.token_urlsafe(32)}"
        record = ApiKey(
            id=key_id, name=name, munchkinIds=sorted(set(munchkin_ids)), scopes=sorted(set(scopes)),  # type: ignore[arg-type]
            hash=digest(secret).hex(), createdAt=now_ms(), createdBy=created_by,
        )  # fmt: skip
        await self.store.create_api_key(key_id, _encoder.encode(record))
        self._keys[key_id] = record
        return record, secret

    async def revoke(self, key_id: str) -> ApiKey:
        record = await self._stored(key_id)
        if record is None:
            raise NotFound(f"no API key {key_id!r}")
        if record.revokedAt is None:
            record.revokedAt = now_ms()
            await self.store.update_api_key(key_id, _encoder.encode(record))
        await self.store.delete_console_sessions(key_id=key_id)  # its console sessions end on every node
        self._keys[key_id] = record
        return record

    def get(self, key_id: str) -> ApiKey | None:
        return self._keys.get(key_id)

    async def fresh(self, key_id: str) -> ApiKey | None:
        """The key as the store has it now (an admin answer: other nodes' changes included)."""
        return await self._lookup.fresh(key_id)

    async def listed(self, munchkin_id: str | None = None, include_revoked: bool = True) -> list[ApiKey]:
        """``find`` over the keys as the store has them now."""
        await self.load()
        return self.find(munchkin_id, include_revoked)

    def find(self, munchkin_id: str | None = None, include_revoked: bool = True) -> list[ApiKey]:
        """Newest first."""
        keys = [
            k for k in self._keys.values()
            if (munchkin_id is None or munchkin_id in k.munchkinIds) and (include_revoked or k.revokedAt is None)
        ]  # fmt: skip
        return sorted(keys, key=lambda k: (k.createdAt, k.id), reverse=True)

    # -- keeping in step with the store ---------------------------------------------------------------
    async def load(self) -> None:
        """Read every key (the last-used times this node has not written yet are kept)."""
        loaded: dict[str, ApiKey] = {}
        for raw, used_at in await self.store.api_keys():
            record = _record_decoder.decode(raw)
            known = self._keys.get(record.id)
            record.lastUsedAt = max(used_at, record.lastUsedAt or 0, (known.lastUsedAt or 0) if known else 0) or None
            loaded[record.id] = record
        self._keys = loaded

    async def _stored(self, key_id: str) -> ApiKey | None:
        return await self.fresh(key_id)

    async def sync(self) -> None:
        """Write pending last-used times, and reload what other nodes changed."""
        used, self._used = self._used, {}
        await self.store.mark_api_keys_used(used)
        await self.load()

    async def run(self) -> None:
        """The background loop: ``sync`` every ``refresh`` seconds, and once more when stopped."""
        try:
            while True:
                await asyncio.sleep(self.refresh)
                with contextlib.suppress(Exception):  # the store may be briefly away; try again next time
                    await self.sync()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.sync())
