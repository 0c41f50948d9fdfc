"""Stored events → delivery bodies (SPEC §4.3), by joining bytes.

Every event's ``data`` was encoded once at ingest (events.py). Here it is spliced, never decoded,
between small constant pieces; only the short string columns (eventid, id, type, time, and the
per-batch subscription id, batch id and creation time) are escaped, by orjson. This is the
delivery hot path: a batch of 500 events is one ``b"".join``.

Sizes: ``body_size`` is the exact number of bytes an event's element adds to a batch body, its
separating comma included (so a batch's sum over-counts by one comma per list), when the
subscription id is given; without it, an upper bound that assumes an id of at most
``MAX_ID_CHARS`` plain characters. The envelope around the elements (legacy header, brackets)
adds at most ``ENVELOPE_BYTES`` for batch ids and creation times of at most ``MAX_ID_CHARS``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson

from leadstream.events import ACTIVITY_SOURCE, Event

FORMATS = ("legacy", "cloudevents", "adobe_io")

SOURCES = {
    "activity": ACTIVITY_SOURCE,  # custom objects too
    "audit": "https://www.marketo.com",
    "notification": "urn:mlm",
}
MAX_ID_CHARS = 64

_quote = orjson.dumps  # a str → its JSON string, escaped (non-ASCII stays UTF-8, which JSON allows)
_SOURCES = {stream: _quote(source) for stream, source in SOURCES.items()}

# The byte heads events.py guarantees (see its docstring).
_MUNCHKIN_HEAD = len(b'{"munchkinId":"123-ABC-456",')
_LEAD_ID_AT = _MUNCHKIN_HEAD + len(b'"leadId":"')

_LEGACY_ACTIVITY = b'{"marketoGUID":%b,"leadId":%b,%b'
_CLOUDEVENT = (
    b'{"eventid":%b,"specversion":"1.0","type":%b,"source":%b,"id":%b,"time":%b,'
    b'"datacontenttype":"application/json","data":%b,"recipientclientid":%b}'
)
_ADOBE_IO = (
    b'{"event_id":%b,"event":{"specversion":"1.0","id":%b,"type":%b,"source":%b,"time":%b,'
    b'"datacontenttype":"application/json","dataschema":"V1.0","data":%b},"recipient_client_id":%b}'
)
_LEGACY_HEAD = b'{"sourceApplication":"Marketo","munchkinId":%b,"messageId":%b,"messageCreatedDate":%b,"activities":['


def _is_custom_object(event: Event) -> bool:
    return event.etype.startswith("co:")


def _legacy_element(event: Event) -> bytes:
    data = event.data
    if _is_custom_object(event):
        return b"{" + data[_MUNCHKIN_HEAD:]
    # data: {"munchkinId":"…","leadId":"1234","activityDate":…  →  {"marketoGUID":…,"leadId":1234,"activityDate":…
    end = data.index(b'"', _LEAD_ID_AT)
    return _LEGACY_ACTIVITY % (_quote(event.id), data[_LEAD_ID_AT:end], data[end + 2 :])


# cloudevents/adobe_io elements end with the subscription id: the shared part stops before it.
_CLOUDEVENT_SHARED = _CLOUDEVENT[: _CLOUDEVENT.rindex(b"%b")]
_ADOBE_IO_SHARED = _ADOBE_IO[: _ADOBE_IO.rindex(b"%b")]


def _cloudevent_shared(event: Event) -> bytes:
    return _CLOUDEVENT_SHARED % (
        _quote(event.eventid), _quote(event.type), _SOURCES[event.stream],
        _quote(event.id), _quote(event.time), event.data,
    )  # fmt: skip


def _adobe_io_shared(event: Event) -> bytes:
    return _ADOBE_IO_SHARED % (
        _quote(event.eventid), _quote(event.id), _quote(event.type), _SOURCES[event.stream],
        _quote(event.time), event.data,
    )  # fmt: skip


_SHARED: dict[str, Callable[[Event], bytes]] = {
    "legacy": _legacy_element,
    "cloudevents": _cloudevent_shared,
    "adobe_io": _adobe_io_shared,
}


def _check(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"format: {fmt!r} is not one of {', '.join(FORMATS)}")


def elements(fmt: str, events: Sequence[Event]) -> list[bytes]:
    """The part of each event's element that is the same for every subscription: built once per
    event and format, however many subscriptions it goes to (the log tail keeps them). Legacy:
    the whole element; cloudevents/adobe_io: everything before the subscription id."""
    _check(fmt)
    build = _SHARED[fmt]
    return [build(event) for event in events]


def _closing(fmt: str, subscription_id: str) -> bytes:
    """What follows a shared element in one subscription's body (nothing for legacy)."""
    return b"" if fmt == "legacy" else _quote(subscription_id) + b"}"


