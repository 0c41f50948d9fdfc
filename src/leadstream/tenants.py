"""Tenants are Marketo instances, named by their Munchkin ID: 3 digits, 3 capitals, 3 digits."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from leadstream.errors import Invalid

MUNCHKIN_RE = re.compile(r"\d{3}-[A-Z]{3}-\d{3}")


def not_a_munchkin_id(value: object, field: str = "munchkinId") -> str:
    """The one message for a bad Munchkin ID, wherever it is checked."""
    return f"{field}: {value!r} is not a Munchkin ID (3 digits, 3 capitals, 3 digits: 123-ABC-456)"


def check_munchkin_id(value: object, field: str = "munchkinId") -> str:
    """``value`` if it is a Munchkin ID, else Invalid naming ``field``."""
    if not isinstance(value, str) or not MUNCHKIN_RE.fullmatch(value):
        raise Invalid(not_a_munchkin_id(value, field), field=field)
    return value


Visible = Callable[[str], bool]  # whether the caller may see a tenant's things (a munchkin id)


class Owned(Protocol):
    """A tenant's thing (a subscription, a source)."""

    @property
    def id(self) -> str: ...
    @property
    def munchkin_id(self) -> str: ...


ThingT = TypeVar("ThingT", bound=Owned)


def visible_page(
    found: Sequence[ThingT], visible: Visible, *, after: str | None, limit: int
) -> tuple[list[ThingT], bool]:
    """Of ``found`` (in the store's order), those the caller may see: a page of ``limit`` after the
    one with id ``after`` (from the first if it is not there), and whether more follow."""
    seen = [thing for thing in found if visible(thing.munchkin_id)]
    ids = [thing.id for thing in seen]
    start = ids.index(after) + 1 if after in ids else 0
    return seen[start : start + limit], start + limit < len(seen)
