"""Publish a simulated platform's records to a leadstream server at a steady rate."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson

from leadstream.errors import LeadstreamError
from leadstream.events import MAX_RECORDS, STREAMS
from leadstream.sim.platform import DEFAULT_TENANTS, Platform

TICK = 0.05  # seconds between sends: records due in one tick go out together
RETRIES = 5  # for connection errors and 5xx: records are idempotent by key, so resending is safe
MAX_ERRORS_KEPT = 20


class PublishError(LeadstreamError):
    """The server refused a request as a whole (bad key, unreachable, …); ``detail`` says why."""


@dataclass
class StreamCounts:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0


@dataclass
class SimResult:
    streams: dict[str, StreamCounts] = field(default_factory=lambda: {s: StreamCounts() for s in STREAMS})
    published: int = 0  # records sent (accepted + duplicates + rejected)
    requests: int = 0
    elapsed: float = 0.0
    errors: list[str] = field(default_factory=list)  # the first rejection messages, "stream[index]: …"

    @property
    def accepted(self) -> int:
        return sum(c.accepted for c in self.streams.values())

    @property
    def duplicates(self) -> int:
        return sum(c.duplicates for c in self.streams.values())

    @property
    def rejected(self) -> int:
        return sum(c.rejected for c in self.streams.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "published": self.published,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "requests": self.requests,
            "elapsed": round(self.elapsed, 3),
            "streams": {s: vars(c) for s, c in self.streams.items()},
            "errors": self.errors,
        }


async def _post(session: aiohttp.ClientSession, url: str, key: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    body = orjson.dumps(records)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    problem = ""
    for attempt in range(RETRIES + 1):
        if attempt:
            await asyncio.sleep(min(0.1 * 2**attempt, 3.0))
        try:
            async with session.post(url, data=body, headers=headers) as response:
                text = await response.read()
                if response.status in (200, 422):
                    return orjson.loads(text)
                try:
                    problem = orjson.loads(text).get("detail") or text.decode(errors="replace")
                except (orjson.JSONDecodeError, AttributeError):
                    problem = text.decode(errors="replace")[:200]
                problem = f"{url} answered {response.status}: {problem}"
                if response.status < 500:
                    raise PublishError(problem, status=response.status)
        except aiohttp.ClientError as exc:
            problem = f"cannot reach {url}: {exc}"
    raise PublishError(f"{problem} (gave up after {RETRIES + 1} attempts)", status=503)


def _count(result: SimResult, stream: str, answer: dict[str, Any], sent: int) -> None:
    counts = result.streams[stream]
    counts.accepted += answer.get("accepted", 0)
    counts.duplicates += answer.get("duplicates", 0)
    rejected = answer.get("rejected", [])
    counts.rejected += len(rejected)
    for rejection in rejected[: max(0, MAX_ERRORS_KEPT - len(result.errors))]:
        result.errors.append(f"{stream}[{rejection.get('index')}]: {'; '.join(rejection.get('errors', []))}")
    result.published += sent
    result.requests += 1


async def _pause(seconds: float, stop: asyncio.Event | None) -> None:
    if stop is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def simulate(
    server: str,
    key: str,
    *,
    rate: float,
    duration: float,
    seed: int = 0,
    batch: int = 500,
    on_progress: Callable[[SimResult], None] | None = None,
    on_published: Callable[[str, list[dict[str, Any]]], None] | None = None,
    tenants: Sequence[str] = DEFAULT_TENANTS,
    stop: asyncio.Event | None = None,
) -> SimResult:
    """Publish ``rate × duration`` records, paced at ``rate`` a second, then return the counts.

    Records go to ``POST {server}/v1/streams/{stream}/events`` every ``TICK`` in batches of at
    most ``batch``, one request at a time, so each stream is ingested in the platform's order.
    When the server is slower than ``rate`` the run takes longer than ``duration``; setting
    ``stop`` ends it early (with the counts so far). Activity dates follow the wall clock.
    ``on_published(stream, records)`` sees the records of each request the server stored, in
    publish order (the demo uses it to know what every subscription must receive).
    Raises PublishError when the server refuses a request as a whole (bad key, unreachable).
    """
    if rate <= 0 or duration <= 0:
        raise ValueError("rate and duration must be positive")
    batch = max(1, min(batch, MAX_RECORDS))
    platform = Platform(seed, tenants, start=datetime.now(UTC).replace(microsecond=0), events_per_second=rate)
    total = max(1, round(rate * duration))
    result = SimResult()
    url = server.rstrip("/") + "/v1/streams/{}/events"
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        while result.published < total and not (stop is not None and stop.is_set()):
            due = min(int(rate * (time.monotonic() - started + TICK)), total) - result.published
            if due <= 0:
                await _pause(TICK, stop)
                continue
            by_stream: dict[str, list[dict[str, Any]]] = {}
            for stream, record in platform.next_records(min(due, batch * len(STREAMS))):
                by_stream.setdefault(stream, []).append(record)
            for stream, chunk_source in by_stream.items():
                for i in range(0, len(chunk_source), batch):
                    chunk = chunk_source[i : i + batch]
                    answer = await _post(session, url.format(stream), key, chunk)
                    _count(result, stream, answer, len(chunk))
                    if on_published is not None:
                        refused = {r.get("index") for r in answer.get("rejected", [])}
                        on_published(stream, [r for i, r in enumerate(chunk) if i not in refused])
                    result.elapsed = time.monotonic() - started
                    if on_progress is not None:
                        on_progress(result)
    result.elapsed = time.monotonic() - started
    return result
