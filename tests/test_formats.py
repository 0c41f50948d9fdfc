"""Delivery bodies (SPEC §4.3): exact shape and key order per format, CloudEvents conformance,
sizes, and a property test of the legacy element against the record it came from."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadstream.catalog import Catalog
from leadstream.events import Event, Validator
from leadstream.formats import (
    ENVELOPE_BYTES,
    FORMATS,
    batch_body,
    body_size,
    cloudevent,
    event_body,
)

try:  # cloudevents 2.x keeps the 1.x API under cloudevents.v1
    from cloudevents.v1.http import from_json
except ImportError:  # pragma: no cover - cloudevents 1.x
    from cloudevents.http import from_json

SCHEMA = json.loads((Path(__file__).parent / "data" / "cloudevents-1.0.schema.json").read_text())
CE_VALIDATOR = jsonschema.validators.validator_for(SCHEMA)(SCHEMA, format_checker=jsonschema.FormatChecker())

CATALOG = Catalog()
VALIDATOR = Validator(CATALOG)
SUB = "sub-7f3a"
MUNCHKIN = "123-ABC-456"
TRICKY = 'a"b\\c/\u00e9\u2028\n\x01'  # quote, backslash, non-ASCII, line separator, control characters
TRICKY_KEY = 'a"b\\c/\u00e9'  # what a producer's id may hold (keys refuse control characters)


def event_time(utc: datetime) -> str:
    """How the log writes a time: UTC, in the shortest exact form (s, ms or µs)."""
    us = utc.microsecond
    spec = "seconds" if not us else "milliseconds" if us % 1000 == 0 else "microseconds"
    return utc.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def make(stream: str, record: dict[str, Any]) -> Event:
    return VALIDATOR.event(stream, orjson.dumps(record))


def activity(guid: str = "3b2f-0001", **changes: Any) -> Event:
    record = {
        "munchkinId": MUNCHKIN, "marketoGUID": guid, "id": 1234567890, "leadId": 1234,
        "activityDate": "2026-11-28T10:00:00Z", "activityTypeId": 10,
        "primaryAttributeValueId": 1234, "primaryAttributeValue": "Welcome Email", "campaignId": 55,
        "attributes": [{"name": "Device", "value": "iPhone"}, {"name": "Step ID", "value": 7}],
    }  # fmt: skip
    record.update(changes)
    return make("activity", record)


def custom_object(guid: str = "co-guid-1") -> Event:
    return make("activity", {
        "kind": "customObject", "munchkinId": MUNCHKIN, "apiName": "car_c", "marketoGUID": guid,
        "leadId": 99, "action": "update", "updatedAt": "2026-11-28T10:00:01Z", "fields": {"vin": "X1", "year": 2024},
    })  # fmt: skip


def audit(record_id: Any = "audit-1") -> Event:
    return make("audit", {
        "munchkinId": MUNCHKIN, "id": record_id, "time": "2026-11-28T10:00:02Z", "componentType": "Email",
        "componentId": 232459, "eventAction": "approve", "user": 253, "userId": "someone@example.com",
        "imsOrgId": "ORG@AdobeOrg",
    })  # fmt: skip


def notification() -> Event:
    return make("notification", {
        "munchkinId": MUNCHKIN, "id": "n-1", "time": "2026-11-28T10:00:03Z", "componentType": "campaign_abort",
        "subType": "user_campaign_abort", "eventAction": {"campaignId": 5, "userId": "ops@example.com"},
    })  # fmt: skip


def every_stream() -> list[Event]:
    return [activity(), activity("3b2f-0002", campaignId=None, id=None), custom_object(), audit(), notification()]


def keys_in_order(body: bytes) -> list[Any]:
    """Parsed JSON with every object turned into its (key, value) list: equality then checks order."""

    def ordered(value: Any) -> Any:
        if isinstance(value, dict):
            return [(k, ordered(v)) for k, v in value.items()]
        if isinstance(value, list):
            return [ordered(v) for v in value]
        return value

    return ordered(orjson.loads(body))


# -- legacy ---------------------------------------------------------------------------------------

LEGACY_OPEN_EMAIL = {
    "marketoGUID": "3b2f-0001", "leadId": 1234, "activityDate": "2026-11-28T10:00:00Z", "activityTypeId": 10,
    "activityType": "Open Email", "activityLogItemId": 1234567890, "primaryAttributeValueId": 1234,
    "primaryAttributeValue": "Welcome Email", "campaignId": 55,
    "attributes": [{"name": "Device", "dataType": "string", "value": "iPhone"},
                   {"name": "Step ID", "dataType": "integer", "value": 7}],
}  # fmt: skip


def test_legacy_batch_mixes_activities_and_custom_objects_in_spec_order() -> None:
    events = [activity(), custom_object(), activity("3b2f-0002", campaignId=None, id=None, primaryAttributeValue=None)]
    body = batch_body("legacy", events, subscription_id=SUB, batch_id="batch-1", created="2026-11-28T10:00:05Z")
    without_campaign = {k: v for k, v in LEGACY_OPEN_EMAIL.items() if k != "campaignId"} | {
        "marketoGUID": "3b2f-0002", "activityLogItemId": None, "primaryAttributeValue": None,
    }  # fmt: skip
    expected = {
        "sourceApplication": "Marketo", "munchkinId": MUNCHKIN, "messageId": "batch-1",
        "messageCreatedDate": "2026-11-28T10:00:05Z",
        "activities": [LEGACY_OPEN_EMAIL, without_campaign],
        "customObjects": [{"apiName": "car_c", "marketoGUID": "co-guid-1", "leadId": 99, "action": "update",
                           "updatedAt": "2026-11-28T10:00:01Z", "fields": {"vin": "X1", "year": 2024}}],
    }  # fmt: skip
    assert keys_in_order(body) == keys_in_order(orjson.dumps(expected))
    # campaignId absent, the always-present fields null
    assert b'"activityLogItemId":null,"primaryAttributeValueId":1234,"primaryAttributeValue":null,"attributes"' in body


def test_legacy_without_custom_objects_has_no_custom_objects_key() -> None:
    body = orjson.loads(batch_body("legacy", [activity()], subscription_id=SUB, batch_id="b", created="c"))
    assert list(body) == ["sourceApplication", "munchkinId", "messageId", "messageCreatedDate", "activities"]
    only_custom = orjson.loads(batch_body("legacy", [custom_object()], subscription_id=SUB, batch_id="b", created="c"))
    assert only_custom["activities"] == [] and len(only_custom["customObjects"]) == 1


def test_legacy_escapes_ids_and_keeps_the_lead_id_a_number() -> None:
    event = activity(TRICKY_KEY, leadId=2**63 - 1)
    body = batch_body("legacy", [event], subscription_id=SUB, batch_id=TRICKY, created=TRICKY)
    parsed = json.loads(body)  # the standard library parser: strict about control characters
    assert parsed["messageId"] == TRICKY and parsed["messageCreatedDate"] == TRICKY
    assert parsed["activities"][0]["marketoGUID"] == TRICKY_KEY
    assert parsed["activities"][0]["leadId"] == 2**63 - 1


def test_legacy_refuses_what_it_cannot_carry() -> None:
    with pytest.raises(ValueError, match="single-event"):
        event_body("legacy", activity(), subscription_id=SUB)
    with pytest.raises(ValueError, match="activity stream only"):
        batch_body("legacy", [audit()], subscription_id=SUB, batch_id="b", created="c")
    with pytest.raises(ValueError, match="at least one event"):
        batch_body("legacy", [], subscription_id=SUB, batch_id="b", created="c")
    with pytest.raises(ValueError, match="'xml' is not one of"):
        batch_body("xml", [activity()], subscription_id=SUB, batch_id="b", created="c")


# -- cloudevents and adobe_io -------------------------------------------------------------------


def expected_cloudevent(event: Event, source: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "eventid": event.eventid, "specversion": "1.0", "type": event.type, "source": source, "id": event.id,
        "time": event.time, "datacontenttype": "application/json", "data": data, "recipientclientid": SUB,
    }  # fmt: skip


def test_cloudevents_object_for_every_stream() -> None:
    act, co, aud, note = activity(), custom_object(), audit(), notification()
    expected = [
        expected_cloudevent(act, "urn:marketo_activity_stream", {
            "munchkinId": MUNCHKIN, "leadId": "1234", **{k: v for k, v in LEGACY_OPEN_EMAIL.items()
                                                        if k not in ("marketoGUID", "leadId")}}),
        expected_cloudevent(co, "urn:marketo_activity_stream", {
            "munchkinId": MUNCHKIN, "apiName": "car_c", "marketoGUID": "co-guid-1", "leadId": 99, "action": "update",
            "updatedAt": "2026-11-28T10:00:01Z", "fields": {"vin": "X1", "year": 2024}}),
        expected_cloudevent(aud, "https://www.marketo.com", {
            "componentId": 232459, "componentType": "Email", "eventAction": "approve", "munchkinId": MUNCHKIN,
            "imsOrgId": "ORG@AdobeOrg", "user": 253, "userId": "someone@example.com"}),
        expected_cloudevent(note, "urn:mlm", {
            "munchkinId": MUNCHKIN, "componentType": "campaign_abort", "subType": "user_campaign_abort",
            "eventAction": {"campaignId": 5, "userId": "ops@example.com"}}),
    ]  # fmt: skip
    assert expected[0]["type"] == "com.adobe.platform.marketo.activity.standard.openemail"
    assert expected[0]["id"] == "3b2f-0001" and expected[2]["id"] == "audit-1"
    events = [act, co, aud, note]
    for event, want in zip(events, expected):
        assert keys_in_order(event_body("cloudevents", event, subscription_id=SUB)) == keys_in_order(orjson.dumps(want))
        assert cloudevent(event, subscription_id=SUB) == want
    batch = batch_body("cloudevents", events, subscription_id=SUB, batch_id="b", created="c")
    assert keys_in_order(batch) == keys_in_order(orjson.dumps(expected))


def test_adobe_io_wrapper() -> None:
    event = audit()
    body = event_body("adobe_io", event, subscription_id=SUB)
    expected = {
        "event_id": event.eventid,
        "event": {
            "specversion": "1.0", "id": "audit-1", "type": "com.adobe.platform.marketo.audit.user.email",
            "source": "https://www.marketo.com", "time": "2026-11-28T10:00:02Z",
            "datacontenttype": "application/json", "dataschema": "V1.0",
            "data": {"componentId": 232459, "componentType": "Email", "eventAction": "approve", "munchkinId": MUNCHKIN,
                     "imsOrgId": "ORG@AdobeOrg", "user": 253, "userId": "someone@example.com"},
        },
        "recipient_client_id": SUB,
    }  # fmt: skip
    assert keys_in_order(body) == keys_in_order(orjson.dumps(expected))
    events = every_stream()
    batch = orjson.loads(batch_body("adobe_io", events, subscription_id=SUB, batch_id="b", created="c"))
    assert [b["event_id"] for b in batch] == [e.eventid for e in events]
    assert [b["event"]["source"] for b in batch] == ["urn:marketo_activity_stream"] * 3 + [
        "https://www.marketo.com", "urn:mlm",
    ]  # fmt: skip
    assert [b["event"]["data"] for b in batch] == [orjson.loads(e.data) for e in events]


@pytest.mark.parametrize("fmt", ["cloudevents", "adobe_io"])
def test_special_characters_in_ids_are_escaped(fmt: str) -> None:
    events = [activity(TRICKY_KEY), audit(TRICKY_KEY), custom_object(TRICKY_KEY)]
    batch = json.loads(batch_body(fmt, events, subscription_id=TRICKY, batch_id="b", created="c"))
    for parsed in batch:
        inner = parsed if fmt == "cloudevents" else parsed["event"]
        assert inner["id"] == TRICKY_KEY
        assert parsed["recipientclientid" if fmt == "cloudevents" else "recipient_client_id"] == TRICKY
    assert batch_body(fmt, [], subscription_id=SUB, batch_id="b", created="c") == b"[]"


def test_every_cloudevent_validates_against_the_schema_and_the_sdk() -> None:
    events = [*every_stream(), activity(TRICKY_KEY), audit(77)]
    for event in events:
        body = event_body("cloudevents", event, subscription_id=SUB)
        CE_VALIDATOR.validate(orjson.loads(body))
        parsed = from_json(body)
        assert parsed["id"] == event.id and parsed["type"] == event.type
        assert parsed["recipientclientid"] == SUB and parsed.data == orjson.loads(event.data)
        if core_json_format is not None:  # cloudevents 2.x: the new core API validates attributes too
            core = core_json_format.read(None, body)
            assert core.get_id() == event.id and core.get_extension("eventid") == event.eventid


try:
    from cloudevents.core.formats.json import JSONFormat

    core_json_format: Any = JSONFormat()
except ImportError:  # pragma: no cover - cloudevents 1.x
    core_json_format = None


def test_the_schema_format_checks_really_run() -> None:
    good = cloudevent(activity(), subscription_id=SUB)
    CE_VALIDATOR.validate(good)
    for field, bad in [("time", "28/11/2026 10:00"), ("time", "2026-11-28T10:00:00"), ("source", "http://[oops")]:
        with pytest.raises(jsonschema.ValidationError, match="is not a"):
            CE_VALIDATOR.validate(good | {field: bad})


# -- sizes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_body_size_is_exact_per_element_and_bounds_the_batch(fmt: str) -> None:
    events = [*every_stream(), activity(TRICKY_KEY, leadId=7)]
    if fmt == "legacy":
        events = [e for e in events if e.stream == "activity"]
    for sub in (SUB, TRICKY, "s" * 64):
        sizes = [body_size(fmt, e, subscription_id=sub) for e in events]
        body = batch_body(fmt, events, subscription_id=sub, batch_id="b" * 64, created="2026-11-28T10:00:05.123456Z")
        assert sum(sizes) + ENVELOPE_BYTES >= len(body) > sum(sizes)
        if fmt != "legacy":  # one element each: exact
            assert all(size == len(event_body(fmt, e, subscription_id=sub)) + 1 for size, e in zip(sizes, events))
            assert len(body) == 2 + sum(sizes) - 1
        if len(sub) <= 64 and sub.isascii() and sub.isalnum():  # the bound without the id
            assert [body_size(fmt, e) for e in events] >= sizes
    if fmt == "legacy":  # the elements, measured one by one
        for event in events:
            one = batch_body(fmt, [event], subscription_id=SUB, batch_id="b", created="c")
            head = len(
                b'{"sourceApplication":"Marketo","munchkinId":"123-ABC-456","messageId":"b",'
                b'"messageCreatedDate":"c","activities":['
            )
            tail = len(b'],"customObjects":[]}') if event.etype.startswith("co:") else len(b"]}")
            assert len(one) == head + body_size(fmt, event) - 1 + tail


# -- property: the legacy element is the record, reshaped ---------------------------------------

OPEN_EMAIL = CATALOG.activity_types[10]
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
scalars = st.none() | st.booleans() | int64 | st.floats(allow_nan=False, allow_infinity=False) | st.text()
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                      max_leaves=6)  # fmt: skip
attribute_names = st.sampled_from([*OPEN_EMAIL.attributes, "Mailing ID", "Not In Catalog"])


@settings(max_examples=200, deadline=None)
@given(
    guid=st.text(min_size=1).filter(str.isprintable),
    lead_id=st.integers(min_value=0, max_value=2**63 - 1),
    moment=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.timezones()),
    log_item_id=st.none() | int64,
    primary_id=st.none() | int64 | st.text(),
    primary_value=scalars,
    campaign_id=st.none() | int64,
    attributes=st.lists(st.tuples(attribute_names, values), max_size=5),
)
def test_legacy_element_equals_the_record(
    guid: str, lead_id: int, moment: datetime, log_item_id: int | None, primary_id: Any,
    primary_value: Any, campaign_id: int | None, attributes: list[tuple[str, Any]],
) -> None:  # fmt: skip
    record = {
        "munchkinId": MUNCHKIN, "marketoGUID": guid, "id": log_item_id, "leadId": lead_id,
        "activityDate": moment.isoformat(), "activityTypeId": 10, "primaryAttributeValueId": primary_id,
        "primaryAttributeValue": primary_value, "campaignId": campaign_id,
        "attributes": [{"name": n, "value": v} for n, v in attributes],
    }  # fmt: skip
    utc = moment.astimezone(UTC)
    expected: dict[str, Any] = {
        "marketoGUID": guid, "leadId": lead_id,
        "activityDate": event_time(utc),
        "activityTypeId": 10, "activityType": "Open Email", "activityLogItemId": log_item_id,
        "primaryAttributeValueId": primary_id, "primaryAttributeValue": primary_value,
    }  # fmt: skip
    if campaign_id is not None:
        expected["campaignId"] = campaign_id
    expected["attributes"] = [{"name": n, "dataType": OPEN_EMAIL.data_type(n), "value": v} for n, v in attributes]

    event = make("activity", record)
    body = batch_body("legacy", [event], subscription_id=SUB, batch_id="b", created="c")
    (element,) = orjson.loads(body)["activities"]
    assert element == expected
    assert list(element) == list(expected)
    assert len(body) <= body_size("legacy", event) + ENVELOPE_BYTES
