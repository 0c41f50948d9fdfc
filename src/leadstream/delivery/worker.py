"""The delivery process (``leadstream serve --delivery-process``): delivery on a core of its own.

``leadstream serve`` starts it with ``python -m leadstream.delivery.worker`` and writes the
settings (JSON, one line) to its stdin, then keeps that pipe open. Here the service runs in
the ``DELIVERY`` role (``leadstream.runtime``): the same data directory's store follows the
appends the other process commits, the engine holds every subscription and follows the admin
changes the API process writes, the state log is checkpointed to the store every second (what the
API's views show), and retention runs.

The process stops, saving every subscription's state, on SIGTERM or when its stdin reaches end
of file — the server closed it, or died: no orphan outlives the server. A lock file keeps a
second delivery process of the same data directory (a restarted server's) waiting until the
first has stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import sys
from pathlib import Path

from leadstream import metrics_export, runtime
from leadstream.logs import configure, log
from leadstream.settings import Settings

LOCK_FILE = "delivery.lock"


async def deliver(settings: Settings, stop: asyncio.Event, ready: int | None = None) -> None:
    """Deliver every subscription of ``settings.data_dir`` until ``stop`` is set; once delivering,
    write a byte to the descriptor ``ready`` (the server waits for it) and close it."""
    lock = await _exclusive(settings.data_dir / LOCK_FILE, stop)
    if lock is None:
        return
    try:
        async with runtime.running(settings, runtime.Role.DELIVERY) as service:
            if ready is not None:
                with contextlib.suppress(OSError):  # the server stopped waiting
                    os.write(ready, b"1")
                os.close(ready)
            delivery = service.delivery
            assert delivery is not None  # (the delivery role always has its engine)
            while not stop.is_set():  # the API process serves these on its /metrics and charts, and asks for them
                await asyncio.to_thread(metrics_export.export_if_wanted, settings.data_dir)
                if metrics_export.readings_wanted(settings.data_dir):
                    await asyncio.to_thread(
                        metrics_export.answer_readings, settings.data_dir, delivery.chart_readings()
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), settings.metrics_export_interval)
    finally:
        os.close(lock)


async def _exclusive(path: Path, stop: asyncio.Event) -> int | None:
    """The data directory's delivery lock (an open descriptor), or None if told to stop first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            log.info("waiting for the previous delivery process to stop", lock=str(path))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)
        if stop.is_set():
            os.close(fd)
            return None


def _until_end_of_file(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Our stdin is the server's pipe: end of file means the server has gone (or wants us gone)."""
    if not os.read(sys.stdin.fileno(), 4096):
        loop.remove_reader(sys.stdin.fileno())
        stop.set()


async def main() -> None:
    # Ctrl-C reaches the whole process group: the server stops first, then closes our stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    settings = Settings.model_validate_json(await asyncio.to_thread(sys.stdin.buffer.readline))
    configure(settings.log_format, settings.log_level)
    sys.setswitchinterval(settings.gil_switch_interval)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), _until_end_of_file, loop, stop)
    await deliver(settings, stop, int(sys.argv[1]) if len(sys.argv) > 1 else None)
    log.info("delivery process stopped")


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
