"""Tenant API keys: created by the operator, stored only as SHA-256 hashes, shown once, revocable.

A key reads ``lst_<id>.<secret>``: the id (public, shown in listings and the audit trail) finds
the record, and the digest of the whole key is compared in constant time. Keys are random
(256 bits), so a fast hash is enough: there is nothing to brute-force.

Storage uses the store's small settings, one row per key (``apikey.<id>``) so a revocation never
races with anything else, plus an index of ids. Every node keeps all keys in memory, so checking
a key costs no I/O on the ingest path; a node reloads them when the ``apikeys.version`` token
changes (checked every ``refresh`` seconds), so a revocation reaches the other nodes of a cluster
within that time and this node at once. Last-used times are kept in memory and written at most
once a minute per key.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import secrets
import time
import uuid
from typing import Literal

import msgspec

from leadstream.errors import Invalid, NotFound
from leadstream.events import MUNCHKIN_RE
from leadstream.store.base import Store

Scope = Literal["ingest", "subscriptions", "read"]
SCOPES: tuple[str, ...] = ("ingest", "subscriptions", "read")
PREFIX = "lst_"
INDEX = "apikeys.index"
VERSION = "apikeys.version"
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
            "id": self.id, "name": self.name, "munchkinIds": self.munchkinIds, "scopes": self.scopes,
            "createdAt": _iso(self.createdAt), "createdBy": self.createdBy,
            "lastUsedAt": _iso(self.lastUsedAt), "revokedAt": _iso(self.revokedAt),
        }


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


_record_decoder = msgspec.json.Decoder(ApiKey)
_encoder = msgspec.json.Encoder()


class ApiKeys:
    """All tenant keys of the deployment, in memory, backed by the store."""

    def __init__(self, store: Store, *, refresh: float = 2.0) -> None:
        self.store = store
        self.refresh = refresh
        self._keys: dict[str, ApiKey] = {}
        self._version: bytes | None = None
        self._used: dict[str, int] = {}  # id → last use not yet written
        self._lock = asyncio.Lock()  # admin writes of this process, one at a time

    # -- checking a presented key (sync: the hot path) ------------------------------------------------
    def identify(self, presented: str) -> ApiKey | None:
        """The live key whose secret this is, or None (unknown, malformed or revoked)."""
        if not presented.startswith(PREFIX):
            return None
        key_id, dot, _ = presented[len(PREFIX):].partition(".")
        record = self._keys.get(key_id) if dot else None
        if record is None or record.revokedAt is not None:
            return None
        if not hmac.compare_digest(digest(presented), bytes.fromhex(record.hash)):
            return None
        now = _now_ms()
        if (record.lastUsedAt or 0) + USED_EVERY_MS <= now:
            record.lastUsedAt = now
            self._used[key_id] = now
        return record

    # -- administration -----------------------------------------------------------------------------
    async def create(self, munchkin_ids: list[str], scopes: list[str], *, name: str = "", created_by: str) -> tuple[ApiKey, str]:
        """A new key and its secret, which is not kept: the caller shows it once."""
        if not munchkin_ids:
            raise Invalid("munchkinIds: name at least one tenant", field="munchkinIds")
        for index, munchkin_id in enumerate(munchkin_ids):
            if not MUNCHKIN_RE.fullmatch(munchkin_id):
                field = f"munchkinIds[{index}]"
                raise Invalid(f"{field}: {munchkin_id!r} is not a Munchkin ID (123-ABC-456)", field=field)
        if not scopes or not set(scopes) <= set(SCOPES):
            raise Invalid(f"scopes: give one or more of {', '.join(SCOPES)}, got {scopes!r}", field="scopes")
        key_id = secrets.token_hex(6)
        secret = f"{PREFIX}{key_id}.{secrets.token_urlsafe(32)}"
        record = ApiKey(
            id=key_id, name=name, munchkinIds=sorted(set(munchkin_ids)), scopes=sorted(set(scopes)),  # type: ignore[arg-type]
            hash=digest(secret).hex(), createdAt=_now_ms(), createdBy=created_by,
        )
        async with self._lock:
            await self._put(record)
            index = await self._index()
            await self.store.put_setting(INDEX, _encoder.encode([*index, key_id]))
            await self._changed()
            self._keys[key_id] = record
        return record, secret

    async def revoke(self, key_id: str) -> ApiKey:
        async with self._lock:
            record = await self._get(key_id)
            if record is None:
                raise NotFound(f"no API key {key_id!r}")
            known = self._keys.get(key_id)
            if known is not None and (known.lastUsedAt or 0) > (record.lastUsedAt or 0):
                record.lastUsedAt = known.lastUsedAt
            if record.revokedAt is None:
                record.revokedAt = _now_ms()
                await self._put(record)
                await self._changed()
            self._keys[key_id] = record
        return record

    def get(self, key_id: str) -> ApiKey | None:
        return self._keys.get(key_id)

    def find(self, munchkin_id: str | None = None, include_revoked: bool = True) -> list[ApiKey]:
        """Newest first."""
        keys = [
            k for k in self._keys.values()
            if (munchkin_id is None or munchkin_id in k.munchkinIds) and (include_revoked or k.revokedAt is None)
        ]
        return sorted(keys, key=lambda k: (k.createdAt, k.id), reverse=True)

    # -- keeping in step with the store ---------------------------------------------------------------
    async def load(self) -> None:
        """Read every key; also re-add to the index keys this process made that a concurrent
        writer on another node dropped from it (so no key works without being listed)."""
        async with self._lock:
            self._version = await self.store.get_setting(VERSION)
            index = await self._index()
            missing = [k for k in self._keys if k not in index]
            if missing:
                await self.store.put_setting(INDEX, _encoder.encode([*index, *missing]))
                index = [*index, *missing]
            loaded: dict[str, ApiKey] = {}
            for key_id in index:
                record = await self._get(key_id)
                if record is not None:
                    known = self._keys.get(key_id)
                    if known is not None and (known.lastUsedAt or 0) > (record.lastUsedAt or 0):
                        record.lastUsedAt = known.lastUsedAt
                    loaded[key_id] = record
            self._keys = loaded

    async def sync(self) -> None:
        """Write pending last-used times, and reload when another node changed the keys."""
        used, self._used = self._used, {}
        for key_id, at in used.items():
            await self.store.put_setting(f"apikey.{key_id}.used", str(at).encode())
        if await self.store.get_setting(VERSION) != self._version:
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

    # -- rows --------------------------------------------------------------------------------------------
    async def _index(self) -> list[str]:
        raw = await self.store.get_setting(INDEX)
        return msgspec.json.decode(raw, type=list[str]) if raw else []

    async def _get(self, key_id: str) -> ApiKey | None:
        raw = await self.store.get_setting(f"apikey.{key_id}")
        if raw is None:
            return None
        record = _record_decoder.decode(raw)
        used = await self.store.get_setting(f"apikey.{key_id}.used")
        if used:
            record.lastUsedAt = max(record.lastUsedAt or 0, int(used))
        return record

    async def _put(self, record: ApiKey) -> None:
        await self.store.put_setting(f"apikey.{record.id}", _encoder.encode(record))

    async def _changed(self) -> None:
        self._version = uuid.uuid4().bytes
        await self.store.put_setting(VERSION, self._version)
