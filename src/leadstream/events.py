"""Ingest records → stored events (SPEC §1.2, §2).

A request body is split into raw records (JSON array or NDJSON) without decoding them, then each
record is decoded and checked on its own, so one bad record costs only itself. A valid record
becomes an ``Event``: the few columns the log filters and keys on, and ``data`` — the event's JSON
bytes, encoded once here and never again (formats.py joins them into delivery bodies).

Invariants formats.py relies on:
- activity ``data`` is the CloudEvents ``data`` object and starts with
  ``{"munchkinId":"<11 chars>","leadId":"<digits>",`` — the legacy element swaps that head for
  ``{"marketoGUID":…,"leadId":<digits>,`` and keeps the tail as it is;
- custom-object ``data`` starts with ``{"munchkinId":"<11 chars>",`` — the legacy element drops it.
"""

from __future__ import annotations

import json
import os
import re
from collections import deque
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
import orjson

from leadstream.catalog import ActivityType, Catalog, audit_ce_type, custom_object_ce_type, notification_ce_type
from leadstream.clock import now_rfc3339
from leadstream.errors import LeadstreamError, describe_invalid
from leadstream.tenants import MUNCHKIN_RE, not_a_munchkin_id

STREAMS = ("activity", "audit", "notification")
MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_RECORDS = 10_000
MAX_RECORD_BYTES = 256 * 1024
MAX_ATTRIBUTES = 200
MAX_ATTRIBUTE_VALUE_BYTES = 32 * 1024

ACTIVITY_SOURCE = "urn:marketo_activity_stream"
CUSTOM_OBJECT_ACTIONS = ("create", "update", "delete")
_API_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


class Event(msgspec.Struct, gc=False):
    """One event of the log. ``position`` and ``ingested_at`` (ms) are set by the store."""

    eventid: str
    stream: str
    munchkin_id: str
    etype: str  # what filters match: "10", "co:<apiName>", "<Component>:<action>", "<kind>"
    type: str  # the CloudEvents type
    id: str  # the CloudEvents id: marketoGUID, or the audit/notification id
    time: str  # RFC 3339, UTC
    data: bytes
    key: str = ""  # idempotency key, unique within retention (not read back from the log)
    position: int = 0
    ingested_at: int = 0


class BadBody(LeadstreamError):
    """The body does not parse as a whole: 400, nothing stored."""


class TooLarge(LeadstreamError):
    status = 413
    title = "Content Too Large"


class RecordError(Exception):
    """One record is rejected: ``errors`` holds one message per wrong field, each naming the field
    and the bad value; ``str()`` joins them."""

    def __init__(self, *errors: str) -> None:
        super().__init__(*errors)
        self.errors = list(errors)

    def __str__(self) -> str:
        return "; ".join(self.errors)


# -- splitting a body ---------------------------------------------------------------------------

_raw_list = msgspec.json.Decoder(list[msgspec.Raw])


# Deeper than this, orjson cannot encode a value again; msgspec itself stops near 1,000 levels.
MAX_DEPTH = 250
TOO_DEEP = f"arrays and objects nest too deeply to be stored (keep them under {MAX_DEPTH} levels)"
# A \uD800–\uDFFF escape that is not half of a pair: JSON text cannot hold it as a character.
_LONE_SURROGATE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


def _line_column(body: bytes, offset: int) -> str:
    line = body.count(b"\n", 0, offset) + 1
    column = offset - (body.rfind(b"\n", 0, offset) + 1) + 1
    return f"line {line}, column {column} (byte {offset})"


