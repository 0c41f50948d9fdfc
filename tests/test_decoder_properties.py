"""Hypothesis on the decoders: whatever the bytes, ingest and admin bodies raise only our own
error types (a 400/413 or a per-record rejection), never a 500 (issue 16)."""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import activity
from leadstream.catalog import Catalog
from leadstream.errors import LeadstreamError
from leadstream.events import STREAMS, RecordError, Validator, split_records, validate_records
from leadstream.subscriptions.validation import decode_body

validator = Validator(Catalog())
VALID = orjson.dumps([activity(1), activity(2, attributes=[{"name": "Device", "value": {"a": [1, "é"]}}])])
SPECIAL = [
    b"\xff",
    b"\xc3",
    b"\\ud800",
    b"\\udc00",
    b"[" * 300,
    b"]",
    b"{",
    b'"',
    b"\\",
    b"\x00",
    b",",
    b":",
    b'"munchkinId":"1"',
]


def mutated(body: bytes, cuts: list[tuple[int, bytes]]) -> bytes:
    for at, piece in cuts:
        at %= len(body) + 1
        body = body[:at] + piece + body[at:]
    return body


mutations = st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(SPECIAL) | st.binary(max_size=4)), max_size=4)
bodies = st.binary(max_size=300) | mutations.map(lambda cuts: mutated(VALID, cuts))


def ingest(body: bytes, stream: str, ndjson: bool) -> None:
    """What the ingest route does with a body, up to the append."""
    try:
        records = split_records(body, ndjson)
    except LeadstreamError:
        return
    events, rejected = validate_records(validator, stream, records)
    assert len(events) + len(rejected) == len(records)
    for event in events:
        orjson.loads(event.data)  # what is kept is valid JSON


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies, stream=st.sampled_from(STREAMS), ndjson=st.booleans())
def test_any_body_is_split_and_validated_or_refused_with_our_errors(body, stream, ndjson):
    ingest(body, stream, ndjson)


@settings(max_examples=300, deadline=None)
@given(body=bodies, stream=st.sampled_from(STREAMS))
def test_any_record_bytes_are_accepted_or_rejected_never_a_crash(body, stream):
    try:
        validator.event(stream, body)
    except RecordError as exc:
        assert str(exc)


@settings(max_examples=300, deadline=None)
@given(body=bodies | st.just(b"[" * 20_000 + b"]" * 20_000))
def test_any_admin_body_decodes_to_an_object_or_is_a_400(body):
    try:
        document = decode_body(body)
    except LeadstreamError as exc:
        assert exc.status == 400 and exc.detail
    else:
        assert isinstance(document, dict)
