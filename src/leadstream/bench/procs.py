"""The benchmark's processes: starting a part, following its JSON lines, measuring its CPU and memory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson
import psutil

from leadstream.testing import log_tail, wait_until


class Running(Protocol):
    """A process the monitor can follow: a ``Part`` or a ``ServerProcess``."""

    @property
    def pid(self) -> int: ...

    def running(self) -> bool: ...


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run a part's main coroutine on uvloop (as the server does), quietly on Ctrl-C/SIGTERM."""
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(main)


class PartFailed(RuntimeError):
    """A part of the benchmark exited early or did not come up."""


@dataclass
class Part:
    """One process of the benchmark. Its stdout is JSON lines; stderr goes to a log file."""

    role: str  # "server", "sink", "load", "bare-ingest", … (for the CPU breakdown)
    argv: list[str]
    log: Path
    env: dict[str, str] | None = None
    proc: asyncio.subprocess.Process | None = None
    lines: list[dict[str, Any]] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    @classmethod
    def module(cls, role: str, module: str, *args: str, log: Path, env: dict[str, str] | None = None) -> Part:
        return cls(role, [sys.executable, "-m", module, *args], log, env)

    async def start(self) -> Part:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:  # noqa: ASYNC230  (a local file, opened once; the child keeps its own copy)
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env={**os.environ, **(self.env or {})},
                start_new_session=True,  # a Ctrl-C in the terminal goes to the harness, which stops the parts
            )
        self._reader = asyncio.create_task(self._read())
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            with contextlib.suppress(orjson.JSONDecodeError):
                self.lines.append(orjson.loads(raw))

    @property
    def last(self) -> dict[str, Any]:
        return self.lines[-1] if self.lines else {}

    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def first_line(self, timeout: float = 30.0) -> dict[str, Any]:
        """The first JSON line (a part prints one when it is ready)."""

        def ready() -> bool:
            if not self.lines and self._reader is not None and self._reader.done():
                raise PartFailed(f"{self.role} exited before it was ready: {self.tail()}")
            return bool(self.lines)

        try:
            await wait_until(ready, timeout, what=f"{self.role} to be ready")
        except TimeoutError:
            raise PartFailed(f"{self.role} was not ready after {timeout:.0f}s: {self.tail()}") from None
        return self.lines[0]

    async def wait(self, timeout: float | None = None) -> int:
        assert self.proc is not None
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        if self._reader is not None:
            await self._reader
        return code

    async def stop(self, grace: float = 10.0) -> None:
        if not self.running():
            if self._reader is not None:
                await self._reader
            return
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            await self.wait(grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.wait()

    def tail(self, chars: int = 1500) -> str:
        return log_tail(self.log, chars)


@dataclass
class Sample:
    t: float  # time.time()
    rss: dict[str, int]  # bytes per role (a role's processes and their children summed)
    cpu: dict[str, float]  # % of one core per role since the previous sample
    machine: float = 0.0  # the whole machine's CPU since the previous sample, % of one core
    # The same per process of a role that has children (the server's delivery process):
    # "<role> main" and "<role> children", already counted in ``cpu``.
    split: dict[str, float] = field(default_factory=dict)

    @property
    def others(self) -> float:
        """CPU used by processes that are not parts of the benchmark (other work on the machine)."""
        return max(0.0, self.machine - sum(self.cpu.values()))


class Monitor:
    """Samples CPU and RSS of every running part (and its children) with psutil."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.watched: list[tuple[str, Running]] = []  # (role, process)
        self.samples: list[Sample] = []
        self._cpu_seen: dict[int, float] = {}
        self._procs: dict[int, psutil.Process] = {}
        self.peak_rss: dict[str, int] = {}
        self.cores = psutil.cpu_count() or 1
        self._me = psutil.Process()
        self._me_seen: float | None = None
        psutil.cpu_percent()  # starts the machine-wide counter

    def watch(self, role: str, process: Running) -> None:
        self.watched.append((role, process))

    def _tree(self, process: Running) -> list[psutil.Process]:
        try:
            root = self._procs.get(process.pid) or self._procs.setdefault(process.pid, psutil.Process(process.pid))
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def sample(self) -> Sample:
        rss: dict[str, int] = {}
        cpu: dict[str, float] = {}
        split: dict[str, float] = {}
        now = time.time()
        elapsed = (now - self.samples[-1].t) if self.samples else None
        for role, process in list(self.watched):
            if not process.running():
                self.watched.remove((role, process))
                continue
            tree = self._tree(process)
            for proc in tree:
                try:
                    with proc.oneshot():
                        used = sum(proc.cpu_times()[:2])
                        memory = proc.memory_info().rss
                except psutil.Error:
                    continue
                rss[role] = rss.get(role, 0) + memory
                before = self._cpu_seen.get(proc.pid)
                self._cpu_seen[proc.pid] = used
                if before is not None and elapsed:
                    percent = 100.0 * (used - before) / elapsed
                    cpu[role] = cpu.get(role, 0.0) + percent
                    if len(tree) > 1:
                        part = f"{role} main" if proc is tree[0] else f"{role} children"
                        split[part] = split.get(part, 0.0) + percent
        try:  # the harness itself (not its children: they are the parts)
            used = sum(self._me.cpu_times()[:2])
            if self._me_seen is not None and elapsed:
                cpu["harness"] = 100.0 * (used - self._me_seen) / elapsed
            self._me_seen = used
        except psutil.Error:
            pass
        for role, value in rss.items():
            self.peak_rss[role] = max(self.peak_rss.get(role, 0), value)
        sample = Sample(now, rss, cpu, psutil.cpu_percent() * self.cores if elapsed else 0.0, split)
        self.samples.append(sample)
        return sample

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def cpu_between(self, since: float, until: float) -> dict[str, float]:
        """Mean CPU (% of one core) per role over the samples taken in (since, until], per
        process of a role with children ("server main", "server children"), and ``other`` for
        the rest of the machine (work that is not the benchmark's)."""
        chosen = [s for s in self.samples if since < s.t <= until and s.machine]
        means = {}
        for role in sorted({role for s in chosen for role in s.cpu}):
            values = [s.cpu[role] for s in chosen if role in s.cpu]
            means[role] = round(sum(values) / len(values), 1)
        for part in sorted({part for s in chosen for part in s.split}):  # a sample without it: 0
            means[part] = round(sum(s.split.get(part, 0.0) for s in chosen) / len(chosen), 1)
        if chosen:
            means["other"] = round(sum(s.others for s in chosen) / len(chosen), 1)
        return means


def cpu_seconds(process: Running) -> float:
    """User + system CPU seconds a process and its children have used so far."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(process.pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += sum(proc.cpu_times()[:2])
    return total
