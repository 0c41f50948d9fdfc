"""Pure helpers the templates use to show values: secret masking, safe links, numbers, state labels."""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MASK = "***"
# Field names (case-insensitive, last path part) whose values are secrets wherever they appear.
# ``tokenUrl`` is not one: only whole names and these suffixes count.
SECRET_NAMES = frozenset({"token", "secret", "password", "apikey", "key", "privatekey", "authorization", "signature"})
SECRET_SUFFIXES = ("secret", "password", "token", "apikey", "privatekey")


def is_secret(name: str) -> bool:
    lowered = name.lower().replace("_", "").replace("-", "")
    return lowered in SECRET_NAMES or lowered.endswith(SECRET_SUFFIXES)


def _shown(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(_shown(item) for item in value) or "—"
    return str(value)


def settings_rows(settings: Mapping[str, Any], *, prefix: str = "") -> list[tuple[str, str]]:
    """A nested settings mapping as (dotted name, text) rows, secrets shown as ``***``.

    >>> settings_rows({"endpoint": "https://x", "auth": {"type": "token", "token": "s3cr3t"}})
    [('endpoint', 'https://x'), ('auth.type', 'token'), ('auth.token', '***')]
    """
    rows: list[tuple[str, str]] = []
    for name, value in settings.items():
        dotted = f"{prefix}{name}"
        if isinstance(value, Mapping):
            rows.extend(settings_rows(value, prefix=dotted + "."))
        elif is_secret(str(name)) and value not in (None, ""):
            rows.append((dotted, MASK))
        else:
            rows.append((dotted, _shown(value)))
    return rows


def safe_href(url: object) -> str | None:
    """``url`` if a browser may follow it (http, https, or a path of ours), else None: an endpoint
    URL such as ``javascript:…`` is then shown as text, never as a link."""
    if not isinstance(url, str):
        return None
    if url.startswith("/") and not url.startswith("//"):
        return url
    try:
        scheme = urllib.parse.urlsplit(url).scheme.lower()
    except ValueError:
        return None
    return url if scheme in ("http", "https") else None


def number(value: float | int | None, decimals: int = 0) -> str:
    """``12345.6`` → ``12,346``; None → ``—``."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:,.{decimals}f}"


def compact(value: float) -> str:
    """Short numbers for axes and summaries: 950 → ``950``, 12000 → ``12k``, 1500000 → ``1.5M``, 0.25 → ``0.25``."""
    magnitude = abs(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= limit * (10 if suffix == "k" else 1):
            scaled = value / limit
            return f"{scaled:.1f}".rstrip("0").rstrip(".") + suffix
    if magnitude >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.3g}"


@dataclass(frozen=True, slots=True)
class StateLabel:
    text: str
    tone: str  # ok | warn | bad | off: the badge's colour, always beside the text (never colour alone)


STATES: dict[str, StateLabel] = {
    # subscriptions (SPEC §3)
    "active": StateLabel("Active", "ok"),
    "retrying": StateLabel("Retrying", "warn"),
    "paused": StateLabel("Paused", "bad"),
    "deprovisioned": StateLabel("Deprovisioned", "off"),
    # sources (SPEC §10)
    "running": StateLabel("Running", "ok"),
    "throttled": StateLabel("Throttled", "warn"),
    "quota_exhausted": StateLabel("Quota exhausted", "bad"),
    "failing": StateLabel("Failing", "bad"),
}


def state_label(state: str) -> StateLabel:
    return STATES.get(state) or StateLabel(state.replace("_", " ").capitalize() or "Unknown", "off")


def quota(used: float, limit: float) -> tuple[float, str]:
    """(fraction spent, clamped to 0..1; tone) for a quota bar: warn from 80 %, bad from 100 %."""
    if limit <= 0:
        return 1.0, "bad"
    fraction = max(0.0, min(1.0, used / limit))
    return fraction, "bad" if used >= limit else "warn" if fraction >= 0.8 else "ok"


def tenants_text(munchkin_ids: frozenset[str] | None, shown: int = 3) -> str:
    """Who a key speaks for, in the header: ``all tenants``, or the first few Munchkin IDs."""
    if munchkin_ids is None:
        return "all tenants"
    ids = sorted(munchkin_ids)
    if not ids:
        return "no tenants"
    more = len(ids) - shown
    return ", ".join(ids[:shown]) + (f" +{more} more" if more > 0 else "")