def _where(body: bytes, message: str) -> str:
    """Turn msgspec's "(byte N)" into a line and column a person can find."""
    if ("escape" in message or "truncated" in message) and (lone := _LONE_SURROGATE.search(body)):
        escape = lone.group().decode()
        return f"{escape} at {_line_column(body, lone.start())} is half of a UTF-16 surrogate pair, not a character"
    if "UTF-8" in message:
        return _bad_utf8(body)
    if "truncated" in message:
        return f"the body ends before the JSON is complete (after byte {len(body)})"
    found = re.search(r"\(byte (\d+)\)", message)
    if not found:
        return message
    offset = int(found.group(1))
    return f"{message[: found.start()].rstrip()} at {_line_column(body, offset)}"


def _bad_utf8(body: bytes) -> str:
    try:
        body.decode()
    except UnicodeDecodeError as exc:
        return f"invalid UTF-8 at {_line_column(body, exc.start)}: text must be UTF-8"
    return "invalid UTF-8: text must be UTF-8"


def split_records(body: bytes, ndjson: bool) -> list[msgspec.Raw | bytes]:
    """The raw records of a request, undecoded. Raises BadBody or TooLarge for the whole body."""
    if len(body) > MAX_BODY_BYTES:
        raise TooLarge(f"the body is {len(body)} bytes; the limit is {MAX_BODY_BYTES} bytes (10 MiB)")
    if not body.strip():
        raise BadBody("the body is empty; send a JSON array of records or NDJSON")
    if ndjson:
        records: list[msgspec.Raw | bytes] = []
        for number, line in enumerate(body.split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                msgspec.json.decode(line)  # syntax only; the record is decoded again, typed, later
            except msgspec.DecodeError as exc:
                raise BadBody(f"NDJSON line {number} is not JSON: {_where(line, str(exc))}") from None
            except RecursionError:
                raise BadBody(f"NDJSON line {number}: {TOO_DEEP}") from None
            records.append(line)
    else:
        try:
            records = list(_raw_list.decode(body))
        except msgspec.ValidationError:
            raise BadBody(
                "the body must be a JSON array of records (or NDJSON with Content-Type: application/x-ndjson)"
            ) from None
        except msgspec.DecodeError as exc:
            raise BadBody(f"the body is not valid JSON: {_where(body, str(exc))}") from None
        except RecursionError:
            raise BadBody(f"the body is not accepted: {TOO_DEEP}") from None
    if len(records) > MAX_RECORDS:
        raise TooLarge(f"the body holds {len(records)} records; the limit is {MAX_RECORDS} per request")
    return records


# -- the record shapes producers send ----------------------------------------------------------

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
Scalar = str | int | float | bool | None


class AttributeIn(msgspec.Struct):
    name: str
    value: Any = None


class ActivityIn(msgspec.Struct):
    munchkinId: str
    marketoGUID: str
    leadId: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
    activityDate: str
    activityTypeId: int
    id: int | None = None
    primaryAttributeValueId: int | str | None = None
    primaryAttributeValue: Scalar = None
    campaignId: int | None = None
    attributes: list[AttributeIn] = []
    kind: Any = None  # set: a custom-object record, not an activity


class CustomObjectIn(msgspec.Struct):
    kind: str
    munchkinId: str
    apiName: str
    marketoGUID: str
    action: str
    updatedAt: str
    leadId: int | None = None
    fields: dict[str, Any] = {}


class AuditIn(msgspec.Struct):
    munchkinId: str
    componentType: str
    eventAction: str
    componentId: int | str | None = None
    user: int | str | None = None
    userId: str | None = None
    imsOrgId: str | None = None
    id: int | str | None = None
    time: str | None = None


class NotificationIn(msgspec.Struct):
    munchkinId: str
    componentType: str
    eventAction: dict[str, Any]
    subType: str | None = None
    imsOrgId: str | None = None
    id: int | str | None = None
    time: str | None = None


class _KindProbe(msgspec.Struct):
    kind: Any = None


# strict=False lets "1234" stand for the number 1234 (leadId arrives as a string from some
# exporters); anything that is not a number still fails.
_decoders = {
    cls: msgspec.json.Decoder(cls, strict=False) for cls in (ActivityIn, CustomObjectIn, AuditIn, NotificationIn)
}
_probe = msgspec.json.Decoder(_KindProbe)


def _kind(raw: bytes) -> Any:
    """The record's ``kind``, if it is an object that has one."""
    try:
        return _probe.decode(raw).kind
    except (msgspec.MsgspecError, RecursionError):
        return None


def _decode(cls: type[msgspec.Struct], raw: bytes) -> Any:
    """The typed record; RecordError for anything wrong with it, whatever the bytes are."""
    try:
        record = _decoders[cls].decode(raw)  # type: ignore[index]  # cls is one of the record classes
    except msgspec.ValidationError as exc:
        field, sentence = describe_invalid(exc, _decoded_or_none(raw))
        raise RecordError(sentence if field else f"record: {sentence}") from None
    except msgspec.DecodeError as exc:  # bytes a split body cannot see: invalid UTF-8, lone surrogates
        raise RecordError(f"record: not valid JSON: {_where(bytes(raw), str(exc))}") from None
    except RecursionError:
        raise RecordError(f"record: {TOO_DEEP}") from None
    if duplicate := _duplicate_field(cls, raw):
        raise RecordError(f"{duplicate}: the field appears more than once in the record (each field once)")
    return record


# The fields that say whose record it is and which one (its tenant and key): given twice, msgspec
# would keep the last one silently and store the record under another tenant or key.
_IDENTITY_FIELDS = {
    "ActivityIn": (b'"munchkinId"', b'"marketoGUID"', b'"activityTypeId"'),
    "CustomObjectIn": (b'"munchkinId"', b'"marketoGUID"', b'"apiName"', b'"action"', b'"updatedAt"'),
    "AuditIn": (b'"munchkinId"', b'"id"', b'"componentType"', b'"eventAction"'),
    "NotificationIn": (b'"munchkinId"', b'"id"', b'"componentType"'),
}


def _duplicate_field(cls: type[msgspec.Struct], raw: bytes) -> str | None:
    """A field of the record given twice. The quick look counts each identity field's quoted
    name anywhere (a name inside a string value is escaped, so never counted): a few
    microseconds less than reading every key. Only when one repeats is the record read key by
    key, since nested objects (custom-object fields, attribute values) may use the same names;
    then any field given twice is named."""
    data = raw if type(raw) is bytes else bytes(raw)
    for name in _IDENTITY_FIELDS[cls.__name__]:
        if data.count(name) > 1:
            break
    else:
        return None
    top: list[list[str]] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        top.append([key for key, _ in items])  # the outermost object closes last
        return dict(items)

    try:
        json.loads(data, object_pairs_hook=pairs)
    except (ValueError, RecursionError):  # msgspec read it; should json not, let it pass as msgspec did
        return None
    keys = top[-1] if top else []
    return next((key for key in keys if keys.count(key) > 1), None)


def _decoded_or_none(raw: bytes) -> Any:
    """The record as plain JSON values, for quoting a bad value in a message."""
    try:
        return msgspec.json.decode(raw)
    except (msgspec.MsgspecError, RecursionError):
        return None


# Each field of each record shape on its own, for naming every wrong field (msgspec stops at the first).
_one_field = {
    cls: {
        f.name: (msgspec.defstruct(f"{cls.__name__}_{f.name}", [(f.name, f.type)]), f.required)
        for f in msgspec.structs.fields(cls)
    }
    for cls in (ActivityIn, CustomObjectIn, AuditIn, NotificationIn)
}
_STAND_IN: dict[type, Any] = {msgspec.inspect.StrType: "", msgspec.inspect.IntType: 0, msgspec.inspect.DictType: {}}


def _typed(cls: type[msgspec.Struct], raw: bytes) -> tuple[Any, dict[str, str]]:
    """The record decoded as ``cls``, and the message of every field whose type is wrong.

    When some are, the record comes back with stand-ins for them (so the other fields can still
    be checked) and the messages name each of them; a record that is not an object at all, or is
    wrong in a way no single field shows, raises RecordError with ``_decode``'s message."""
    try:
        return _decode(cls, raw), {}
    except RecordError as first:
        document = _decoded_or_none(raw)
        if not isinstance(document, dict):
            raise
        wrong: dict[str, str] = {}
        good: dict[str, Any] = {}
        for name, (one, required) in _one_field[cls].items():  # type: ignore[index]  # one of the record classes
            if name not in document:
                if required:
                    wrong[name] = f"{name}: required field is missing"
                continue
            try:
                good[name] = getattr(msgspec.convert({name: document[name]}, one, strict=False), name)
            except msgspec.ValidationError as exc:
                wrong[name] = describe_invalid(exc, document)[1]
        if not wrong:
            raise first from None
        info = msgspec.inspect.type_info(cls)
        assert isinstance(info, msgspec.inspect.StructType)
        for field in info.fields:
            if field.required and field.name not in good:
                good[field.name] = _STAND_IN.get(type(_plain(field.type)), "")
        return cls(**good), wrong


def _plain(info: msgspec.inspect.Type) -> msgspec.inspect.Type:
    return info.type if isinstance(info, msgspec.inspect.Metadata) else info


def _reject(wrong: dict[str, str], problems: list[tuple[str, str]]) -> None:
    """Raise RecordError with every wrong field: those of the wrong type, then the checks that
    failed on the others."""
    errors = list(wrong.values())
    errors += [message for field, message in problems if field not in wrong]
    if errors:
        raise RecordError(*errors)


# Already UTC and in its shortest exact form (what producers mostly send): kept as it is once
# datetime has checked the date is real; anything else takes the general path below.
_CANONICAL_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{3}|\.[0-9]{6})?Z")


