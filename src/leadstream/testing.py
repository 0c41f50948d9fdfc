"""Running leadstream as a user does, for the demo, the benchmark and the tests.

``ServerProcess`` is ``leadstream serve`` in a subprocess on 127.0.0.1; ``free_port`` finds a
port for it; ``wait_until`` waits on a condition with a deadline (never a bare sleep that hopes).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar, overload

import aiohttp

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@overload
async def wait_until(
    condition: Callable[[], Awaitable[T | None]], timeout: float = ..., *, interval: float = ..., what: str = ...
) -> T: ...


@overload
async def wait_until(
    condition: Callable[[], T | None], timeout: float = ..., *, interval: float = ..., what: str = ...
) -> T: ...


async def wait_until(
    condition: Callable[[], object], timeout: float = 10.0, *, interval: float = 0.02, what: str = "the condition"
) -> object:
    """Poll ``condition`` (plain or async) until it returns something truthy, and return that (so
    never None).

    Raises TimeoutError naming ``what`` after ``timeout`` seconds; an exception from ``condition``
    ends the wait at once (a server that exited need not be waited for).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)


def log_tail(path: Path, chars: int = 2000) -> str:
    """The end of a process's log file, for an error message."""
    try:
        return path.read_text(errors="replace")[-chars:].strip() or "(no output)"
    except OSError:
        return "(no log)"


class ServerExited(RuntimeError):
    """``leadstream serve`` exited while it was expected to run."""


class ServerProcess:
    """``leadstream serve`` as a subprocess on 127.0.0.1, as a user runs it.

    ``args`` are more ``serve`` flags; ``env`` is added to this process's environment (or replace
    ``.env`` before ``start``). The operator key is ``key`` (a fresh one unless given). Endpoints on
    loopback are allowed, since the receivers of the demo, the bench and the tests live there.
    With ``ssl_context`` (one that trusts its certificate; ``--tls-cert``/``--tls-key`` among
    ``args``) it is reached over HTTPS.
    stdout and stderr go to ``log`` (by default ``server-<port>.log`` beside ``data_dir``).
    """

    def __init__(
        self,
        data_dir: Path,
        *args: str,
        port: int | None = None,
        key: str | None = None,
        env: dict[str, str] | None = None,
        log: Path | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.args = args
        self.port = port or free_port()
        self.ssl_context = ssl_context
        self.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{self.port}"
        self.key = key or "lsk_" + secrets.token_urlsafe(24)
        self.env = {**os.environ, "LEADSTREAM_ADMIN_KEY": self.key, **(env or {})}
        self.log = log or data_dir.parent / f"server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    @property
    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "leadstream.cli",
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--port",
            str(self.port),
            "--allow-private-endpoints",
            *self.args,
        ]

    @property
    def pid(self) -> int:
        assert self.proc is not None, "start() first"
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def start(self, timeout: float = 30.0) -> ServerProcess:
        """Start it and return once it answers /healthz; ServerExited (with its log) if it exits first."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:  # noqa: ASYNC230  (a local file, opened once; the child keeps its own copy)
            # Its own session: a Ctrl-C in the terminal reaches only the owner, which stops the server
            # when it is done with it (the demo drains first).
            self.proc = subprocess.Popen(  # noqa: ASYNC220  (returns at once; start() then waits on /healthz)
                self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        async with aiohttp.ClientSession() as session:

            async def healthy() -> bool:
                if not self.running():
                    code = self.proc.returncode if self.proc else None
                    raise ServerExited(f"leadstream serve exited with {code}: {self.tail()}")
                try:
                    async with session.get(self.url + "/healthz", ssl=self.ssl_context or True) as answer:
                        return answer.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_until(healthy, timeout, what="leadstream serve to answer /healthz")
        return self

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, as a service manager stops it; SIGKILL if it has not exited within ``grace`` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to clean up."""
        assert self.proc is not None, "start() first"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def tail(self, chars: int = 2000) -> str:
        return log_tail(self.log, chars)
