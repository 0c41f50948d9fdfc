"""Subscriber-defined filters: Event-Ruler patterns against realistic CloudEvents (SPEC §4.3, §5)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from leadstream.errors import Invalid
from leadstream.filtering import MAX_DEPTH, MAX_VALUES, PatternError, compile_pattern

ACTIVITY = "com.adobe.platform.marketo.activity.standard."

OPEN_EMAIL = {
    "eventid": "5f0c6a3e-2b1d-4c8e-9f4a-7d2e1b3c4a5f",
    "specversion": "1.0",
    "type": ACTIVITY + "openemail",
    "source": "urn:marketo_activity_stream",
    "id": "3b2f8e9c-1a4d-4e7f-b6c2-9d8e7f6a5b4c",
    "time": "2026-11-28T10:00:00Z",
    "datacontenttype": "application/json",
    "data": {
        "munchkinId": "123-ABC-456",
        "leadId": "1234",
        "activityDate": "2026-11-28T10:00:00Z",
        "activityTypeId": 10,
        "activityType": "Open Email",
        "activityLogItemId": 1234567890,
        "primaryAttributeValueId": 1234,
        "primaryAttributeValue": "Welcome Email",
        "campaignId": 55,
        "attributes": [
            {"name": "Device", "dataType": "string", "value": "iPhone"},
            {"name": "Is Mobile Device", "dataType": "boolean", "value": True},
            {"name": "Platform", "dataType": "string", "value": "iOS"},
            {"name": "Campaign Run ID", "dataType": "integer", "value": 2077},
        ],
    },
    "recipientclientid": "sub_01",
}

CHANGE_EMAIL_ADDRESS = {  # a lead change: Change Data Value (13), no campaign
    "eventid": "8a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
    "specversion": "1.0",
    "type": ACTIVITY + "changedatavalue",
    "source": "urn:marketo_activity_stream",
    "id": "7c6b5a49-3827-4165-9e8d-7c6b5a493827",
    "time": "2026-11-28T10:00:01Z",
    "datacontenttype": "application/json",
    "data": {
        "munchkinId": "123-ABC-456",
        "leadId": "5678",
        "activityDate": "2026-11-28T10:00:01Z",
        "activityTypeId": 13,
        "activityType": "Change Data Value",
        "activityLogItemId": 1234567891,
        "primaryAttributeValueId": 48,
        "primaryAttributeValue": "Email Address",
        "attributes": [
            {"name": "New Value", "dataType": "string", "value": "new@example.com"},
            {"name": "Old Value", "dataType": "string", "value": "old@example.com"},
            {"name": "Reason", "dataType": "string", "value": "Form fill-out"},
            {"name": "Source", "dataType": "string", "value": "Web form fillout"},
        ],
    },
    "recipientclientid": "sub_01",
}

EMAIL_APPROVED = {  # user audit
    "eventid": "0e1d2c3b-4a59-4867-8f9e-0d1c2b3a4958",
    "specversion": "1.0",
    "type": "com.adobe.platform.marketo.audit.user.email",
    "source": "https://www.marketo.com",
    "id": "a1b2c3d4-e5f6-4789-8abc-def012345678",
    "time": "2026-11-28T10:00:02Z",
    "datacontenttype": "application/json",
    "data": {
        "componentId": 232459,
        "componentType": "Email",
        "eventAction": "approve",
        "munchkinId": "123-ABC-456",
        "imsOrgId": None,
        "user": 253,
        "userId": "someone@example.com",
    },
    "recipientclientid": "sub_02",
}

QUOTA_WARNING = {  # notification
    "eventid": "9f8e7d6c-5b4a-4392-8e1f-0a9b8c7d6e5f",
    "specversion": "1.0",
    "type": "com.adobe.platform.marketo.notification.web_services",
    "source": "https://www.marketo.com",
    "id": "b2c3d4e5-f6a7-4890-9bcd-ef0123456789",
    "time": "2026-11-28T10:00:03Z",
    "datacontenttype": "application/json",
    "data": {
        "munchkinId": "123-ABC-456",
        "componentType": "web_services",
        "subType": "dailyQuota",
        "eventAction": {"dailyQuota": 50000, "percent": 90, "serviceNames": ["Get Leads", "Sync Leads"]},
    },
    "recipientclientid": "sub_03",
}

EVENTS = {"open": OPEN_EMAIL, "cdv": CHANGE_EMAIL_ADDRESS, "audit": EMAIL_APPROVED, "quota": QUOTA_WARNING}

# (what it shows, pattern, {event: expected})
CASES = [
    # exact values
    ("exact string", {"type": [ACTIVITY + "openemail"]}, {"open": True, "cdv": False, "audit": False}),
    ("any of several numbers", {"data": {"activityTypeId": [10, 13]}}, {"open": True, "cdv": True, "audit": False}),
    ("numbers by value", {"data": {"activityTypeId": [10.0]}}, {"open": True, "cdv": False}),
    ("a string never equals a number", {"data": {"activityTypeId": ["10"]}}, {"open": False}),
    ("leadId is a string here", {"data": {"leadId": ["1234"]}}, {"open": True, "cdv": False}),
    ("nor a number a string", {"data": {"leadId": [1234]}}, {"open": False}),
    ("boolean", {"data": {"attributes": {"value": [True]}}}, {"open": True, "cdv": False}),
    ("true is not 1", {"data": {"attributes": {"value": [1]}}}, {"open": False}),
    ("null", {"data": {"imsOrgId": [None]}}, {"audit": True, "open": False}),
    ("all keys must match", {"type": [ACTIVITY + "openemail"], "data": {"leadId": ["9999"]}}, {"open": False}),
    (
        "several alternatives, any may match",
        {"data": {"campaignId": [{"exists": False}, 55]}},
        {"open": True, "cdv": True},
    ),
    # prefix / suffix / equals-ignore-case
    ("prefix", {"type": [{"prefix": "com.adobe.platform.marketo.audit."}]}, {"audit": True, "open": False}),
    ("prefix ignoring case", {"data": {"userId": [{"prefix": {"equals-ignore-case": "SOMEONE@"}}]}}, {"audit": True}),
    ("prefix only on strings", {"data": {"activityTypeId": [{"prefix": "1"}]}}, {"open": False, "cdv": False}),
    ("suffix", {"data": {"userId": [{"suffix": "@example.com"}]}}, {"audit": True, "open": False}),
    (
        "suffix ignoring case",
        {"data": {"userId": [{"suffix": {"equals-ignore-case": "@EXAMPLE.COM"}}]}},
        {"audit": True},
    ),
    (
        "equals-ignore-case",
        {"data": {"componentType": [{"equals-ignore-case": "EMAIL"}]}},
        {"audit": True, "quota": False},
    ),
    ("equals-ignore-case is whole", {"data": {"componentType": [{"equals-ignore-case": "emai"}]}}, {"audit": False}),
    # anything-but
    (
        "anything-but a list of numbers",
        {"data": {"activityTypeId": [{"anything-but": [12, 13, 37]}]}},
        {"open": True, "cdv": False},
    ),
    ("anything-but needs the field", {"data": {"activityTypeId": [{"anything-but": [12, 13, 37]}]}}, {"audit": False}),
    ("anything-but a string", {"data": {"eventAction": [{"anything-but": "delete"}]}}, {"audit": True}),
    ("anything-but that string", {"data": {"eventAction": [{"anything-but": "approve"}]}}, {"audit": False}),
    (
        "anything-but a prefix",
        {"data": {"primaryAttributeValue": [{"anything-but": {"prefix": "Email"}}]}},
        {"cdv": False, "open": True},
    ),
    ("anything-but a suffix", {"data": {"userId": [{"anything-but": {"suffix": "@example.com"}}]}}, {"audit": False}),
    (
        "anything-but ignoring case",
        {"data": {"componentType": [{"anything-but": {"equals-ignore-case": ["email", "landing page"]}}]}},
        {"audit": False, "quota": True},
    ),
    (
        "anything-but over an array: some element differs",
        {"data": {"eventAction": {"serviceNames": [{"anything-but": "Get Leads"}]}}},
        {"quota": True},
    ),
    (
        "anything-but over an array: no element differs",
        {"data": {"eventAction": {"serviceNames": [{"anything-but": ["Get Leads", "Sync Leads"]}]}}},
        {"quota": False},
    ),
    # numeric
    ("numeric >=", {"data": {"eventAction": {"percent": [{"numeric": [">=", 90]}]}}}, {"quota": True}),
    ("numeric >", {"data": {"eventAction": {"percent": [{"numeric": [">", 90]}]}}}, {"quota": False}),
    ("numeric =", {"data": {"eventAction": {"dailyQuota": [{"numeric": ["=", 50000]}]}}}, {"quota": True}),
    (
        "numeric range, inclusive top",
        {"data": {"activityLogItemId": [{"numeric": [">", 0, "<=", 1234567890]}]}},
        {"open": True, "cdv": False},
    ),
    (
        "numeric range, bounds in either order",
        {"data": {"activityLogItemId": [{"numeric": ["<", 1234567891, ">", 0]}]}},
        {"open": True, "cdv": False},
    ),
    ("numeric never matches a string", {"data": {"leadId": [{"numeric": [">", 0]}]}}, {"open": False}),
    ("numeric never matches a boolean", {"data": {"attributes": {"value": [{"numeric": ["=", 1]}]}}}, {"open": False}),
    (
        "numeric over an array",
        {"data": {"attributes": {"value": [{"numeric": [">", 2000, "<", 3000]}]}}},
        {"open": True, "cdv": False},
    ),
    # exists
    ("exists true", {"data": {"campaignId": [{"exists": True}]}}, {"open": True, "cdv": False}),
    ("exists false on a missing field", {"data": {"campaignId": [{"exists": False}]}}, {"cdv": True, "open": False}),
    (
        "exists false below a missing object",
        {"data": {"eventAction": {"percent": [{"exists": False}]}}},
        {"open": True, "quota": False},
    ),
    ("null exists", {"data": {"imsOrgId": [{"exists": True}]}}, {"audit": True, "quota": False}),
    ("exists looks at leaves only", {"data": [{"exists": True}]}, {"open": False}),
    # nested fields and arrays of objects
    (
        "name and value from ONE attribute",
        {"data": {"attributes": {"name": ["Device"], "value": ["iPhone"]}}},
        {"open": True, "cdv": False},
    ),
    (
        "not from two different attributes",
        {"data": {"attributes": {"name": ["Device"], "value": [True]}}},
        {"open": False},
    ),
    ("an element of an array of strings", {"data": {"eventAction": {"serviceNames": ["Sync Leads"]}}}, {"quota": True}),
    (
        "lead changes to one field",
        {
            "data": {
                "activityTypeId": [13],
                "primaryAttributeValue": ["Email Address"],
                "attributes": {"name": ["Reason"], "value": [{"prefix": "Form"}]},
            }
        },
        {"cdv": True, "open": False},
    ),
    # $or
    (
        "$or at the top",
        {"$or": [{"data": {"activityTypeId": [13]}}, {"type": [{"suffix": ".email"}]}]},
        {"cdv": True, "audit": True, "open": False, "quota": False},
    ),
    (
        "$or nested, AND with its siblings",
        {
            "source": ["urn:marketo_activity_stream"],
            "data": {"$or": [{"campaignId": [55]}, {"primaryAttributeValue": ["Email Address"]}]},
        },
        {"open": True, "cdv": True, "audit": False},
    ),
    (
        "$or with exists false",
        {"$or": [{"data": {"campaignId": [{"exists": False}]}}, {"data": {"campaignId": [99]}}]},
        {"open": False, "cdv": True},
    ),
]


@pytest.mark.parametrize(
    ("pattern", "event", "expected"),
    [
        pytest.param(pattern, name, want, id=f"{what}-{name}")
        for what, pattern, expectations in CASES
        for name, want in expectations.items()
    ],
)
def test_pattern_against_event(pattern, event, expected):
    assert compile_pattern(pattern)(EVENTS[event]) is expected


def test_sample_events_are_valid_cloudevents():
    schema = json.loads((Path(__file__).parent / "data" / "cloudevents-1.0.schema.json").read_text())
    for event in EVENTS.values():
        jsonschema.validate(event, schema, format_checker=jsonschema.FormatChecker())


def test_matcher_names_the_top_level_fields_it_reads():
    matcher = compile_pattern({"type": [{"prefix": ACTIVITY}], "$or": [{"data": {"leadId": ["1"]}}, {"source": ["x"]}]})
    assert matcher.fields == {"type", "data", "source"}
    assert compile_pattern({"type": ["x"]}).fields == {"type"}  # a caller may skip decoding data


def nested(depth: int) -> dict:
    pattern: dict = {"leaf": ["x"]}
    for _ in range(depth):
        pattern = {"a": pattern}
    return pattern


INVALID = [
    ([], "filter: must be a JSON object, not an array"),
    ("type", "filter: must be a JSON object, not a string"),
    ({}, "filter: must not be an empty object"),
    ({"data": {}}, "filter.data: must not be an empty object"),
    (
        {"type": ACTIVITY + "openemail"},
        "filter.type: must be an array of values to match or a nested object, not a string",
    ),
    ({"type": []}, "filter.type: must not be an empty array"),
    ({"data": {"activityTypeId": [[10]]}}, "filter.data.activityTypeId[0]: arrays cannot be nested"),
    ({"type": [{"prefx": "com."}]}, "filter.type[0]: unknown operator 'prefx' (did you mean 'prefix'?)"),
    ({"type": [{"wildcard": "com.*"}]}, "filter.type[0]: unknown operator 'wildcard' (use one of: prefix,"),
    ({"type": [{"prefix": "a", "suffix": "b"}]}, "filter.type[0]: an operator object has exactly one key"),
    ({"type": [{}]}, "filter.type[0]: an operator object has exactly one key"),
    ({"type": [{"prefix": 5}]}, "filter.type[0].prefix: must be a string, not a number"),
    ({"type": [{"suffix": None}]}, "filter.type[0].suffix: must be a string, not null"),
    (
        {"type": [{"prefix": {"equals-ignore-case": ["a"]}}]},
        "filter.type[0].prefix.equals-ignore-case: must be a string, not an array",
    ),
    ({"type": [{"prefix": {"ignore-case": "a"}}]}, "filter.type[0].prefix: unknown operator 'ignore-case'"),
    (
        {"data": {"componentType": [{"equals-ignore-case": 5}]}},
        "filter.data.componentType[0].equals-ignore-case: must be a string, not a number",
    ),
    (
        {"data": {"campaignId": [{"exists": "yes"}]}},
        "filter.data.campaignId[0].exists: must be true or false, not a string",
    ),
    ({"data": {"x": [{"numeric": 5}]}}, "filter.data.x[0].numeric: must be an array like"),
    ({"data": {"x": [{"numeric": [">"]}]}}, "filter.data.x[0].numeric: must be an array like"),
    ({"data": {"x": [{"numeric": [">", 0, "<"]}]}}, "filter.data.x[0].numeric: must be an array like"),
    (
        {"data": {"x": [{"numeric": [">", "5"]}]}},
        "filter.data.x[0].numeric[1]: must be a number after '>', not a string",
    ),
    (
        {"data": {"x": [{"numeric": [">", True]}]}},
        "filter.data.x[0].numeric[1]: must be a number after '>', not a boolean",
    ),
    ({"data": {"x": [{"numeric": ["=>", 5]}]}}, "filter.data.x[0].numeric[0]: unknown comparison '=>'"),
    ({"data": {"x": [{"numeric": [">", 0, "<", "9"]}]}}, "filter.data.x[0].numeric[3]: must be a number after '<'"),
    (
        {"data": {"x": [{"numeric": [">", 5, ">", 10]}]}},
        "numeric: a range needs one lower bound (> or >=) and one upper",
    ),
    ({"data": {"x": [{"numeric": ["=", 1, "<", 5]}]}}, "numeric: a range needs one lower bound"),
    ({"data": {"x": [{"numeric": [">", 10, "<", 5]}]}}, "filter.data.x[0].numeric: empty range: 10 is not below 5"),
    ({"data": {"x": [{"numeric": [">=", 5, "<=", 5]}]}}, "empty range: 5 is not below 5"),
    ({"data": {"x": [{"anything-but": []}]}}, "filter.data.x[0].anything-but: must not be an empty array"),
    ({"data": {"x": [{"anything-but": [12, True]}]}}, "filter.data.x[0].anything-but[1]: must be a string, a number"),
    ({"data": {"x": [{"anything-but": None}]}}, "filter.data.x[0].anything-but: must be a string, a number"),
    (
        {"data": {"x": [{"anything-but": {"numeric": [">", 1]}}]}},
        "filter.data.x[0].anything-but: unknown operator 'numeric'",
    ),
    ({"data": {"x": [{"anything-but": {"prefix": 1}}]}}, "filter.data.x[0].anything-but.prefix: must be a string"),
    (
        {"data": {"x": [{"anything-but": {"equals-ignore-case": []}}]}},
        "anything-but.equals-ignore-case: must be a string or a non-empty array of strings",
    ),
    ({"$or": {"type": ["a"]}}, "filter.$or: must be an array of at least 2 pattern objects"),
    ({"$or": [{"type": ["a"]}]}, "filter.$or: must be an array of at least 2 pattern objects"),
    ({"$or": [{"type": ["a"]}, "b"]}, "filter.$or[1]: must be a pattern object, not a string"),
    ({"$or": [{"type": ["a"]}, {}]}, "filter.$or[1]: must not be an empty object"),
    ({"data": {"$or": [{"a": ["x"]}, {"b": [{"prefx": "y"}]}]}}, "filter.data.$or[1].b[0]: unknown operator 'prefx'"),
    ({"type": ["x"] * (MAX_VALUES + 1)}, f"filter.type: pattern too large (more than {MAX_VALUES} values)"),
    (nested(MAX_DEPTH + 1), f"nested more than {MAX_DEPTH} levels deep"),
]


@pytest.mark.parametrize(("pattern", "fragment"), INVALID, ids=[fragment for _, fragment in INVALID])
def test_invalid_pattern_is_refused_with_its_place(pattern, fragment):
    with pytest.raises(PatternError) as caught:
        compile_pattern(pattern)
    error = caught.value
    assert fragment in str(error)
    assert error.detail == str(error) and error.detail.startswith(error.path + ": ")
    assert error.extra == {"field": error.path}  # rendered into the problem+json


def test_pattern_errors_are_422_and_take_the_caller_root_name():
    with pytest.raises(Invalid) as caught:
        compile_pattern({"type": [{"prefx": "a"}]}, name="subscription.filter")
    assert caught.value.status == 422
    assert str(caught.value).startswith("subscription.filter.type[0]: unknown operator 'prefx'")


def test_deepest_allowed_nesting_compiles_and_matches():
    event = {"leaf": "x"}
    for _ in range(MAX_DEPTH):
        event = {"a": event}
    assert compile_pattern(nested(MAX_DEPTH))(event) is True
