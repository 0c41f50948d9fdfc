"""One simulated Marketo instance: its activity types, leads, activities, tokens and limits.

``MarketoInstance`` is the model and the server at once: tests use it in-process
(``async with MarketoInstance(rate=0) as sim: sim.inject(20_000)``, then a client against
``sim.url``) and read back what it holds (``sim.truth()``) and what it was asked (``sim.stats``).
The HTTP side (routes, envelope, faults) is ``leadstream.sim.marketo.app``.

Traffic is generated lazily: before each call (and each read of the truth) the activities dated up
to the clock are appended, so an instance that nobody asks costs nothing and an injected clock
(``clock=``) moves time for tests. Everything follows ``seed``: the same seed, calls and clock give
the same records, tokens aside.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from aiohttp import web

from leadstream.catalog import ActivityType, Catalog
from leadstream.catalog.model import CUSTOM_ACTIVITY_MIN_ID, parse_activity_type
from leadstream.sim.marketo.app import MAX_BATCH, MAX_URI_LENGTH, make_app
from leadstream.sim.marketo.faults import Faults, parse_faults
from leadstream.sim.marketo.identity import AccessTokens
from leadstream.sim.marketo.limits import CallStats, InstanceLimits, Limits
from leadstream.sim.marketo.log import ActivityLog, Scan, StoredActivity
from leadstream.sim.marketo.paging import Cursor
from leadstream.sim.marketo.traffic import ActivityFactory, Schedule
from leadstream.sim.platform import LEADS_PER_TENANT
from leadstream.tenants import MUNCHKIN_RE, not_a_munchkin_id

FIRST_ACTIVITY_ID = 400_000_000


class MarketoInstance:
    """A simulated instance on 127.0.0.1 (``port=0``: any free port). See the module docstring."""

    def __init__(
        self,
        *,
        munchkin_id: str = "123-ABC-456",
        client_id: str = "leadstream-sim",
        client_secret: str | None = None,
        rate: float = 10.0,
        seed: int = 0,
        activity_type_ids: Sequence[int] | None = None,
        custom_types: Iterable[Mapping[str, Any]] = (),
        leads: int = LEADS_PER_TENANT,
        token_ttl: float = 3600.0,
        limits: Limits | None = None,
        faults: Faults | None = None,
        hang_seconds: float = 35.0,
        latency: float = 0.0,
        short_page_rate: float = 0.1,
        scan_limit: int = 10_000,
        max_uri_length: int = MAX_URI_LENGTH,
        max_records: int = 250_000,
        clock: Callable[[], float] = time.time,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if not MUNCHKIN_RE.fullmatch(munchkin_id):
            raise ValueError(not_a_munchkin_id(munchkin_id, "munchkin_id"))
        if not 0 <= short_page_rate <= 1:
            raise ValueError(f"short_page_rate: a probability between 0 and 1, got {short_page_rate!r}")
        if scan_limit < MAX_BATCH:
            raise ValueError(f"scan_limit: at least {MAX_BATCH} activities per call, got {scan_limit}")
        self.munchkin_id, self.client_id = munchkin_id, client_id
        self.client_secret = client_secret or secrets.token_urlsafe(18)
        self.seed, self.clock = seed, clock
        self.types: dict[int, ActivityType] = dict(Catalog().activity_types)
        for i, raw in enumerate(custom_types):
            custom = parse_activity_type(raw, f"custom_types[{i}]")
            if not custom.custom:
                raise ValueError(
                    f"custom_types[{i}].id: custom activity types have ids >= {CUSTOM_ACTIVITY_MIN_ID}, got {custom.id}"
                )
            self.types[custom.id] = custom
        self._rng = random.Random(seed)
        self.factory = ActivityFactory(munchkin_id, self.types, self._rng, leads=leads)
        self._traffic_types, self._traffic_weights = self.factory.traffic_types(activity_type_ids)
        now = clock()
        self.schedule = Schedule(now, rate)
        self.log = ActivityLog(max_records)
        self._next_id = FIRST_ACTIVITY_ID
        self.tokens = AccessTokens(token_ttl)
        self.stats = CallStats()
        self.limits = InstanceLimits(limits or Limits(), self.stats, now)
        self.faults = faults or Faults()
        self.hang_seconds, self.latency = hang_seconds, latency
        self.short_page_rate, self.scan_limit, self.max_uri_length = short_page_rate, scan_limit, max_uri_length
        self.access_denied = False  # True: every REST call gets 603 (the API user's role or IP allowlist)
        self._requests = 0
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- traffic and the ground truth ------------------------------------------------------------
    def advance(self) -> None:
        """Append the traffic dated up to now."""
        for _ in range(self.schedule.due(self.clock())):
            moment = self.schedule.next_moment()
            type_id = self._rng.choices(self._traffic_types, self._traffic_weights)[0]
            self._append(self.factory.build(type_id, moment, self._take_id()), moment)

    def inject(
        self,
        count: int,
        type_ids: Sequence[int] | None = None,
        *,
        at: float | None = None,
    ) -> list[dict[str, Any]]:
        """``count`` activities dated ``at`` (default now), types in turn from ``type_ids`` (default: the traffic's)."""
        if count < 0:
            raise ValueError(f"count: must be 0 or more, got {count}")
        chosen = list(type_ids) if type_ids is not None else self._traffic_types
        for type_id in chosen:
            if type_id not in self.types:
                raise ValueError(f"type_ids: {type_id} is not an activity type of this instance")
        if not chosen and count:
            raise ValueError("type_ids: give at least one activity type")
        self.advance()
        last = self.log.last
        moment = max(self.clock() if at is None else at, last.second if last else 0.0)
        records = []
        for i in range(count):
            record = self.factory.build(chosen[i % len(chosen)], moment, self._take_id())
            self._append(record, moment)
            records.append(record)
        return records

    def truth(self, type_ids: Iterable[int] | None = None, *, since: float | None = None) -> list[dict[str, Any]]:
        """Every activity the instance holds (optionally of some types, dated at or after ``since``), in id order."""
        self.advance()
        wanted = None if type_ids is None else set(type_ids)
        return [
            item.record()
            for item in self.log
            if (wanted is None or item.type_id in wanted) and (since is None or item.second >= int(since))
        ]

    def _take_id(self) -> int:
        self._next_id += self._rng.randint(1, 4)  # ids are shared with activities that are not read
        return self._next_id

    def _append(self, record: dict[str, Any], moment: float) -> StoredActivity:
        return self.log.append(record, int(moment))

    # -- what the REST routes ask ------------------------------------------------------------------
    def activity_types_result(self) -> list[dict[str, Any]]:
        """Get Activity Types ``result``: standard and custom types alike, as Marketo lists them."""
        result = []
        for activity in sorted(self.types.values(), key=lambda t: t.id):
            entry: dict[str, Any] = {"id": activity.id, "name": activity.name}
            if activity.description:
                entry["description"] = activity.description
            if activity.primary_attribute:
                entry["primaryAttribute"] = activity.primary_attribute.as_json()
            entry["attributes"] = [a.as_json() for a in activity.attributes.values()]
            result.append(entry)
        return result

    def page(self, token: str, cursor: Cursor, accept: Callable[[StoredActivity], bool], batch_size: int) -> Scan:
        """One page from ``cursor``: at most ``batch_size`` activities, sometimes fewer while more follow.

        Whether a page is short is drawn from the seed and the token, so a page read again is the
        same page. A short page holds at least one activity (or has scanned ahead), so paging
        always moves on.
        """
        self.advance()
        draw = random.Random(f"{self.seed}:{token}")
        size = batch_size
        if batch_size > 1 and draw.random() < self.short_page_rate:
            size = draw.randint(1, batch_size - 1)
        return self.log.scan(cursor, accept, size, self.scan_limit)

    def next_request_id(self) -> str:
        self._requests += 1
        return f"{self._requests:x}#{(self._requests * 2_654_435_761 + self.seed) & 0xFFFFFFFFFF:x}"

    # -- test and operator controls ----------------------------------------------------------------
    def reset_day(self) -> None:
        """The 00:00 America/Chicago quota reset, now."""
        self.limits.reset_day(self.clock())

    def expire_tokens(self) -> None:
        self.tokens.expire_all(self.clock())

    def revoke_tokens(self) -> None:
        self.tokens.revoke_all()

    # -- the server --------------------------------------------------------------------------------
    async def start(self) -> MarketoInstance:
        # URIs past aiohttp's 8190-byte line limit must reach the app, which answers 414 as Marketo does.
        runner = web.AppRunner(make_app(self), access_log=None, max_line_size=max(65_536, self.max_uri_length * 2))
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        await site.start()
        self._runner = runner
        port = runner.addresses[0][1]
        self.url = f"http://{self._host}:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> MarketoInstance:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


async def run_marketo(
    host: str = "127.0.0.1",
    port: int = 8471,
    munchkin: str = "123-ABC-456",
    rate: float = 10.0,
    token_ttl: float = 3600.0,
    faults: str = "",
    fault_rate: float = 0.0,
    *,
    calls_per_20s: int = 100,
    max_concurrent: int = 10,
    daily_quota: int = 50_000,
    client_id: str = "leadstream-sim",
    client_secret: str | None = None,
    seed: int = 0,
    short_page_rate: float = 0.1,
    echo: Callable[[str], None] = print,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve one simulated instance until ``stop`` is set (or the task is cancelled): what
    ``leadstream simulate marketo`` runs. Prints where it listens and the credentials it accepts.

    Loopback only: the ``/_sim/`` controls need no token.
    """
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"host: the simulated instance serves loopback only (127.0.0.1, ::1), got {host!r}")
    sim = MarketoInstance(
        munchkin_id=munchkin,
        client_id=client_id,
        client_secret=client_secret,
        rate=rate,
        seed=seed,
        token_ttl=token_ttl,
        limits=Limits(calls_per_window=calls_per_20s, max_concurrent=max_concurrent, daily_quota=daily_quota),
        faults=Faults(parse_faults(faults), fault_rate, seed),
        short_page_rate=short_page_rate,
        host=host,
        port=port,
    )
    async with sim:
        echo(f"simulated Marketo instance {munchkin} at {sim.url} ({rate:g} activities/s)")
        echo(f"  restUrl      {sim.url}   (identity at {sim.url}/identity)")
        echo(f"  clientId     {sim.client_id}")
        echo(f"  clientSecret {sim.client_secret}")
        echo(f"  stats        {sim.url}/_sim/stats")
        await (stop or asyncio.Event()).wait()
