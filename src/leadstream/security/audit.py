"""The audit trail: every admin action with who (key id), when, what and the changes, secrets redacted.

Each entry is a row of the store's ``audit`` table (the newest ``KEEP`` are kept), so appends from
several nodes never overwrite each other and an append writes one small row. Each entry has a
sequence number; ``GET /v1/audit?before=<seq>`` pages back through them. Tenant keys see the
entries of their own tenants.
"""

from __future__ import annotations

from typing import Any

import msgspec

from leadstream.clock import now_ms, rfc3339
from leadstream.security.secretbox import is_sealed
from leadstream.store.base import Store

KEEP = 100_000
SCAN_ROWS = 10_000  # entries looked at per request at most, when a filter matches rarely
REDACTED = "***"
# Field names whose values are secrets wherever they appear (compared lower-cased, without _ and -).
SECRET_NAMES = frozenset(
    {"token", "clientsecret", "hmacsecret", "secret", "password", "key", "apikey", "clientkey", "authorization"}
)
SECRET_PREFIXES = ("lst_", "lsk_", "whsec_")


class AuditEntry(msgspec.Struct, omit_defaults=True):
    time: str
    actor: str  # the key id: "operator" or a tenant key's id
    action: str  # "key.create", "subscription.update", …
    target: str  # the id of what was acted on
    munchkinIds: list[str] = []
    changes: Any = None
    seq: int = 0  # given by the store


def redact(value: Any) -> Any:
    """A copy with every secret replaced by "***": fields with secret names, and values that are
    ciphertext or look like our keys and HMAC secrets."""
    if isinstance(value, dict):
        return {
            k: REDACTED
            if _secret_name(k) and v not in (None, "", False, True) and not isinstance(v, (dict, list))
            else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str) and (is_sealed(value) or value.startswith(SECRET_PREFIXES)):
        return REDACTED
    return value


def _secret_name(name: str) -> bool:
    return name.lower().replace("_", "").replace("-", "") in SECRET_NAMES


_entry_decoder = msgspec.json.Decoder(AuditEntry)
_encoder = msgspec.json.Encoder()


class AuditLog:
    def __init__(self, store: Store, keep: int = KEEP) -> None:
        self.store = store
        self.keep = keep

    async def record(
        self, actor_key_id: str, action: str, target: str, changes: Any = None, munchkin_ids: list[str] | None = None
    ) -> AuditEntry:
        entry = AuditEntry(
            rfc3339(now_ms()) or "", actor_key_id, action, target, sorted(munchkin_ids or []), redact(changes)
        )
        entry.seq = await self.store.append_audit(_encoder.encode(entry), self.keep)
        return entry

    async def entries(
        self,
        *,
        limit: int = 100,
        before: int | None = None,
        tenants: frozenset[str] | None = None,
        munchkin_id: str | None = None,
        action: str | None = None,
    ) -> tuple[list[AuditEntry], int | None]:
        """Newest first: up to ``limit`` entries below ``before`` that ``tenants`` may see (None:
        every tenant's), and where to continue (None: the end)."""
        found: list[AuditEntry] = []
        scanned = 0
        while len(found) < limit and scanned < SCAN_ROWS:
            rows = await self.store.audit_entries(before, min(1000, SCAN_ROWS - scanned))
            if not rows:
                return found, None
            for seq, raw in rows:
                entry = _entry_decoder.decode(raw)
                entry.seq = before = seq
                if _matches(entry, tenants, munchkin_id, action):
                    found.append(entry)
                    if len(found) == limit:
                        break
            scanned += len(rows)
        return found, before


def _matches(entry: AuditEntry, tenants: frozenset[str] | None, munchkin_id: str | None, action: str | None) -> bool:
    if tenants is not None and not tenants.intersection(entry.munchkinIds):
        return False
    if munchkin_id is not None and munchkin_id not in entry.munchkinIds:
        return False
    return action is None or entry.action == action or entry.action.startswith(action + ".")