def _utc(value: str, field: str) -> str:
    if _CANONICAL_UTC.fullmatch(value) and value[-4:-1] != "000":
        try:
            datetime.fromisoformat(value)
            return value
        except ValueError:
            pass
    try:
        moment = msgspec.convert(value, AwareDatetime)
    except msgspec.ValidationError:
        raise RecordError(f"{field}: expected an RFC 3339 date-time with a time zone, got {value!r}") from None
    moment = moment.astimezone(UTC).replace(tzinfo=None)
    # The shortest exact form: seconds, milliseconds or microseconds.
    spec = "seconds" if not moment.microsecond else "milliseconds" if not moment.microsecond % 1000 else "microseconds"
    return moment.isoformat(timespec=spec) + "Z"


# What was found valid lately: a set or dict look-up instead of a regex and a date parse per record
# (a request's records mostly share their tenant, and times at second precision repeat).
_valid_munchkins: set[str] = set()
_utc_of: dict[str, str] = {}
_REMEMBERED = 4096


def _check_munchkin(value: str, problems: list[tuple[str, str]]) -> None:
    if value in _valid_munchkins:
        return
    if not MUNCHKIN_RE.fullmatch(value):
        problems.append(("munchkinId", not_a_munchkin_id(value)))
        return
    if len(_valid_munchkins) >= _REMEMBERED:
        _valid_munchkins.clear()
    _valid_munchkins.add(value)


