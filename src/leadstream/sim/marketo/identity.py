"""Access tokens of the simulated identity service: one at a time, the same one while it is valid.

Asking again before expiry returns the same token with what is left of its life (``expires_in``
counts down), as Marketo's identity does. A token is rejected with 602 once expired and with 601
when this instance never issued it (or it was revoked).
"""

from __future__ import annotations

import math
import uuid
from collections import OrderedDict

INVALID, EXPIRED = "601", "602"
MESSAGES = {INVALID: "Access token invalid", EXPIRED: "Access token expired"}
REMEMBERED = 64  # expired tokens kept to answer 602 (not 601) for them


class AccessTokens:
    def __init__(self, ttl: float, pod: str = "sim") -> None:
        if ttl <= 0:
            raise ValueError(f"token_ttl: seconds must be positive, got {ttl!r}")
        self.ttl, self.pod = ttl, pod
        self._expiry: OrderedDict[str, float] = OrderedDict()  # token -> expiry, oldest first
        self.issued = 0

    def issue(self, now: float) -> tuple[str, int]:
        """The current token (a new one if the last has expired) and whole seconds left."""
        if self._expiry:
            token, expires = next(reversed(self._expiry.items()))
            if now < expires:
                return token, math.floor(expires - now)
        token = f"{uuid.uuid4()}:{self.pod}"
        self._expiry[token] = now + self.ttl
        self.issued += 1
        while len(self._expiry) > REMEMBERED:
            self._expiry.popitem(last=False)
        return token, max(0, math.floor(self.ttl - 1e-9))  # Marketo: 3599 for a fresh 3600 s token

    def check(self, token: str | None, now: float) -> str | None:
        """None when ``token`` is good, else the error code (601 or 602)."""
        expires = self._expiry.get(token) if token else None
        if expires is None:
            return INVALID
        return EXPIRED if now >= expires else None

    def expire_all(self, now: float) -> None:
        """Every token issued so far expires now (the next call with one gets 602)."""
        for token in self._expiry:
            self._expiry[token] = min(self._expiry[token], now)

    def revoke_all(self) -> None:
        """Forget every token (the next call with one gets 601)."""
        self._expiry.clear()
