"""Read-your-writes for what a node keeps in memory of rows that any node may write (SPEC §12).

A node that holds a copy of some table (API keys, sources, alerts…) and reloads it now and then
would answer 404 for a row another node has just written. ``ReadThrough`` is the one rule for
all of them: a key this node does not know makes it reload from the store before it answers
"not found". Admin answers about a row that exists read the store too (``fresh``), so a change
made on another node shows at once; only hot paths (checking an API key on ingest) use the copy.

A key the store did not have either can be remembered as missing for ``quiet`` seconds, so that
requests naming keys that do not exist (a scanner guessing API key ids) cost one reload each per
key at most that often, not one per request.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

MAX_MISSES = 10_000  # remembered missing keys; beyond that the memory starts afresh


class ReadThrough(Generic[K, V]):
    def __init__(
        self, known: Callable[[K], V | None], reload: Callable[[], Awaitable[None]], *, quiet: float = 0.0
    ) -> None:
        self.known = known  # this node's copy
        self.reload = reload  # bring the copy up to the store
        self.quiet = quiet
        self._missing: dict[K, float] = {}

    async def find(self, key: K) -> V | None:
        """The row from this node's copy, or, on a miss, from the store (None: nobody has it)."""
        found = self.known(key)
        if found is not None:
            return found
        now = time.monotonic()
        if self.quiet and self._missing.get(key, -self.quiet) + self.quiet > now:
            return None
        await self.reload()
        found = self.known(key)
        if found is None and self.quiet:
            if len(self._missing) >= MAX_MISSES:
                self._missing.clear()
            self._missing[key] = now
        else:
            self._missing.pop(key, None)
        return found

    async def fresh(self, key: K) -> V | None:
        """The row as the store has it now (for admin answers, which must show other nodes' changes)."""
        await self.reload()
        self._missing.pop(key, None)
        return self.known(key)