def element_overhead(fmt: str, subscription_id: str) -> int:
    """Bytes an element adds to a body beyond its shared part, its separating comma included."""
    return len(_closing(fmt, subscription_id)) + 1


def _legacy_batch(events: Sequence[Event], shared: Sequence[bytes], batch_id: str, created: str) -> bytes:
    if not events:
        raise ValueError("a legacy batch needs at least one event (its munchkinId comes from them)")
    if events[0].stream != "activity":
        raise ValueError(f"the legacy format carries the activity stream only, not {events[0].stream!r}")
    head = _LEGACY_HEAD % (_quote(events[0].munchkin_id), _quote(batch_id), _quote(created))
    if not any(event.etype.startswith("co:") for event in events):
        return b"".join((head, b",".join(shared), b"]}"))
    activities: list[bytes] = []
    custom_objects: list[bytes] = []
    for event, element in zip(events, shared):
        (custom_objects if _is_custom_object(event) else activities).append(element)
    parts = [head, b",".join(activities)]
    if custom_objects:
        parts += [b'],"customObjects":[', b",".join(custom_objects)]
    parts.append(b"]}")
    return b"".join(parts)


def batch_body(
    fmt: str, events: Sequence[Event], *, subscription_id: str, batch_id: str, created: str,
    shared: Sequence[bytes] | None = None,
) -> bytes:  # fmt: skip
    """The body of one batch request. ``created`` is the message time (legacy only); ``shared``
    the events' ``elements(fmt, events)`` when they were built already.

    Raises ValueError for an unknown format, or a legacy batch that is empty or not activities.
    """
    _check(fmt)
    if shared is None:
        shared = elements(fmt, events)
    if fmt == "legacy":
        return _legacy_batch(events, shared, batch_id, created)
    if not shared:
        return b"[]"
    closing = _closing(fmt, subscription_id)
    return b"".join((b"[", (closing + b",").join(shared), closing, b"]"))


def event_body(fmt: str, event: Event, *, subscription_id: str, shared: bytes | None = None) -> bytes:
    """One event object: delivery ``single`` and the journal. Legacy has no single form: ValueError."""
    _check(fmt)
    if fmt == "legacy":
        raise ValueError("the legacy format has no single-event form; use cloudevents or adobe_io")
    return (_SHARED[fmt](event) if shared is None else shared) + _closing(fmt, subscription_id)


def cloudevent(event: Event, *, subscription_id: str) -> dict[str, Any]:
    """The decoded CloudEvent, as subscriber filters see it (not on the hot path)."""
    decoded: dict[str, Any] = orjson.loads(event_body("cloudevents", event, subscription_id=subscription_id))
    return decoded


# -- sizes --------------------------------------------------------------------------------------

_EMPTY = b""
_CLOUDEVENT_FIXED = len(_CLOUDEVENT % ((_EMPTY,) * 7))
_ADOBE_IO_FIXED = len(_ADOBE_IO % ((_EMPTY,) * 7))
_LEGACY_ACTIVITY_FIXED = len(_LEGACY_ACTIVITY % ((_EMPTY,) * 3))
_ID_BOUND = MAX_ID_CHARS + 2  # plain characters, quoted
ENVELOPE_BYTES = max(
    len(_LEGACY_HEAD % (b'"123-ABC-456"', b"x" * _ID_BOUND, b"x" * _ID_BOUND) + b'],"customObjects":[' + b"]}"),
    len(b"[]"),
)


def body_size(fmt: str, event: Event, *, subscription_id: str | None = None) -> int:
    """Bytes ``event`` adds to a ``fmt`` batch body, its separating comma included.

    Exact with ``subscription_id``; without it, an upper bound for ids of at most MAX_ID_CHARS
    plain characters. Whole body <= sum of body_size + ENVELOPE_BYTES.
    """
    _check(fmt)
    data_size = len(event.data)
    if fmt == "legacy":
        if _is_custom_object(event):
            return 1 + data_size - _MUNCHKIN_HEAD + 1
        # the element keeps the lead id digits and everything after their closing '",'
        return _LEGACY_ACTIVITY_FIXED + len(_quote(event.id)) + data_size - _LEAD_ID_AT - 2 + 1
    subscription = _ID_BOUND if subscription_id is None else len(_quote(subscription_id))
    fixed = _CLOUDEVENT_FIXED if fmt == "cloudevents" else _ADOBE_IO_FIXED
    return (
        fixed + len(_quote(event.eventid)) + len(_quote(event.type)) + len(_SOURCES[event.stream])
        + len(_quote(event.id)) + len(_quote(event.time)) + data_size + subscription + 1
    )  # fmt: skip
