"""Running the API server (what `leadstream serve` does)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import uvicorn
from rich.console import Console
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from leadstream import datadir, runtime
from leadstream.api import create_app
from leadstream.logs import configure, log
from leadstream.settings import Settings

_SLOW = b"the request headers did not arrive in time"
HEADERS_TOO_SLOW = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_SLOW), _SLOW)
)


def header_deadline_protocol(timeout: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol, plus what uvicorn lacks: a request's headers must arrive
    within ``timeout`` seconds of its first byte (or of connecting), else 408 and the connection
    closes — so that slowloris connections cannot hold file descriptors forever."""

    class HeaderDeadline(HttpToolsProtocol):
        _header_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_header_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_header_deadline()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm_header_deadline()

        def on_headers_complete(self) -> None:
            self._disarm_header_deadline()
            super().on_headers_complete()

        def _arm_header_deadline(self) -> None:
            if self._header_deadline is None:
                self._header_deadline = self.loop.call_later(timeout, self._headers_too_slow)

        def _disarm_header_deadline(self) -> None:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def _headers_too_slow(self) -> None:
            self._header_deadline = None
            if not self.transport.is_closing():
                self.transport.write(HEADERS_TOO_SLOW)
                self.transport.close()

    return HeaderDeadline


def serve(settings: Settings) -> None:
    """Run until stopped. Raises ``DataDirError`` when another server holds the data directory."""
    configure(settings.log_format, settings.log_level)
    sys.setswitchinterval(settings.gil_switch_interval)
    lock = datadir.hold(settings.data_dir)  # held until this process ends; a crash releases it
    try:
        _serve(settings)
    finally:
        os.close(lock)


def _serve(settings: Settings) -> None:
    key, generated = settings.resolve_admin_key()
    if generated:
        # Printed once, on the run that created it; it is kept in the data dir with mode 0600.
        Console(stderr=True).print(
            f"[bold]Admin API key[/bold] (stored in {settings.data_dir / 'admin.key'}, shown once): {key}"
        )
    app = create_app(settings)
    config = uvicorn.Config(
        AccessLog(app) if settings.access_log else app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=header_deadline_protocol(settings.http_header_timeout),
        timeout_keep_alive=int(max(1, settings.http_idle_timeout)),
        limit_concurrency=settings.http_max_connections,  # beyond: 503 at once, nothing held
        access_log=False,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=5,
        # HTTPS with --tls-cert/--tls-key (both or neither: Settings checks).
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
    )
    if not settings.delivery_process:
        _Server(config, settings).run()
        return
    if settings.database_url:
        raise SystemExit("--delivery-process is for the embedded store (a cluster spreads delivery over its nodes)")
    delivery = DeliveryProcess(settings)
    delivery.start()
    _Server(config, settings, after=delivery.stop).run()


def key_source(settings: Settings) -> str:
    """Where the operator key comes from, said without the key."""
    if settings.admin_key is not None:
        return "LEADSTREAM_ADMIN_KEY"
    return str(settings.data_dir / "admin.key")


class _Server(uvicorn.Server):
    """uvicorn's server that says where it listens once it does, and runs ``after`` once it has
    stopped — before uvicorn re-raises the signal that stopped it (which ends this process
    before any ``finally`` of ours could run)."""

    def __init__(self, config: uvicorn.Config, settings: Settings, after: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self.settings = settings
        self.after = after

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:  # bound: say where, on what, and how to get in
            settings = self.settings
            url = f"{'https' if settings.tls_cert else 'http'}://{settings.host}:{settings.port}"
            where: dict[str, Any] = {"url": url, "docs": url + "/docs", "data_dir": str(settings.data_dir.resolve())}
            if settings.database_url:
                where["database"] = redacted_url(settings.database_url)
            else:
                where["store"] = str((settings.data_dir / "leadstream.db").resolve())
            if settings.delivery_process:
                where["delivery_process"] = True
            where["gil_switch_interval_ms"] = round(sys.getswitchinterval() * 1000, 3)
            log.info("leadstream listening", **where, admin_key=key_source(settings), pid=os.getpid())

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                log.info("leadstream stopping")
                if self.after is not None:
                    self.after()


def redacted_url(url: str) -> str:
    """A database URL without its password, for the log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


class AccessLog:
    """``--access-log``: one structured line per HTTP request (method, path, status, duration),
    never its headers or query (keys and tokens live there)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def sending(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            client = scope.get("client")
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status or 500,
                ms=round((time.perf_counter() - started) * 1000, 1),
                client=client[0] if client else None,
            )


class DeliveryProcess:
    """``--delivery-process``: the delivery engine in a child process (``leadstream.delivery.worker``),
    restarted if it dies. It reads the settings from its stdin, and stops when that pipe closes —
    which happens too when this process dies, however it dies."""

    def __init__(self, settings: Settings, restart_after: float = 1.0) -> None:
        self.settings = settings
        self.restart_after = restart_after
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self._lock = threading.Lock()  # no restart once stop has begun

    def start(self, ready_within: float = 120.0) -> None:
        """Start it and wait until it delivers, so that the server listens with delivery running."""
        runtime.prepare(self.settings)  # made here first, so the two processes cannot each make their own
        ready = self._spawn()
        if not select.select([ready], [], [], ready_within)[0] or not os.read(ready, 1):
            log.warning("the delivery process is not running yet; listening anyway", waited=ready_within)
        os.close(ready)
        self._watcher = threading.Thread(target=self._watch, name="delivery-process-watch", daemon=True)
        self._watcher.start()

    def _secret(self, name: str) -> str | None:
        value = getattr(self.settings, name)
        return value.get_secret_value() if value is not None else None

    def _spawn(self) -> int:
        """Start the child; returns the read end of the pipe it writes one byte to once it delivers."""
        document = self.settings.model_dump(mode="json")
        document["master_key"] = self._secret("master_key")  # through the pipe: never in argv or logs
        document["admin_key"] = None  # delivery needs no admin key
        ready, ready_w = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "leadstream.delivery.worker", str(ready_w)],
            stdin=subprocess.PIPE,
            pass_fds=(ready_w,),
        )
        os.close(ready_w)
        assert self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps(document) + b"\n")
        self.proc.stdin.flush()
        return ready

    def _watch(self) -> None:
        while True:
            assert self.proc is not None
            code = self.proc.wait()
            if self._stopping.wait(self.restart_after):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                log.error("the delivery process exited; starting it again", code=code)
                os.close(self._spawn())

    def stop(self, timeout: float = 15.0) -> None:
        """Close its stdin (it saves every state and exits); kill it if it takes too long."""
        with self._lock:
            self._stopping.set()
            proc = self.proc
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("the delivery process did not stop in time; killed")
            proc.kill()
            proc.wait()
