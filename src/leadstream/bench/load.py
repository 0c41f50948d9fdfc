"""The load generator: publishes records over HTTP, as fast as they are accepted or at a fixed rate.

Run as its own process (``python -m leadstream.bench.load …``). Every ``--report`` seconds it
prints one JSON line ``{"t", "sent", "accepted", "failed", "requests"}`` (t in µs since the
epoch) and a last one with ``"done": true``, so the harness can follow it live.

At a fixed rate, request k is due at start + k·batch/rate and waits for its slot; a connection
that falls behind sends at once (the offered rate is kept as long as the server keeps up, and
the lag shows in the delays). Records are stamped when their request is built.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import aiohttp
import orjson

from leadstream.bench.procs import run_event_loop
from leadstream.bench.records import body


class Load:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.next_seq = args.first
        self.end_seq = args.first + args.count if args.count else None
        self.sent = self.accepted = self.failed = self.requests = 0
        self.errors: list[str] = []

    def _take(self) -> tuple[int, int] | None:
        """The next (first sequence number, size) to send, or None when the count is reached."""
        first = self.next_seq
        size = self.args.batch if self.end_seq is None else min(self.args.batch, self.end_seq - first)
        if size <= 0:
            return None
        self.next_seq += size
        return first, size

    async def _connection(self, session: aiohttp.ClientSession, start: float, deadline: float) -> None:
        url = f"{self.args.url}/v1/streams/activity/events"
        headers = {"Authorization": f"Bearer {self.args.key}", "Content-Type": "application/json"}
        while time.monotonic() < deadline:
            taken = self._take()
            if taken is None:
                return
            first, size = taken
            if self.args.rate:
                due = start + (first - self.args.first) / self.args.rate
                if (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
            payload = body(self.args.tag, first, size)
            self.sent += size
            try:
                async with session.post(url, data=payload, headers=headers) as response:
                    answer = await response.read()
                    self.requests += 1
                    if response.status == 200:
                        self.accepted += orjson.loads(answer)["accepted"]
                    else:
                        self.failed += size
                        self._note(f"{response.status}: {answer[:200]!r}")
            except (TimeoutError, aiohttp.ClientError) as exc:
                self.failed += size
                self._note(f"{type(exc).__name__}: {exc}")

    def _note(self, error: str) -> None:
        if len(self.errors) < 5:
            self.errors.append(error)

    def report(self, done: bool = False) -> None:
        line: dict[str, object] = {
            "t": time.time_ns() // 1000,
            "sent": self.sent,
            "accepted": self.accepted,
            "failed": self.failed,
            "requests": self.requests,
        }
        if done:
            line.update(done=True, errors=self.errors)
        sys.stdout.write(orjson.dumps(line).decode() + "\n")
        sys.stdout.flush()

    async def run(self) -> None:
        start = time.monotonic()
        deadline = start + self.args.duration if self.args.duration else float("inf")
        connector = aiohttp.TCPConnector(limit=self.args.connections)
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            workers = [
                asyncio.create_task(self._connection(session, start, deadline)) for _ in range(self.args.connections)
            ]
            reporting = asyncio.create_task(self._report_every(self.args.report))
            await asyncio.gather(*workers)
            reporting.cancel()
        self.report(done=True)

    async def _report_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            self.report()


def main() -> None:
    parser = argparse.ArgumentParser(description="leadstream bench: the load generator")
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", default="")
    parser.add_argument("--tag", required=True, help="GUID prefix, unique per run (letters and digits)")
    parser.add_argument("--first", type=int, default=0, help="first sequence number")
    parser.add_argument("--count", type=int, default=0, help="records to send (0: until --duration)")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds (0: until --count)")
    parser.add_argument("--rate", type=float, default=0.0, help="records/s offered (0: as fast as accepted)")
    parser.add_argument("--batch", type=int, default=1000, help="records per request")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--report", type=float, default=0.25, help="seconds between progress lines")
    run_event_loop(Load(parser.parse_args()).run())


if __name__ == "__main__":
    main()
