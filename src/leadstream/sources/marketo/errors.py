"""What Marketo answered, as exceptions that carry its code and message (``str(error)`` = "606 Max rate…").

Marketo reports nearly every error as HTTP 200 with ``success:false`` and ``errors:[{code, message}]``;
the few HTTP-level ones (414, 5xx from the front end) and transport failures get codes of their
own here: ``"HTTP 414"``, ``"HTTP 503"``, ``"timeout"``, ``"connection"``, ``"invalid-response"``.

The classes sort errors by what a caller does about them (the reactions themselves are policy, in
``leadstream.sources.budget``), and ``counted`` says whether Marketo charged the call to the
rate window and the daily quota: calls failing with 601, 602, 604, 605, 608 or 611 (and a 414,
which the front end refuses) are not charged. Transport failures are assumed charged: the call may
have arrived.
"""

from __future__ import annotations

import re

from leadstream.errors import LeadstreamError

NOT_COUNTED_CODES = frozenset({"601", "602", "604", "605", "608", "611", "HTTP 414"})
TRANSIENT_CODES = frozenset({"502", "604", "608", "611", "614", "713", "719"})
DEFAULT_RATE_WINDOW = 20.0
_WINDOW_IN_MESSAGE = re.compile(r"with\s*in\s*'?(\d+(?:\.\d+)?)'?\s*sec", re.IGNORECASE)


class MarketoError(LeadstreamError):
    """An error Marketo (or the way to it) answered; ``code`` and ``message`` are Marketo's own."""

    status = 502
    title = "Bad Gateway"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code, self.message = code, message

    @property
    def counted(self) -> bool:
        """Whether Marketo charged this call to the rate window and the daily quota."""
        return self.code not in NOT_COUNTED_CODES


class TokenRejected(MarketoError):
    """601 (invalid) or 602 (expired): the client fetches a new token and repeats the call."""


class UriTooLong(MarketoError):
    """HTTP 414: the client repeats the call as POST with ``_method=GET``."""


class RateLimited(MarketoError):
    """606: more than the instance's calls in its 20 s window. ``retry_after``: seconds until that window has passed."""

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(code, message)
        if retry_after is None:  # Marketo's message names its window: "…exceeded with in '20' secs"
            found = _WINDOW_IN_MESSAGE.search(message)
            retry_after = float(found.group(1)) if found else DEFAULT_RATE_WINDOW
        self.retry_after = retry_after


class QuotaExhausted(MarketoError):
    """607: the instance's daily quota is spent (by every integration together) until 00:00 America/Chicago."""


class TooManyConcurrent(MarketoError):
    """615: more than the instance's concurrent calls (10) in flight."""


class Transient(MarketoError):
    """604, 608, 611, 614, 713, 719, 502, HTTP 5xx, timeouts, connection failures: the same call may work later."""


class AuthFailed(MarketoError):
    """The identity service refused the credentials, or 603 (access denied: role, IP allowlist), or a fresh token
    was rejected again: a person has to act."""


class RequestRejected(MarketoError):
    """Anything else (1003 invalid value, 701 blank field, 610 not found, HTTP 4xx…): the call as made will not work."""


def classify(code: object, message: object) -> MarketoError:
    """The exception for one entry of ``errors``."""
    code, message = str(code), str(message or "")
    if code in ("601", "602"):
        return TokenRejected(code, message)
    if code == "606":
        return RateLimited(code, message)
    if code == "607":
        return QuotaExhausted(code, message)
    if code == "615":
        return TooManyConcurrent(code, message)
    if code in TRANSIENT_CODES:
        return Transient(code, message)
    if code == "603":
        return AuthFailed(code, message)
    return RequestRejected(code, message)
