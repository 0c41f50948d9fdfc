"""The records the load generator publishes, and how the sink reads their send time back.

A record is a realistic Visit Webpage activity of about 700 bytes. Its ``marketoGUID`` carries
the moment it was sent: ``<tag>-<send µs since the epoch>-<sequence>``. Every format leadstream
delivers (and the bare loop's joined bytes) keeps the GUID as ``"marketoGUID":"…"`` or ``"id":"…"``,
so the sink finds the send time without decoding the body. Sender and sink share the machine's
clock, so receive time minus send time is the end-to-end delay.
"""

from __future__ import annotations

import re
import time

MUNCHKIN = "123-ABC-456"

# One record; %b: GUID, activity log item id, lead id. Values are what a real instance sends.
_RECORD = (
    b'{"munchkinId":"' + MUNCHKIN.encode() + b'","marketoGUID":"%b","id":%b,"leadId":%b,'
    b'"activityDate":"2026-11-28T10:00:00Z","activityTypeId":1,"primaryAttributeValueId":2046,'
    b'"primaryAttributeValue":"www.example.com/pricing/enterprise-plans","campaignId":5512,'
    b'"attributes":[{"name":"Client IP Address","value":"203.0.113.42"},'
    b'{"name":"Query Parameters","value":"utm_source=newsletter&utm_medium=email&utm_campaign=q4"},'
    b'{"name":"Referrer URL","value":"https://www.google.com/search?q=marketing+automation"},'
    b'{"name":"User Agent","value":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 '
    b'Chrome/126.0.0.0 Safari/537.36"},'
    b'{"name":"Webpage URL","value":"/pricing/enterprise-plans"},'
    b'{"name":"Personalized URL","value":false}]}'
)

# The GUID as it appears in any delivered body: "marketoGUID":"…" (legacy, bare) or "id":"…"
# (cloudevents). Group 1: the send time in µs.
SEND_TIME = re.compile(rb'"(?:marketoGUID|id)":"[A-Za-z0-9]+-(\d{16})-\d+"')
GUID_FIELD = b'"marketoGUID":"'


def body(tag: str, first: int, count: int, sent_us: int | None = None) -> bytes:
    """A JSON array of ``count`` records numbered from ``first``, all stamped with ``sent_us``."""
    stamp = b"%s-%d-" % (tag.encode(), sent_us if sent_us is not None else time.time_ns() // 1000)
    return (
        b"["
        + b",".join(
            _RECORD % (stamp + b"%d" % n, b"%d" % (1_000_000_000 + n), b"%d" % (10_000 + n % 50_000))
            for n in range(first, first + count)
        )
        + b"]"
    )


def record_size() -> int:
    return len(body("x", 0, 1)) - 2


def send_times_us(payload: bytes) -> list[int]:
    """The send time of every benchmark event in a delivered body."""
    return [int(m) for m in SEND_TIME.findall(payload)]


def count_events(payload: bytes) -> int:
    """How many benchmark events a legacy or bare-loop body holds (no decoding: one memchr-like scan)."""
    return payload.count(GUID_FIELD)