def _check_key_text(value: str, field: str, problems: list[tuple[str, str]]) -> None:
    """Keys and ids must be non-empty printable text (every backend stores them as text)."""
    if not value:
        problems.append((field, f"{field}: must not be empty"))
    elif not value.isprintable():
        problems.append((field, f"{field}: {value!r} holds control characters"))


def _check_utc(value: str, field: str, problems: list[tuple[str, str]]) -> str:
    """``_utc``, recording the problem instead of raising (the value is then "")."""
    found = _utc_of.get(value)
    if found is not None:
        return found
    try:
        found = _utc(value, field)
    except RecordError as exc:
        problems.append((field, str(exc)))
        return ""
    if len(_utc_of) >= _REMEMBERED:
        _utc_of.clear()
    _utc_of[value] = found
    return found


def _encode(data: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(data)
    except TypeError as exc:  # orjson refuses integers beyond 64 bits and nesting beyond 254 levels
        if "ecursion" in str(exc):
            raise RecordError(f"record: {TOO_DEEP}") from None
        raise RecordError(f"record: a value cannot be stored ({exc}); integers must fit in 64 bits") from None


# Random bytes → version 4 UUIDs: the version nibble and the variant bits set with one translate
# each over every id of a draw (bytes 6 and 8 of each 16).
_VERSION_4 = bytes((b & 0x0F) | 0x40 for b in range(256))
_VARIANT_RFC = bytes((b & 0x3F) | 0x80 for b in range(256))
_eventids: deque[str] = deque()
os.register_at_fork(after_in_child=_eventids.clear)  # a forked worker draws its own


def new_eventid() -> str:
    """A random (version 4) UUID. Drawn a thousand at a time: one urandom call instead of one each."""
    try:
        return _eventids.popleft()
    except IndexError:
        drawn = bytearray(os.urandom(16 * 1024))
        drawn[6::16] = drawn[6::16].translate(_VERSION_4)
        drawn[8::16] = drawn[8::16].translate(_VARIANT_RFC)
        h = drawn.hex()
        _eventids.extend(
            f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-{h[i + 16 : i + 20]}-{h[i + 20 : i + 32]}"
            for i in range(0, len(h), 32)
        )
        return _eventids.popleft()


# -- one record → one event ---------------------------------------------------------------------


class Validator:
    """Checks records of one stream against the catalog and encodes them as events."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._descriptions: dict[int, tuple[ActivityType, str, dict[str, str]]] = {}
        self._by_stream = {
            "activity": self._activity,
            "audit": self._audit,
            "notification": self._notification,
        }

    def event(self, stream: str, raw: bytes | msgspec.Raw) -> Event:
        """Raises RecordError naming the field and value."""
        if len(raw) > MAX_RECORD_BYTES:
            raise RecordError(f"record: {len(raw)} bytes is over the {MAX_RECORD_BYTES}-byte limit for one record")
        return self._by_stream[stream](raw)  # msgspec reads a Raw in place: no copy

    def _activity(self, raw: bytes) -> Event:
        try:
            record, wrong = _typed(ActivityIn, raw)
        except RecordError:
            if _kind(raw) is not None:
                return self._custom_object(raw)
            raise
        if record.kind is not None or (wrong and _kind(raw) is not None):
            return self._custom_object(raw)
        problems: list[tuple[str, str]] = []
        munchkin = record.munchkinId
        _check_munchkin(munchkin, problems)
        _check_key_text(record.marketoGUID, "marketoGUID", problems)
        activity = self.catalog.activity_type(munchkin, record.activityTypeId)
        if activity is None:
            problems.append((
                "activityTypeId",
                f"activityTypeId: {record.activityTypeId} is not in the catalog of {munchkin}"
                " (load the tenant's Get Activity Types response to add it)",
            ))  # fmt: skip
        attributes = record.attributes
        if len(attributes) > MAX_ATTRIBUTES:
            problems.append(("attributes", f"attributes: {len(attributes)} attributes; the limit is {MAX_ATTRIBUTES}"))
        elif len(raw) > MAX_ATTRIBUTE_VALUE_BYTES:  # only then can one value be over the limit
            for i, a in enumerate(attributes):
                if len(orjson.dumps(a.value)) > MAX_ATTRIBUTE_VALUE_BYTES:
                    problems.append((
                        "attributes",
                        f"attributes[{i}].value: the value of {a.name!r} is over {MAX_ATTRIBUTE_VALUE_BYTES} bytes",
                    ))  # fmt: skip
        activity_date = _check_utc(record.activityDate, "activityDate", problems)
        if wrong or problems or activity is None:
            _reject(wrong, problems)
        assert activity is not None
        ce_type, data_types = self._described(activity)
        stored_attributes = [
            {"name": a.name, "dataType": data_types.get(a.name, "string"), "value": a.value} for a in attributes
        ]
        data = {
            "munchkinId": munchkin,
            "leadId": str(record.leadId),
            "activityDate": activity_date,
            "activityTypeId": activity.id,
            "activityType": activity.name,
            "activityLogItemId": record.id,
            "primaryAttributeValueId": record.primaryAttributeValueId,
            "primaryAttributeValue": record.primaryAttributeValue,
        }
        if record.campaignId is not None:
            data["campaignId"] = record.campaignId
        data["attributes"] = stored_attributes
        return Event(
            eventid=new_eventid(),
            stream="activity",
            munchkin_id=munchkin,
            etype=str(activity.id),
            type=ce_type,
            id=record.marketoGUID,
            time=activity_date,
            key=f"activity/{munchkin}/{record.marketoGUID}",
            data=_encode(data),
        )

    def _described(self, activity: ActivityType) -> tuple[str, dict[str, str]]:
        """The activity type's CloudEvents type and attribute data types, worked out once per type."""
        known = self._descriptions.get(id(activity))
        if known is None or known[0] is not activity:  # the entry holds its type, so ids stay unique
            if len(self._descriptions) > 4096:
                self._descriptions.clear()
            data_types = (
                {activity.primary_attribute.name: activity.primary_attribute.data_type}
                if activity.primary_attribute
                else {}
            )
            data_types.update((name, attribute.data_type) for name, attribute in activity.attributes.items())
            known = self._descriptions[id(activity)] = (activity, activity.ce_type, data_types)
        return known[1], known[2]

    def _custom_object(self, raw: bytes) -> Event:
        record, wrong = _typed(CustomObjectIn, raw)
        problems: list[tuple[str, str]] = []
        if record.kind != "customObject":
            problems.append(("kind", f"kind: expected 'customObject' (the only kind), got {record.kind!r}"))
        munchkin = record.munchkinId
        _check_munchkin(munchkin, problems)
        if not _API_NAME.fullmatch(record.apiName):
            problems.append(
                ("apiName", f"apiName: {record.apiName!r} is not a custom object API name (letters, digits, _)")
            )
        if record.action not in CUSTOM_OBJECT_ACTIONS:
            problems.append(
                ("action", f"action: {record.action!r} is not an action (one of: {', '.join(CUSTOM_OBJECT_ACTIONS)})")
            )
        _check_key_text(record.marketoGUID, "marketoGUID", problems)
        updated_at = _check_utc(record.updatedAt, "updatedAt", problems)
        if wrong or problems:
            _reject(wrong, problems)
        data = {
            "munchkinId": munchkin,
            "apiName": record.apiName,
            "marketoGUID": record.marketoGUID,
            "leadId": record.leadId,
            "action": record.action,
            "updatedAt": updated_at,
            "fields": record.fields,
        }
        return Event(
            eventid=new_eventid(),
            stream="activity",
            munchkin_id=munchkin,
            etype=f"co:{record.apiName}",
            type=custom_object_ce_type(record.apiName),
            id=record.marketoGUID,
            time=updated_at,
            # one record changes many times: each change is its own event
            key=f"activity/{munchkin}/co/{record.apiName}/{record.marketoGUID}/{record.action}/{updated_at}",
            data=_encode(data),
        )

    def _audit(self, raw: bytes) -> Event:
        record, wrong = _typed(AuditIn, raw)
        problems: list[tuple[str, str]] = []
        munchkin = record.munchkinId
        _check_munchkin(munchkin, problems)
        components = self.catalog.audit_components
        actions = components.get(record.componentType)
        if actions is None:
            problems.append((
                "componentType",
                f"componentType: {record.componentType!r} is not an audit component of the catalog"
                f" (one of: {', '.join(sorted(components))})",
            ))  # fmt: skip
        elif record.eventAction not in actions:
            problems.append((
                "eventAction",
                f"eventAction: {record.eventAction!r} is not an action of {record.componentType!r}"
                f" (one of: {', '.join(sorted(actions))})",
            ))  # fmt: skip
        event_id, event_time = self._id_and_time(record.id, record.time, problems)
        if wrong or problems:
            _reject(wrong, problems)
        data: dict[str, Any] = {
            "componentId": record.componentId,
            "componentType": record.componentType,
            "eventAction": record.eventAction,
            "munchkinId": munchkin,
        }
        if record.imsOrgId is not None:
            data["imsOrgId"] = record.imsOrgId
        data["user"] = record.user
        data["userId"] = record.userId
        return self._keyed(
            "audit",
            munchkin,
            f"{record.componentType}:{record.eventAction}",
            audit_ce_type(record.componentType),
            event_id,
            event_time,
            data,
        )

    def _notification(self, raw: bytes) -> Event:
        record, wrong = _typed(NotificationIn, raw)
        problems: list[tuple[str, str]] = []
        munchkin = record.munchkinId
        _check_munchkin(munchkin, problems)
        if record.componentType not in self.catalog.notification_kinds:
            problems.append((
                "componentType",
                f"componentType: {record.componentType!r} is not a notification kind"
                f" (one of: {', '.join(self.catalog.notification_kinds)})",
            ))  # fmt: skip
        event_id, event_time = self._id_and_time(record.id, record.time, problems)
        if wrong or problems:
            _reject(wrong, problems)
        data: dict[str, Any] = {"munchkinId": munchkin}
        if record.imsOrgId is not None:
            data["imsOrgId"] = record.imsOrgId
        data["componentType"] = record.componentType
        if record.subType is not None:
            data["subType"] = record.subType
        data["eventAction"] = record.eventAction
        return self._keyed(
            "notification",
            munchkin,
            record.componentType,
            notification_ce_type(record.componentType),
            event_id,
            event_time,
            data,
        )

    @staticmethod
    def _id_and_time(
        given_id: int | str | None, given_time: str | None, problems: list[tuple[str, str]]
    ) -> tuple[str | None, str | None]:
        """Audit and notification ids and times as given (checked), or None when absent."""
        event_id = None if given_id is None else str(given_id)
        if event_id is not None:
            _check_key_text(event_id, "id", problems)
        return event_id, None if given_time is None else _check_utc(given_time, "time", problems)

    @staticmethod
    def _keyed(
        stream: str,
        munchkin: str,
        etype: str,
        ce_type: str,
        given_id: str | None,
        given_time: str | None,
        data: dict[str, Any],
    ) -> Event:
        """Audit and notification events: ``id`` and ``time`` are assigned when absent."""
        eventid = new_eventid()
        event_id = eventid if given_id is None else given_id
        return Event(
            eventid=eventid,
            stream=stream,
            munchkin_id=munchkin,
            etype=etype,
            type=ce_type,
            id=event_id,
            time=now_rfc3339(micros=True) if given_time is None else given_time,
            key=f"{stream}/{munchkin}/{event_id}",
            data=_encode(data),
        )


class Rejection(msgspec.Struct):
    index: int
    errors: list[str]


def validate_records(
    validator: Validator, stream: str, records: list[msgspec.Raw | bytes]
) -> tuple[list[Event], list[Rejection]]:
    """Every record checked on its own: the good ones become events, the bad ones rejections."""
    events: list[Event] = []
    rejected: list[Rejection] = []
    for index, raw in enumerate(records):
        try:
            events.append(validator.event(stream, raw))
        except RecordError as exc:
            rejected.append(Rejection(index, exc.errors))
    return events, rejected
