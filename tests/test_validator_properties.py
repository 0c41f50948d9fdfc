"""Property tests of the record validator: it never crashes, and valid records are stable."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from leadstream.catalog import Catalog
from leadstream.events import STREAMS, RecordError, Validator

validator = Validator(Catalog())
TYPE_IDS = sorted(validator.catalog.activity_types)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
field_names = st.sampled_from(
    [
        "munchkinId",
        "marketoGUID",
        "leadId",
        "activityDate",
        "activityTypeId",
        "attributes",
        "kind",
        "componentType",
        "eventAction",
        "id",
        "time",
        "apiName",
        "action",
        "updatedAt",
    ]
)
record_like = st.dictionaries(field_names | st.text(max_size=8), json_values, max_size=10)


@settings(max_examples=400, deadline=None)
@given(stream=st.sampled_from(STREAMS), value=json_values | record_like)
def test_arbitrary_json_is_rejected_with_a_message_or_accepted_never_a_crash(stream, value):
    try:
        event = validator.event(stream, json.dumps(value).encode())
    except RecordError as exc:
        message = str(exc)
        assert ":" in message and message.split(":")[0]  # names a field (or "record")
    else:
        assert orjson.loads(event.data)["munchkinId"] == event.munchkin_id


munchkins = st.from_regex(r"\A[0-9]{3}-[A-Z]{3}-[0-9]{3}\Z")
moments = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-7, minutes=-30))]),
)
scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=30)


@st.composite
def activities(draw):
    record = {
        "munchkinId": draw(munchkins),
        "marketoGUID": draw(st.text(min_size=1, max_size=40).filter(str.isprintable)),
        "leadId": draw(st.integers(0, 2**53)),
        "activityDate": draw(moments).isoformat(),
        "activityTypeId": draw(st.sampled_from(TYPE_IDS)),
        "attributes": draw(
            st.lists(st.fixed_dictionaries({"name": st.text(min_size=1, max_size=20), "value": scalars}), max_size=6)
        ),
    }
    for name, strategy in [
        ("id", st.integers(0, 2**53)),
        ("campaignId", st.integers(0, 2**31)),
        ("primaryAttributeValueId", st.integers(0, 2**31)),
        ("primaryAttributeValue", st.text(max_size=30)),
    ]:
        if draw(st.booleans()):
            record[name] = draw(strategy)
    return record


def back_to_record(event) -> dict:
    """Rebuild an ingest record from the stored event: it must store to the very same bytes."""
    data = orjson.loads(event.data)
    record = {
        "munchkinId": data["munchkinId"],
        "marketoGUID": event.id,
        "leadId": int(data["leadId"]),
        "activityDate": data["activityDate"],
        "activityTypeId": data["activityTypeId"],
        "id": data["activityLogItemId"],
        "primaryAttributeValueId": data["primaryAttributeValueId"],
        "primaryAttributeValue": data["primaryAttributeValue"],
        "attributes": [{"name": a["name"], "value": a["value"]} for a in data["attributes"]],
    }
    if "campaignId" in data:
        record["campaignId"] = data["campaignId"]
    return record


@settings(max_examples=300, deadline=None)
@given(record=activities())
def test_valid_activity_round_trips_to_the_same_stored_bytes(record):
    first = validator.event("activity", orjson.dumps(record))
    again = validator.event("activity", orjson.dumps(record))
    assert first.data == again.data and first.key == again.key
    rebuilt = validator.event("activity", orjson.dumps(back_to_record(first)))
    assert rebuilt.data == first.data
    data = orjson.loads(first.data)
    assert data["leadId"] == str(record["leadId"])
    moment = datetime.fromisoformat(data["activityDate"].replace("Z", "+00:00"))
    assert moment == datetime.fromisoformat(record["activityDate"])


@settings(max_examples=200, deadline=None)
@given(munchkin=munchkins, component=st.sampled_from(sorted(validator.catalog.audit_components)), data=st.data())
def test_valid_audit_round_trips(munchkin, component, data):
    action = data.draw(st.sampled_from(sorted(validator.catalog.audit_components[component])))
    record = {
        "munchkinId": munchkin,
        "componentType": component,
        "eventAction": action,
        "componentId": data.draw(st.integers(0, 10**9)),
        "user": data.draw(st.integers(0, 10**6)),
        "userId": data.draw(st.emails()),
        "id": data.draw(st.text(min_size=1, max_size=20).filter(str.isprintable)),
        "time": data.draw(moments).isoformat(),
    }
    first = validator.event("audit", orjson.dumps(record))
    stored = orjson.loads(first.data)
    rebuilt = validator.event("audit", orjson.dumps({**stored, "id": first.id, "time": first.time}))
    assert rebuilt.data == first.data and rebuilt.key == first.key


@settings(max_examples=200, deadline=None)
@given(record=activities(), values=st.lists(json_values | st.integers(), min_size=1, max_size=4))
def test_any_attribute_values_are_stored_or_rejected_never_a_crash(record, values):
    record["attributes"] = [{"name": f"a{i}", "value": v} for i, v in enumerate(values)]
    try:
        event = validator.event("activity", json.dumps(record).encode())
    except RecordError as exc:
        assert str(exc).startswith(("record:", "attributes"))
    else:
        assert [a["value"] for a in orjson.loads(event.data)["attributes"]] == values


def test_keys_with_control_characters_are_rejected():
    from helpers import activity

    for bad in ["a\x00b", "line\nbreak", ""]:
        try:
            validator.event("activity", orjson.dumps(activity(1, marketoGUID=bad)))
        except RecordError as exc:
            assert str(exc).startswith("marketoGUID:")
        else:
            raise AssertionError(f"{bad!r} was accepted")
