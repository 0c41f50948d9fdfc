"""The journal (SPEC §5): a subscription's events pulled a page at a time, as Adobe I/O's
journaling API serves them.

Where a page starts: after ``since`` (exclusive), at the end of the log (``latest=true``), at a
moment in the past (``seek=-PT2H``), or, with none of them, at the oldest retained event.

Positions are opaque tokens that sort as strings in log order (``leadstream.positions``; the
first, base64 form is still accepted). Anything else is a 400.

Which events: those the push would send (the subscription's stream, tenant, event types and
subscriber ``filter``), in the subscription's format; ``legacy`` has no per-event form, so legacy
subscriptions read ``cloudevents``.

A page stops at ``limit`` events, before its body would pass ``MAX_BODY_BYTES`` (it always holds
at least one event), or once ``SCAN_BOUND`` events of the subscription's stream and tenant have
been examined without filling it: a subscription whose filter matches rarely gets the events
found so far — possibly none: ``200`` with ``"count": 0`` — and a ``last`` that continues the
scan, so a request never walks the whole log. ``204`` means the end of the log was reached with
nothing to return.

``_page.last`` (and the ``next`` link) is where the next page starts: the last event returned,
or, when the end of the log was reached, the end of the log, so the next request does not scan
again the events this one passed over.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from leadstream import positions
from leadstream.errors import Gone, LeadstreamError
from leadstream.events import Event
from leadstream.store.base import Store

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_BODY_BYTES = 1_500_000  # 1.5 MB (decimal: under the cap whichever megabyte a client means)
SCAN_BOUND = 10_000  # events of the subscription's stream and tenant examined per request
READ_PAGE = 1000  # the largest store read
RETRY_AFTER_SECONDS = 10

# what the body adds around its elements, for the largest position token and count
_ENVELOPE = len(b'{"events":[],"_page":{"last":"%s","count":%d}}' % (b"x" * positions.TOKEN_LENGTH, MAX_LIMIT))


class BadQuery(LeadstreamError):
    """A journal query that cannot be served as asked (400)."""


# -- positions ------------------------------------------------------------------------------------


def encode_position(position: int) -> str:
    return positions.encode(position)


def decode_position(token: str, field: str = "since") -> int:
    """The log position behind a position token (``leadstream.positions``), or BadQuery naming ``field``."""
    position = positions.decode_or_none(token)
    if position is None:
        raise BadQuery(
            f"{field}: {token[:40]!r} is not a journal position (use _page.last or the next link)", field=field
        )
    return position


# -- the query ------------------------------------------------------------------------------------

# ISO 8601 durations as Adobe's `seek` takes them: negative, weeks to (fractional) seconds.
# Years and months are refused: they have no fixed length.
_DURATION = re.compile(
    r"(?P<sign>[-+]?)P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:[.,]\d+)?)S)?)?",
    re.IGNORECASE,
)
_SECONDS = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}


def parse_seek(value: str) -> float:
    """``-PT2H`` → 7200.0: how many seconds back. BadQuery for anything but a negative duration."""
    found = _DURATION.fullmatch(value.strip())
    if found is None or not any(found.group(unit) for unit in _SECONDS):
        hint = (
            " (years and months have no fixed length: use weeks or days)" if re.search(r"P\d+[YM]", value, re.I) else ""
        )
        raise BadQuery(f"seek: {value!r} is not an ISO 8601 duration such as -PT2H or -P1DT30M{hint}", field="seek")
    if found.group("sign") != "-":
        raise BadQuery(f"seek: {value!r} must be negative (a moment in the past), such as -PT2H", field="seek")
    return sum(
        float(found.group(unit).replace(",", ".")) * factor for unit, factor in _SECONDS.items() if found.group(unit)
    )


def _parse_bool(value: str, field: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no", ""):
        return False
    raise BadQuery(f"{field}: expected true or false, got {value!r}", field=field)


@dataclass(frozen=True, slots=True)
class Query:
    """Where to start and how many: exactly one of ``since``/``latest``/``seek_seconds`` or none."""

    limit: int = DEFAULT_LIMIT
    since: int | None = None
    latest: bool = False
    seek_seconds: float | None = None

    @classmethod
    def parse(
        cls, *, since: str | None = None, limit: str | None = None, latest: str | None = None, seek: str | None = None
    ) -> Query:
        """From the raw query parameters; BadQuery (400) naming the parameter."""
        count = DEFAULT_LIMIT
        if limit is not None:
            try:
                count = int(limit)
            except ValueError:
                raise BadQuery(
                    f"limit: expected an integer from 1 to {MAX_LIMIT}, got {limit!r}", field="limit"
                ) from None
            if not 1 <= count <= MAX_LIMIT:
                raise BadQuery(f"limit: must be from 1 to {MAX_LIMIT}, got {count}", field="limit")
        latest_on = latest is not None and _parse_bool(latest, "latest")
        chosen = [
            name for name, on in (("since", since is not None), ("latest", latest_on), ("seek", seek is not None)) if on
        ]
        if len(chosen) > 1:
            raise BadQuery(f"{' and '.join(chosen)} cannot be used together: give one place to start", field=chosen[-1])
        return cls(
            limit=count,
            since=decode_position(since) if since is not None else None,
            latest=latest_on,
            seek_seconds=parse_seek(seek) if seek is not None else None,
        )

    async def start(self, store: Store) -> int:
        """The position the page starts after. BadQuery for a ``since`` ahead of the log."""
        if self.since is not None:
            last = await store.last_position()
            if self.since > last:
                raise BadQuery(f"since: {encode_position(self.since)} is ahead of the end of this log", field="since")
            return self.since
        if self.latest:
            return await store.last_position()
        if self.seek_seconds is not None:
            moment = time.time_ns() // 1_000_000 - int(self.seek_seconds * 1000)
            return max(await store.position_before(moment), await store.first_position() - 1)
        return await store.first_position() - 1


# -- a page ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class Page:
    elements: list[bytes]  # {"position":…,"event":…} objects, encoded
    last: int  # where the next page starts
    at_end: bool  # the end of the log was reached

    @property
    def count(self) -> int:
        return len(self.elements)

    def body(self) -> bytes:
        return b'{"events":[%b],"_page":{"last":"%s","count":%d}}' % (
            b",".join(self.elements), encode_position(self.last).encode(), len(self.elements),
        )  # fmt: skip


async def read_page(
    store: Store,
    key: tuple[str, str],
    after: int,
    limit: int,
    matches: Callable[[Event], bool],
    render: Callable[[Event], bytes],
    *,
    max_bytes: int = MAX_BODY_BYTES,
    scan_bound: int = SCAN_BOUND,
) -> Page:
    """Up to ``limit`` rendered events of ``key`` = (stream, munchkin id) after ``after`` that
    ``matches`` accepts, within ``max_bytes`` of body and ``scan_bound`` events examined."""
    top = await store.last_position()  # everything at or below it is visible to the reads below
    elements: list[bytes] = []
    size = _ENVELOPE
    examined = 0
    page_size = min(max(limit, 100), READ_PAGE, scan_bound)
    while True:
        events = await store.read(after, page_size, stream=key[0], munchkin_id=key[1])
        for event in events:
            if matches(event):
                element = b'{"position":"%s","event":%b}' % (encode_position(event.position).encode(), render(event))
                if elements and size + len(element) + 1 > max_bytes:
                    return Page(elements, after, at_end=False)
                elements.append(element)
                size += len(element) + 1
                if len(elements) == limit:
                    return Page(elements, event.position, at_end=False)
            after = event.position
        examined += len(events)
        if len(events) < page_size:  # nothing else of this key up to `top` (nor up to this read)
            return Page(elements, max(after, top), at_end=True)
        if examined >= scan_bound:
            return Page(elements, after, at_end=False)
        page_size = min(page_size * 2, READ_PAGE, scan_bound - examined)  # sparse matches: read further at once


async def check_retained(store: Store, since: int) -> None:
    """Gone (410) when events after ``since`` have been purged by retention.

    Called after the page was read: retention deletes a prefix of the log, so if nothing after
    ``since`` is missing now, nothing was missing when the page was read either.
    """
    first = await store.first_position()
    if since < first - 1:
        raise Gone(
            f"since: position {encode_position(since)} has expired (events after it are past retention);"
            " start again with ?seek=, ?latest=true or no position for the oldest retained events",
            field="since",
        )


def journal_format(body_format: str) -> str:
    """The journal's per-event format for a subscription's push format."""
    return "cloudevents" if body_format == "legacy" else body_format
