"""A local log of delivery states: a sender's save costs one write(2), not a store commit.

Every batch needs its state saved before the next one goes out (its acknowledgement, and the
next batch as in flight). Through the embedded store that save waits for the writer thread's
next group commit — behind whatever ingest is committing — and caps a subscription at one batch
per commit cycle. Appended here instead, a save is crash-safe on return (the page cache survives
a process crash; like the store's ``save_state``, not a power loss), and the store receives the
latest state of each subscription once a second (``checkpoint``).

Files: ``<directory>/delivery-state.<n>.log``, one JSON line per save (the state, and the control
revision it reflects), the newest line of a subscription wins. A checkpoint starts a new file,
writes what the old one held to the store, then
deletes it; after a crash, ``recover`` replays whatever files are left, oldest first. A torn last
line (power loss) is skipped. For one node only: a cluster keeps its states in the shared store.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from leadstream.store.base import Store

PREFIX, SUFFIX = "delivery-state.", ".log"

Saved = tuple[bytes, int]  # a delivery state, and the control revision it reflects


class StateLog:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._fd: int | None = None
        self._number = 0
        self._latest: dict[str, Saved] = {}  # written since the last checkpoint began

    def _files(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.directory.glob(f"{PREFIX}*{SUFFIX}"):
            number = path.name[len(PREFIX) : -len(SUFFIX)]
            if number.isdigit():
                found.append((int(number), path))
        return sorted(found)

    def recover(self) -> dict[str, Saved]:
        """The newest state of every subscription in files left by an earlier run (or, read by
        another process, the saves since the last checkpoint)."""
        latest: dict[str, Saved] = {}
        for _, path in self._files():
            try:
                lines = path.read_bytes().splitlines()
            except FileNotFoundError:  # read by another process: checkpointed and deleted since
                continue
            for line in lines:
                try:
                    record = orjson.loads(line)
                    latest[record["id"]] = orjson.dumps(record["state"]), int(record.get("applied", 0))
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue  # a torn line
        return latest

    def open(self) -> None:
        """Start a new file after any left over (call ``recover`` and checkpoint them first)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        files = self._files()
        self._number = files[-1][0] + 1 if files else 1
        self._fd = os.open(self._path(self._number), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def _path(self, number: int) -> Path:
        return self.directory / f"{PREFIX}{number}{SUFFIX}"

    def write(self, sub_id: str, state: bytes, applied: int) -> None:
        """Crash-safe (process crash) on return."""
        assert self._fd is not None, "the state log is not open"
        os.write(self._fd, b'{"id":%b,"applied":%d,"state":%b}\n' % (orjson.dumps(sub_id), applied, state))
        self._latest[sub_id] = state, applied

    async def checkpoint(self, store: Store) -> None:
        """Hand the newest states to the store and drop the files that held them."""
        if not self._latest or self._fd is None:
            return
        older, latest = self._files(), self._latest
        old_fd, self._latest = self._fd, {}
        self._number += 1
        self._fd = os.open(self._path(self._number), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.close(old_fd)
        try:
            for sub_id, (state, applied) in latest.items():
                await store.save_state(sub_id, state, applied)
        except BaseException:
            for sub_id, saved in latest.items():  # try again next time; newer saves win
                self._latest.setdefault(sub_id, saved)
            raise
        for number, path in older:
            if number < self._number:
                path.unlink(missing_ok=True)

    async def close(self, store: Store) -> None:
        await self.checkpoint(store)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        for _, path in self._files():
            path.unlink(missing_ok=True)

    async def adopt(self, store: Store, states: dict[str, Saved]) -> None:
        """Before ``open``: write recovered states to the store, then delete the files they came from."""
        for sub_id, (state, applied) in states.items():
            await store.save_state(sub_id, state, applied)
        for _, path in self._files():
            path.unlink(missing_ok=True)
