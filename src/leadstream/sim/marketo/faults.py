"""Faults the simulated instance injects into REST calls: at a rate, or queued for the next calls.

Kinds: a Marketo code answered as HTTP 200 + ``errors`` (601, 602, 604, 606, 607, 608, 611, 615,
713), ``5xx`` (an HTTP 503 from the front end, HTML body) and ``timeout`` (the call hangs for
``hang_seconds``, longer than a client waits, and holds its concurrency slot meanwhile, as a real
slow call does). The draws follow the seed: the same calls get the same faults.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable

FAULT_KINDS = ("601", "602", "604", "606", "607", "608", "611", "615", "713", "5xx", "timeout")
MESSAGES = {
    "601": "Access token invalid",
    "602": "Access token expired",
    "604": "Request timed out",
    "608": "API Temporarily Unavailable",
    "611": "System error",
    "713": "Transient Error",
}


def parse_faults(text: str | Iterable[str]) -> frozenset[str]:
    """``"606,611,5xx,timeout"`` (or the kinds as a list) → the set; names a kind it does not know."""
    kinds = [k.strip().lower() for k in (text.split(",") if isinstance(text, str) else text) if k.strip()]
    for kind in kinds:
        if kind not in FAULT_KINDS:
            known = ", ".join(FAULT_KINDS)
            raise ValueError(f"faults: {kind!r} is not a fault this instance injects (choose from {known})")
    return frozenset(kinds)


class Faults:
    def __init__(self, kinds: frozenset[str] = frozenset(), rate: float = 0.0, seed: int = 0) -> None:
        if not 0 <= rate <= 1:
            raise ValueError(f"fault_rate: a probability between 0 and 1, got {rate!r}")
        if rate > 0 and not kinds:
            raise ValueError("fault_rate: give the faults to inject at that rate (for example 606,611,5xx,timeout)")
        self.kinds, self.rate = sorted(parse_faults(kinds)), rate
        self._rng = random.Random(f"faults:{seed}")
        self._queued: deque[str] = deque()

    def queue(self, *kinds: str) -> None:
        """The next REST calls get these faults, in order, before any drawn at the rate."""
        parse_faults(kinds)  # names a kind it does not know
        self._queued.extend(k.lower() for k in kinds)

    def draw(self) -> str | None:
        if self._queued:
            return self._queued.popleft()
        if self.rate and self._rng.random() < self.rate:
            return self._rng.choice(self.kinds)
        return None
