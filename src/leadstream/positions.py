"""Log positions as clients see them: one token format for the journal, replay, status and attempts.

A token is ``"2"`` (the version of the encoding) followed by the position as 16 lowercase hex
digits, so tokens are opaque to clients yet sort as strings in log order. The journal's first
form, ``"1"`` and the unpadded base64url of 8 big-endian bytes (which does not sort), is still
accepted wherever a position is read.
"""

from __future__ import annotations

import base64
import binascii
import re

from leadstream.errors import LeadstreamError

VERSION = "2"
TOKEN_LENGTH = 1 + 16
MAX_POSITION = 2**63 - 1
_HEX = re.compile(r"2[0-9a-f]{16}")
_LEGACY = re.compile(r"1[A-Za-z0-9_-]{11}")


def encode(position: int) -> str:
    return f"{VERSION}{position:016x}"


def decode_or_none(token: str) -> int | None:
    """The position behind a token (either form, canonical spelling only), or None."""
    if _HEX.fullmatch(token):
        position = int(token[1:], 16)
    elif _LEGACY.fullmatch(token):
        try:
            position = int.from_bytes(base64.urlsafe_b64decode(token[1:] + "="), "big")
        except (ValueError, binascii.Error):
            return None
        if base64.urlsafe_b64encode(position.to_bytes(8, "big")).rstrip(b"=").decode() != token[1:]:
            return None
    else:
        return None
    return position if position <= MAX_POSITION else None


def decode(token: str, field: str, hint: str = "") -> int:
    """The position behind ``token``, or a 400 naming ``field``."""
    position = decode_or_none(token)
    if position is None:
        raise LeadstreamError(f"{field}: {token[:40]!r} is not a log position{hint}", field=field)
    return position
