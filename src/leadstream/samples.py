"""Sample events (SPEC §5): a realistic event of any catalog type.

``sample_event`` writes the ingest record a platform would send for that type — attributes of
the catalog's data types with plausible values — and passes it through the real
``events.Validator``, so the event's bytes are exactly what the log would hold. It is not stored;
the delivery engine's ``send_sample`` pushes it the way the subscription's deliveries go.
"""

from __future__ import annotations

import random
import time
from typing import Any

import orjson

from leadstream.catalog import ActivityType, Catalog
from leadstream.errors import Invalid
from leadstream.events import STREAMS, Event, RecordError, Validator
from leadstream.sim import values as v

CUSTOM_OBJECT_PREFIX = "co:"
DELETE_LEAD, NEW_LEAD, CHANGE_DATA_VALUE, CHANGE_SCORE = 37, 12, 13, 22

# primary attribute name → a plausible label for primaryAttributeValue
_PRIMARY_LABELS: dict[str, Any] = {
    "Webpage ID": lambda rng: f"www.example.com{rng.choice(v.PAGES)}",
    "Webform ID": lambda rng: rng.choice(("Contact Us Form", "Webinar Registration Form", "Free Trial Form")),
    "Link ID": lambda rng: v.url(rng),
    "Mailing ID": lambda rng: rng.choice(("2026-11 Newsletter.Newsletter Email", "Onboarding Nurture.Welcome Email",
                                          "Webinar - Data Streams.Invitation")),
    "Score Name": lambda rng: "Lead Score",
    "List ID": lambda rng: rng.choice(("Webinar Attendees", "Trade Show 2026", "Newsletter")),
    "Oppty ID": lambda rng: f"{rng.choice(v.COMPANIES)} - New Business",
}  # fmt: skip
_CHANGED_FIELDS = {
    "Job Title": v.JOB_TITLES,
    "City": v.CITIES,
    "Lead Status": v.LEAD_STATUSES,
    "Company Name": v.COMPANIES,
}


def sample_event(catalog: Catalog, stream: str, type: str | int, munchkin_id: str, seed: int | None = None) -> Event:
    """An event of ``type`` on ``stream`` for ``munchkin_id``, as ingest would store it.

    ``type``: an activity type id or name, or ``co:<apiName>`` (a custom object); an audit
    ``Component`` or ``Component:action``; a notification kind. ``seed`` makes the values
    repeatable (the event id and the time still differ).

    Raises:
        Invalid: (``field="type"``) the stream has no such type.
    """
    if stream not in STREAMS:
        raise Invalid(f"stream: {stream!r} is not a stream ({', '.join(STREAMS)})", field="stream")
    rng = random.Random(seed)
    now = time.time()
    if stream == "activity":
        record = _activity(catalog, type, munchkin_id, rng, now)
    elif stream == "audit":
        record = _audit(catalog, type, munchkin_id, rng, now)
    else:
        record = _notification(catalog, type, munchkin_id, rng, now)
    try:
        return Validator(catalog).event(stream, orjson.dumps(record))
    except RecordError as exc:  # a catalog entry this module cannot fill in; say which
        raise Invalid(f"type: cannot build a sample of {type!r}: {exc}", field="type") from None


def sampling(stream: str) -> dict[str, str]:
    """What ``GET /v1/catalog/{stream}`` says about samples: every type listed can be sampled."""
    forms = {
        "activity": "an activity type id or name from types, or co:<apiName> for a custom object",
        "audit": "a component, or component:action, from types",
        "notification": "a kind from types",
    }
    return {"route": "POST /v1/subscriptions/{id}/sample", "body": '{"type": …}', "type": forms[stream]}


# -- records --------------------------------------------------------------------------------------


def _unknown(type: str | int, what: str) -> Invalid:
    return Invalid(f"type: {type!r} is not {what} of the catalog (GET /v1/catalog lists them)", field="type")


def _activity(catalog: Catalog, type: str | int, munchkin_id: str, rng: random.Random, now: float) -> dict[str, Any]:
    if isinstance(type, str) and type.startswith(CUSTOM_OBJECT_PREFIX):
        return _custom_object(type[len(CUSTOM_OBJECT_PREFIX) :], munchkin_id, rng, now)
    if isinstance(type, int) or type.strip().isdigit():
        activity = catalog.activity_type(munchkin_id, int(type))
    else:
        activity = catalog.activity_type_named(type, munchkin_id)
    if activity is None:
        raise _unknown(type, f"an activity type of {munchkin_id}")
    lead_id = rng.randint(1_000, 9_999_999)
    person = v.person(rng)
    record: dict[str, Any] = {
        "munchkinId": munchkin_id,
        "marketoGUID": v.guid(rng),
        "id": rng.randint(400_000_000, 500_000_000),
        "leadId": lead_id,
        "activityDate": v.rfc3339(now),
        "activityTypeId": activity.id,
    }
    given: dict[str, Any] = {}
    if activity.id == CHANGE_DATA_VALUE:
        field, choices = rng.choice(sorted(_CHANGED_FIELDS.items()))
        old, new = rng.sample(choices, 2)
        record["primaryAttributeValueId"], record["primaryAttributeValue"] = rng.randint(30, 99), field
        given = {
            "New Value": new,
            "Old Value": old,
            "Reason": "Changed by Smart Campaign",
            "Source": "Marketo Flow Action",
        }
    elif activity.id == CHANGE_SCORE:
        score, delta = rng.randint(0, 80), rng.choice((-10, 5, 10, 25))
        record["primaryAttributeValueId"], record["primaryAttributeValue"] = 55, "Lead Score"
        given = {
            "Change Value": f"{delta:+d}",
            "New Value": max(0, score + delta),
            "Old Value": score,
            "Reason": "Visited pricing page",
        }
    elif activity.id == DELETE_LEAD:
        record["primaryAttributeValueId"], record["primaryAttributeValue"] = (
            lead_id,
            f"{person['First Name']} {person['Last Name']}",
        )
    elif activity.primary_attribute is not None:
        record["primaryAttributeValueId"] = rng.randint(1_000, 99_999)
        record["primaryAttributeValue"] = _primary_label(activity, rng)
    if activity.id == NEW_LEAD:
        given = {"Created Date": v.rfc3339(now)[:10], "Source Type": "Web form fillout", "Lead Source": "Website"}
    if rng.random() < 0.5 or (activity.primary_attribute and activity.primary_attribute.name == "Mailing ID"):
        record["campaignId"] = rng.randint(1_000, 9_999)
    record["attributes"] = [
        {
            "name": name,
            "value": given[name] if name in given else v.attribute_value(name, attribute.data_type, rng, now),
        }
        for name, attribute in activity.attributes.items()
    ]
    return record


