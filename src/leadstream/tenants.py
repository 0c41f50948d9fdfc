"""Tenants are Marketo instances, named by their Munchkin ID: 3 digits, 3 capitals, 3 digits."""

from __future__ import annotations

import re

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
