"""The audit trail: every admin action with who (key id), when, what and the changes, secrets redacted.

Entries live in the store's settings as a ring of pages (``PAGE`` entries each, the newest
``PAGE * PAGES`` kept), so appending rewrites one small page and reading newest-first touches
only the pages it returns. Each entry has a sequence number; ``GET /v1/audit?before=<seq>`` pages
back through them. Tenant keys see the entries of their own tenants.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlencode

import msgspec
from fastapi import APIRouter, Depends, Query, Request

from leadstream.api.auth import Principal, require_key
from leadstream.errors import NotFound
from leadstream.secretbox import is_sealed
from leadstream.store.base import Store

PAGE = 200
PAGES = 500  # 100,000 entries kept
HEAD = "audit.head"
REDACTED = "***"
# Field names whose values are secrets wherever they appear (compared lower-cased, without _ and -).
SECRET_NAMES = frozenset({"token", "clientsecret", "hmacsecret", "secret", "password", "key", "apikey", "clientkey", "authorization"})
SECRET_PREFIXES = ("lst_", "lsk_", "whsec_")


class AuditEntry(msgspec.Struct, omit_defaults=True):
    seq: int
    time: str
    actor: str  # the key id: "operator" or a tenant key's id
    action: str  # "key.create", "subscription.update", …
    target: str  # the id of what was acted on
    munchkinIds: list[str] = []
    changes: Any = None


def redact(value: Any) -> Any:
    """A copy with every secret replaced by "***": fields with secret names, and values that are
    ciphertext or look like our keys and HMAC secrets."""
    if isinstance(value, dict):
        return {
            k: REDACTED if _secret_name(k) and v not in (None, "", False, True) and not isinstance(v, (dict, list)) else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str) and (is_sealed(value) or value.startswith(SECRET_PREFIXES)):
        return REDACTED
    return value


def _secret_name(name: str) -> bool:
    return name.lower().replace("_", "").replace("-", "") in SECRET_NAMES


_page_decoder = msgspec.json.Decoder(list[AuditEntry])
_encoder = msgspec.json.Encoder()


class AuditLog:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = asyncio.Lock()  # appends of this process, one at a time (read-modify-write)

    async def record(
        self, actor_key_id: str, action: str, target: str, changes: Any = None, munchkin_ids: list[str] | None = None
    ) -> AuditEntry:
        now = time.time_ns() // 1_000_000
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now / 1000)) + f".{now % 1000:03d}Z"
        async with self._lock:
            seq = await self._head()
            entry = AuditEntry(seq, stamp, actor_key_id, action, target, sorted(munchkin_ids or []), redact(changes))
            page = await self._page(seq // PAGE)
            await self.store.put_setting(self._slot(seq // PAGE), _encoder.encode([*page, entry]))
            await self.store.put_setting(HEAD, str(seq + 1).encode())
        return entry

    async def entries(
        self, *, limit: int = 100, before: int | None = None, visible: Principal | None = None, munchkin_id: str | None = None,
        action: str | None = None, scan_pages: int = 50,
    ) -> tuple[list[AuditEntry], int | None]:
        """Newest first: up to ``limit`` entries below ``before``, and where to continue (None: the end)."""
        head = await self._head()
        start = head if before is None else min(before, head)
        oldest = max(0, ((head - 1) // PAGE - PAGES + 1) * PAGE)  # the first entry of the oldest page kept
        found: list[AuditEntry] = []
        seq = start
        for _ in range(scan_pages):
            if seq <= oldest or len(found) >= limit:
                break
            page_number = (seq - 1) // PAGE
            for entry in reversed(await self._page(page_number)):
                if entry.seq >= seq:
                    continue
                if self._matches(entry, visible, munchkin_id, action):
                    found.append(entry)
                    if len(found) >= limit:
                        return found, entry.seq if entry.seq > oldest else None
            seq = page_number * PAGE
        return found, seq if seq > oldest else None

    @staticmethod
    def _matches(entry: AuditEntry, visible: Principal | None, munchkin_id: str | None, action: str | None) -> bool:
        if visible is not None and not visible.is_operator and not any(visible.sees(m) for m in entry.munchkinIds):
            return False
        if munchkin_id is not None and munchkin_id not in entry.munchkinIds:
            return False
        return action is None or entry.action == action or entry.action.startswith(action + ".")

    async def _head(self) -> int:
        raw = await self.store.get_setting(HEAD)
        return int(raw) if raw else 0

    async def _page(self, number: int) -> list[AuditEntry]:
        """The entries of page ``number``; an older page that used the same slot counts as empty."""
        raw = await self.store.get_setting(self._slot(number))
        return [e for e in _page_decoder.decode(raw) if e.seq // PAGE == number] if raw else []

    @staticmethod
    def _slot(number: int) -> str:
        return f"audit.page.{number % PAGES}"


async def audit(
    request: Request, principal: Principal, action: str, target: str, changes: Any = None, munchkin_ids: list[str] | None = None
) -> None:
    """Record an admin action from a route: ``await audit(request, principal, "subscription.pause", sub_id,
    munchkin_ids=[sub.munchkin_id])``. ``changes`` is redacted here; pass the request body as is."""
    await request.app.state.security.audit.record(principal.key_id, action, target, changes, munchkin_ids)


router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("", summary="The audit trail of admin actions, newest first")
async def list_audit(
    request: Request,
    limit: int = Query(100, ge=1, le=1000),
    before: int | None = Query(None, ge=0, description="continue below this sequence number (the previous page's next)"),
    munchkinId: str | None = Query(None, description="only entries about this tenant"),
    action: str | None = Query(None, description='an action ("subscription.pause") or a family ("subscription")'),
    principal: Principal = Depends(require_key),
) -> dict[str, Any]:
    if munchkinId is not None and not principal.sees(munchkinId):
        raise NotFound(f"no tenant {munchkinId}")
    log: AuditLog = request.app.state.security.audit
    found, next_before = await log.entries(limit=limit, before=before, visible=principal, munchkin_id=munchkinId, action=action)
    following = None
    if next_before is not None:
        query = {"limit": limit, "before": next_before, "munchkinId": munchkinId, "action": action}
        following = "/v1/audit?" + urlencode({k: v for k, v in query.items() if v is not None})
    return {"entries": msgspec.to_builtins(found), "next": following}
