"""The data directory: one server at a time, and commands that refuse a directory holding nothing.

Two servers on one directory would each append to the store and overwrite each other's delivery
state, so ``leadstream serve`` holds an OS lock (``flock``) on ``server.lock`` for as long as it
runs. The kernel drops the lock when the process ends, however it ends, so a crash never leaves
a stale lock behind; the file only names the PID of the last holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_FILE = "server.lock"
STORE_FILE = "leadstream.db"
KEYS_DIR = "keys"


class DataDirError(Exception):
    """The data directory cannot be used as asked: ``str()`` is one line saying why and what to do."""


def _holder(lock_path: Path) -> str:
    with contextlib.suppress(OSError, ValueError):
        return f"pid {int(lock_path.read_text().strip())}"
    return "another process"


def hold(data_dir: Path) -> int:
    """Lock ``data_dir`` for this process (an open descriptor, to keep open while serving).

    Raises ``DataDirError`` naming the holder's PID when another server has it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lock_path = data_dir / LOCK_FILE
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)  # not inherited by child processes
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirError(
            f"{data_dir} is in use by another leadstream server ({_holder(lock_path)}): stop it, "
            "or give this one its own --data-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def holder_if_locked(data_dir: Path) -> str | None:
    """Who holds ``data_dir`` now ("pid 123"), or None when no server runs on it."""
    lock_path = data_dir / LOCK_FILE
    if not lock_path.exists():
        return None
    fd = os.open(lock_path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(lock_path)
    finally:
        os.close(fd)  # closing drops our own lock at once
    return None


def require_existing(data_dir: Path, what: str) -> None:
    """Stop a command about to act on a data directory that holds no server's files (a missing
    ``--data-dir``, run from elsewhere, would otherwise create a new empty one)."""
    if not (data_dir / what).exists():
        raise DataDirError(
            f"{data_dir.resolve()} holds no leadstream data (no {what}): give the server's --data-dir "
            "(or set LEADSTREAM_DATA_DIR)"
        )