def _primary_label(activity: ActivityType, rng: random.Random) -> str:
    assert activity.primary_attribute is not None
    name = activity.primary_attribute.name
    label = _PRIMARY_LABELS.get(name)
    if label is not None:
        return str(label(rng))
    return f"{rng.choice(v.WORDS).title()} {name.removesuffix(' ID').removesuffix(' Name')}"


def _custom_object(api_name: str, munchkin_id: str, rng: random.Random, now: float) -> dict[str, Any]:
    """Custom objects are not in the catalog (any API name is valid): generic plausible fields."""
    return {
        "kind": "customObject",
        "munchkinId": munchkin_id,
        "apiName": api_name,
        "marketoGUID": v.guid(rng),
        "leadId": rng.randint(1_000, 9_999_999),
        "action": rng.choice(("create", "update", "delete")),
        "updatedAt": v.rfc3339(now, ms=True),
        "fields": {
            "externalId": f"{rng.choice(v.WORDS)}-{rng.randint(1_000, 9_999)}",
            "name": f"{rng.choice(v.WORDS).title()} {rng.choice(v.WORDS).title()}",
            "status": rng.choice(("active", "trial", "cancelled")),
            "amount": round(rng.uniform(10, 5_000), 2),
        },
    }


def _audit(catalog: Catalog, type: str | int, munchkin_id: str, rng: random.Random, now: float) -> dict[str, Any]:
    if not isinstance(type, str):
        raise _unknown(type, "an audit component (or component:action)")
    component_name, _, action_name = type.partition(":")
    component = {c.lower(): c for c in catalog.audit_components}.get(component_name.strip().lower())
    if component is None:
        raise _unknown(type, "an audit component")
    actions = sorted(catalog.audit_components[component])
    if action_name:
        action = {a.lower(): a for a in actions}.get(action_name.strip().lower())
        if action is None:
            raise _unknown(type, f"an action of {component!r} (one of: {', '.join(actions)})")
    else:
        action = rng.choice(actions)
    host = munchkin_id.lower().replace("-", "")
    return {
        "munchkinId": munchkin_id,
        "id": v.guid(rng),
        "time": v.rfc3339(now, ms=True),
        "componentType": component,
        "componentId": rng.randint(1_000, 999_999),
        "eventAction": action,
        "user": rng.randint(100, 9_999),
        "userId": f"{rng.choice(v.FIRST_NAMES).lower()}@{host}.example",
        "imsOrgId": f"{rng.getrandbits(96):024X}@AdobeOrg",
    }


def _notification(
    catalog: Catalog, type: str | int, munchkin_id: str, rng: random.Random, now: float
) -> dict[str, Any]:
    kind = catalog.notification_kinds.get(type) if isinstance(type, str) else None
    if kind is None:
        raise _unknown(type, f"a notification kind (one of: {', '.join(catalog.notification_kinds)})")
    record: dict[str, Any] = {
        "munchkinId": munchkin_id,
        "id": v.guid(rng),
        "time": v.rfc3339(now, ms=True),
        "imsOrgId": f"{rng.getrandbits(96):024X}@AdobeOrg",
        "componentType": kind.kind,
    }
    if kind.sub_types:
        record["subType"] = rng.choice(kind.sub_types)
    record["eventAction"] = {name: _action_value(name, declared, rng) for name, declared in kind.event_action.items()}
    return record


def _action_value(name: str, declared: str, rng: random.Random) -> Any:
    """A value of a notification's ``eventAction`` field: by its name where that says more than its type."""
    match name:
        case "userId":
            return f"{rng.choice(v.FIRST_NAMES).lower()}@example.com"
        case "reason" | "message":
            return rng.choice(("Email 'Offer Email' is not approved", "Required fields are missing: [Company]"))
        case "errorCode":
            return rng.choice(("INVALID_EMAIL_ADDRESS", "REQUIRED_FIELD_MISSING", "UNABLE_TO_LOCK_ROW"))
        case "percent":
            return rng.choice((80, 90, 100))
        case "dailyQuota":
            return 50_000
        case "winner":
            return rng.choice(("Variant A", "Variant B", "Control"))
    match declared:
        case "number":
            return rng.randint(1_000, 9_999)
        case "boolean":
            return rng.random() < 0.5
        case "array<string>":
            return sorted(rng.sample(("Get Leads", "Sync Leads", "Bulk Extract", "Get Lead Changes"), 2))
    return f"{rng.choice(v.WORDS)} {rng.choice(v.WORDS)}"
