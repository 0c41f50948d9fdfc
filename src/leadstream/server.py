"""Running the API server (what `leadstream serve` does)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import orjson
import uvicorn
from rich.console import Console

from leadstream import runtime
from leadstream.api import create_app
from leadstream.logs import configure, log
from leadstream.settings import Settings


def serve(settings: Settings) -> None:
    configure(settings.log_format, settings.log_level)
    key, generated = settings.resolve_admin_key()
    if generated:
        # Printed once, on the run that created it; it is kept in the data dir with mode 0600.
        Console(stderr=True).print(
            f"[bold]Admin API key[/bold] (stored in {settings.data_dir / 'admin.key'}, shown once): {key}"
        )
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=5,
        # HTTPS with --tls-cert/--tls-key (both or neither: Settings checks).
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
    )
    if not settings.delivery_process:
        uvicorn.Server(config).run()
        return
    if settings.database_url:
        raise SystemExit("--delivery-process is for the embedded store (a cluster spreads delivery over its nodes)")
    delivery = DeliveryProcess(settings)
    delivery.start()
    _ServerThen(config, delivery.stop).run()


class _ServerThen(uvicorn.Server):
    """uvicorn's server, then ``after`` once it has stopped — before uvicorn re-raises the signal
    that stopped it (which ends this process before any ``finally`` of ours could run)."""

    def __init__(self, config: uvicorn.Config, after: Callable[[], None]) -> None:
        super().__init__(config)
        self.after = after

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                self.after()


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

    def start(self) -> None:
        runtime.prepare(self.settings)  # made here first, so the two processes cannot each make their own
        self._spawn()
        self._watcher = threading.Thread(target=self._watch, name="delivery-process-watch", daemon=True)
        self._watcher.start()

    def _secret(self, name: str) -> str | None:
        value = getattr(self.settings, name)
        return value.get_secret_value() if value is not None else None

    def _spawn(self) -> None:
        document = self.settings.model_dump(mode="json")
        document["master_key"] = self._secret("master_key")  # through the pipe: never in argv or logs
        document["admin_key"] = None  # delivery needs no admin key
        self.proc = subprocess.Popen([sys.executable, "-m", "leadstream.delivery.worker"], stdin=subprocess.PIPE)
        assert self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps(document) + b"\n")
        self.proc.stdin.flush()

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
                self._spawn()

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
