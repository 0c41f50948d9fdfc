"""Paging tokens of the simulated instance: the cursor itself, encoded, so nobody has to remember it.

Marketo's date-based tokens are opaque base32 strings; decoded, they hold a date and an offset.
Ours hold the same two things, ``<sinceDatetime>,<after id>``: a page starts at the first activity
dated at or after ``since`` whose id is greater than ``after_id``. Ids and dates grow together in
the instance's log, so once a page has been read ``after_id`` alone decides and ``since`` only
matters for the first page.

Because the token *is* the position, it survives a restart of the client (a source checkpoints it
and resumes a day later) and of the instance, and works for activities and deleted leads alike.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime


class BadPagingToken(ValueError):
    """A ``nextPageToken`` this instance did not issue."""


@dataclass(frozen=True, slots=True)
class Cursor:
    since: int  # epoch seconds: activities dated at or after this second
    after_id: int = 0  # and with an id greater than this one

    def encode(self) -> str:
        since = datetime.fromtimestamp(self.since, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return base64.b32encode(f"{since},{self.after_id}".encode("ascii")).decode("ascii").rstrip("=")


def decode(token: str) -> Cursor:
    """The cursor a token stands for; raises BadPagingToken."""
    padded = token.strip().upper() + "=" * (-len(token.strip()) % 8)
    try:
        since_text, after_text = base64.b32decode(padded).decode("ascii").split(",")
        since = datetime.strptime(since_text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        after_id = int(after_text)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise BadPagingToken(f"{token!r} is not a paging token of this instance") from exc
    if after_id < 0:
        raise BadPagingToken(f"{token!r} is not a paging token of this instance")
    return Cursor(int(since.timestamp()), after_id)
