"""Subscriptions (SPEC §3): what a subscriber registers, checked and completed with every default.

A subscription's settings are one msgspec struct, stored as JSON (the store keeps it opaque).
Creating and patching both end in a full decode of the merged document, so every rule is
checked in one place and every error names its field. Secrets (OAuth2 client secret, bearer
token, HMAC secret) are stored but never shown: responses carry ``"***"`` in their place, and a
PATCH that sends ``"***"`` back keeps the stored secret.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Callable
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec

from leadstream.catalog import Catalog
from leadstream.delivery.guard import GuardPolicy, refusal
from leadstream.delivery.tls import TlsOptions, client_context
from leadstream.errors import Invalid
from leadstream.events import MUNCHKIN_RE, AwareDatetime, Event

REDACTED = "***"
DAY_MS = 86_400_000
DEFAULT_FORMAT = {"activity": "legacy", "audit": "adobe_io", "notification": "adobe_io"}
IMMUTABLE = ("munchkinId", "stream")

# Every interval may go down to 10 ms so that tests run fast (SPEC §3).
Millis = Annotated[int, msgspec.Meta(ge=10, le=DAY_MS)]


class NoAuth(msgspec.Struct, tag="none", tag_field="type", forbid_unknown_fields=True):
    pass


class TokenAuth(msgspec.Struct, tag="token", tag_field="type", forbid_unknown_fields=True):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=8192)]


class OAuth2Auth(msgspec.Struct, tag="oauth2", tag_field="type", forbid_unknown_fields=True):
    tokenUrl: str
    clientId: Annotated[str, msgspec.Meta(min_length=1)]
    clientSecret: Annotated[str, msgspec.Meta(min_length=1)]
    scope: str | None = None


Auth = NoAuth | TokenAuth | OAuth2Auth


class Signing(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Standard Webhooks HMAC: a given ``whsec_`` secret, or ``hmac: true`` to have one generated."""

    hmacSecret: str | None = None
    hmac: bool = False


class SubscriptionConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The settings of one subscription, defaults as the platform publishes them."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    munchkinId: str
    stream: Literal["activity", "audit", "notification"]
    endpoint: Annotated[str, msgspec.Meta(max_length=2048)]
    eventTypes: list[int | str] = msgspec.field(default_factory=lambda: ["*"])
    customObjects: bool = False
    format: Literal["legacy", "cloudevents", "adobe_io"] | None = None  # None: the stream's default
    delivery: Literal["batch", "single"] = "batch"
    auth: Auth = msgspec.field(default_factory=NoAuth)
    batchSize: Annotated[int, msgspec.Meta(ge=1, le=500)] = 500
    maxBatchBytes: Annotated[int, msgspec.Meta(ge=1024, le=16 * 1024 * 1024)] = 2 * 1024 * 1024
    pushIntervalMs: Millis = 2000
    timeoutMs: Annotated[int, msgspec.Meta(ge=10, le=600_000)] = 20_000
    retryAttempts: Annotated[int, msgspec.Meta(ge=0, le=100)] = 3
    retryIntervalMs: Millis = 180_000
    probeIntervalMs: Millis = 180_000
    startAt: str = "now"  # now | earliest | RFC 3339 time; resolved to a cursor once, at creation
    challenge: bool = False  # legacy only: opt in to the Adobe I/O challenge (always on for the others)
    signing: Signing | None = None
    filter: dict[str, Any] | None = None  # an Event-Ruler pattern over the CloudEvent (SPEC §5)
    tls: TlsOptions | None = None  # an extra CA bundle, a client certificate (mTLS)

    @property
    def body_format(self) -> str:
        return self.format or DEFAULT_FORMAT[self.stream]

    @property
    def needs_challenge(self) -> bool:
        return self.body_format != "legacy" or self.challenge


_decoder = msgspec.json.Decoder(SubscriptionConfig)
_encoder = msgspec.json.Encoder()


# -- errors that name the field -------------------------------------------------------------------


def _field_error(exc: msgspec.ValidationError, document: dict[str, Any]) -> Invalid:
    """msgspec's "Expected `int` >= 1 - at `$.batchSize`" → "batchSize: expected `int` >= 1, got 0"."""
    message = str(exc)
    found = re.match(r"Object (missing required|contains unknown) field `([^`]+)`(?: - at `\$\.?([^`]*)`)?", message)
    if found:
        field = ".".join(part for part in (found.group(3), found.group(2)) if part)
        what = "required field is missing" if found.group(1) == "missing required" else "unknown field"
        return Invalid(f"{field}: {what}", field=field)
    if " - at `$" in message:
        text, path = message.rsplit(" - at `", 1)
        field = path.rstrip("`").removeprefix("$").removeprefix(".")
        text = f"{text[0].lower()}{text[1:]}"
        if ", got " not in text and "invalid" not in text:
            text += f", got {_value_at(document, field)!r}"
        return Invalid(f"{field}: {text}", field=field)
    return Invalid(f"subscription: {message[0].lower()}{message[1:]}")


def _value_at(document: Any, field: str) -> Any:
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", field):
        try:
            document = document[name] if name else document[int(index)]
        except (KeyError, IndexError, TypeError):
            return None
    return document


def decode_body(body: bytes) -> dict[str, Any]:
    """A request body as a JSON object, or Invalid."""
    try:
        document = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise Invalid(f"the body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise Invalid("the body must be a JSON object")
    return document


def _convert(document: dict[str, Any]) -> SubscriptionConfig:
    try:
        return msgspec.convert(document, SubscriptionConfig)
    except msgspec.ValidationError as exc:
        raise _field_error(exc, document) from None


# -- create and patch ------------------------------------------------------------------------------


def parse_new(document: dict[str, Any], catalog: Catalog) -> SubscriptionConfig:
    """A new subscription from a POST body: decoded, defaults filled in, every rule checked.

    The endpoint's address is checked separately (``check_endpoint``: it may resolve a name).
    Raises Invalid naming the field.
    """
    config = _convert(document)
    config.format = config.body_format
    _check_rules(config, catalog)
    return config


def apply_patch(current: SubscriptionConfig, patch: dict[str, Any], catalog: Catalog) -> SubscriptionConfig:
    """``current`` with the fields of a PATCH body replaced, checked like a new one."""
    for field in IMMUTABLE:
        if field in patch and patch[field] != getattr(current, field):
            raise Invalid(f"{field}: cannot be changed; create a new subscription instead", field=field)
    if "startAt" in patch:
        raise Invalid("startAt: applies at creation only; use POST …/replay to move the cursor", field="startAt")
    merged = msgspec.to_builtins(current)
    merged.update(patch)
    _keep_redacted_secrets(merged, current)
    if "stream" not in patch and "format" in patch and patch["format"] is None:
        merged["format"] = DEFAULT_FORMAT[current.stream]
    return parse_new(merged, catalog)


def _keep_redacted_secrets(merged: dict[str, Any], current: SubscriptionConfig) -> None:
    """A client that GETs, edits and PATCHes the whole document sends "***" back: keep the secret."""
    auth = merged.get("auth")
    if isinstance(auth, dict) and auth.get("type") == current.auth.__struct_config__.tag:
        for name in ("token", "clientSecret"):
            if auth.get(name) == REDACTED and hasattr(current.auth, name):
                auth[name] = getattr(current.auth, name)
    signing = merged.get("signing")
    if isinstance(signing, dict) and signing.get("hmacSecret") == REDACTED and current.signing is not None:
        signing["hmacSecret"] = current.signing.hmacSecret
    tls = merged.get("tls")
    if isinstance(tls, dict) and tls.get("clientKey") == REDACTED and current.tls is not None:
        tls["clientKey"] = current.tls.clientKey


def _check_rules(config: SubscriptionConfig, catalog: Catalog) -> None:
    if not MUNCHKIN_RE.fullmatch(config.munchkinId):
        raise Invalid(
            f"munchkinId: {config.munchkinId!r} is not a Munchkin ID (3 digits, 3 capitals, 3 digits: 123-ABC-456)",
            field="munchkinId",
        )
    if config.format == "legacy" and config.stream != "activity":
        raise Invalid(f"format: legacy carries the activity stream only; use cloudevents or adobe_io for {config.stream}", field="format")
    if config.delivery == "single" and config.format == "legacy":
        raise Invalid("delivery: single is not available with the legacy format (it has no single-event form)", field="delivery")
    if config.customObjects and config.stream != "activity":
        raise Invalid("customObjects: custom objects travel on the activity stream only", field="customObjects")
    _check_url(config.endpoint, "endpoint")
    if isinstance(config.auth, OAuth2Auth):
        _check_url(config.auth.tokenUrl, "auth.tokenUrl")
    if config.startAt not in ("now", "earliest"):
        start_ms(config.startAt)
    if config.signing is not None:
        _check_signing(config.signing)
    if config.filter is not None:
        _check_filter(config.filter)
    client_context(config.tls)  # raises for PEM that does not load
    compile_type_filter(config, catalog)  # raises for unknown types


def _check_signing(signing: Signing) -> None:
    from leadstream.delivery.signing import check_hmac_secret

    if signing.hmacSecret is not None:
        check_hmac_secret(signing.hmacSecret)
    elif not signing.hmac:
        raise Invalid("signing: give hmacSecret (whsec_…) or set hmac to true to have one generated", field="signing")


def complete_signing(config: SubscriptionConfig) -> str | None:
    """Generate the HMAC secret asked for with ``"signing":{"hmac":true}``; return it (shown once)."""
    from leadstream.delivery.signing import new_hmac_secret

    if config.signing is not None and config.signing.hmacSecret is None and config.signing.hmac:
        config.signing = Signing(hmacSecret=new_hmac_secret())
        return config.signing.hmacSecret
    return None


def _check_filter(pattern: dict[str, Any]) -> None:
    try:
        from leadstream.filtering import compile_pattern
    except ImportError:  # the filter module has not landed: accept the pattern as given
        return
    compile_pattern(pattern)


def start_ms(value: str, field: str = "startAt") -> int:
    """An RFC 3339 ``startAt`` / replay time → ms since the epoch, or Invalid."""
    try:
        moment = msgspec.convert(value, AwareDatetime)
    except msgspec.ValidationError:
        expected = "now, earliest or an RFC 3339 time" if field == "startAt" else "an RFC 3339 time or a position"
        raise Invalid(f"{field}: expected {expected} with a time zone, got {value!r}", field=field) from None
    return int(moment.timestamp() * 1000)


def _check_url(url: str, field: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(f"{field}: must be an http(s) URL with a host, got {url!r}", field=field)
    if parts.username or parts.password:
        raise Invalid(f"{field}: credentials in the URL are not allowed; use auth", field=field)
    try:
        parts.port
    except ValueError:
        raise Invalid(f"{field}: the port of {url!r} is not valid", field=field) from None


# -- the endpoint's address -----------------------------------------------------------------------


async def check_endpoint(url: str, *, allow_private: bool, allowed_cidrs: tuple[str, ...] = (), field: str = "endpoint") -> None:
    """Refuse endpoints that reach this machine or its private network, unless allowed.

    A literal address is checked as is; a name is resolved (2 s at most) and refused if any of
    its addresses is not allowed. A name that does not resolve yet is accepted: the sender's
    connector checks every address it connects to (DNS may change meanwhile).
    """
    policy = GuardPolicy.of(allow_private, allowed_cidrs)
    if policy.allow_private:
        return
    host = (urlsplit(url).hostname or "").rstrip(".")
    try:
        addresses = [str(ipaddress.ip_address(host.split("%", 1)[0]))]
    except ValueError:  # a name
        try:
            infos = await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM), 2.0)
        except (OSError, TimeoutError):
            return
        addresses = [str(info[4][0]) for info in infos]
    for address in addresses:
        if not policy.allows(address):
            raise Invalid(
                f"{field}: {host} is a {refusal(address)} address; the server does not deliver there"
                " (start it with --allow-private-endpoints for demos and tests, or allow the range)",
                field=field,
            )


# -- which events a subscription takes ------------------------------------------------------------


def compile_type_filter(config: SubscriptionConfig, catalog: Catalog) -> Callable[[Event], bool]:
    """The subscription's stream, tenant and event types as one predicate over events.

    Types are checked against the catalog (Invalid names the entry). Activity names resolve to
    ids once, here; ``"*"`` takes every activity type, present and future, but custom objects
    only with ``customObjects``.
    """
    stream, munchkin = config.stream, config.munchkinId
    wanted: set[str] = set()
    everything = False
    if not config.eventTypes and not (stream == "activity" and config.customObjects):
        raise Invalid('eventTypes: name at least one type, or ["*"] for all', field="eventTypes")
    for index, entry in enumerate(config.eventTypes):
        where = f"eventTypes[{index}]"
        if entry == "*":
            everything = True
        elif stream == "activity":
            wanted.add(_activity_etype(entry, catalog, munchkin, where))
        elif stream == "audit":
            wanted.update(_audit_etypes(entry, catalog, where))
        else:
            wanted.add(_notification_etype(entry, catalog, where))
    if stream == "activity":
        custom_objects = config.customObjects
        if everything:
            return lambda e: e.munchkin_id == munchkin and e.stream == stream and (custom_objects or not e.etype.startswith("co:"))
        return lambda e: e.munchkin_id == munchkin and e.stream == stream and (
            e.etype in wanted or (custom_objects and e.etype.startswith("co:"))
        )
    if everything:
        return lambda e: e.munchkin_id == munchkin and e.stream == stream
    return lambda e: e.munchkin_id == munchkin and e.stream == stream and e.etype in wanted


def _activity_etype(entry: int | str, catalog: Catalog, munchkin: str, where: str) -> str:
    if isinstance(entry, int) or (isinstance(entry, str) and entry.strip().isdigit()):
        type_id = int(entry)
        if catalog.activity_type(munchkin, type_id) is None:
            raise Invalid(f"{where}: {type_id} is not an activity type id of the catalog of {munchkin}", field=where)
        return str(type_id)
    found = catalog.activity_type_named(entry, munchkin)
    if found is None:
        raise Invalid(f"{where}: {entry!r} is not an activity type name of the catalog of {munchkin}", field=where)
    return str(found.id)


def _audit_etypes(entry: int | str, catalog: Catalog, where: str) -> set[str]:
    """"Email" → every action of Email; "Email:approve" → that one (names matched case-insensitively)."""
    if not isinstance(entry, str):
        raise Invalid(f"{where}: audit types are a component or component:action, got {entry!r}", field=where)
    component_name, _, action_name = entry.partition(":")
    by_lower = {c.lower(): c for c in catalog.audit_components}
    component = by_lower.get(component_name.strip().lower())
    if component is None:
        raise Invalid(f"{where}: {component_name!r} is not an audit component of the catalog", field=where)
    actions = catalog.audit_components[component]
    if not action_name:
        return {f"{component}:{a}" for a in actions}
    action = {a.lower(): a for a in actions}.get(action_name.strip().lower())
    if action is None:
        raise Invalid(
            f"{where}: {action_name!r} is not an action of {component!r} (one of: {', '.join(sorted(actions))})",
            field=where,
        )
    return {f"{component}:{action}"}


def _notification_etype(entry: int | str, catalog: Catalog, where: str) -> str:
    if not isinstance(entry, str) or entry not in catalog.notification_kinds:
        raise Invalid(
            f"{where}: {entry!r} is not a notification kind (one of: {', '.join(catalog.notification_kinds)})",
            field=where,
        )
    return entry


# -- storage and responses ------------------------------------------------------------------------


def encode(config: SubscriptionConfig) -> bytes:
    return _encoder.encode(config)


def decode(stored: bytes) -> SubscriptionConfig:
    return _decoder.decode(stored)


def redacted(config: SubscriptionConfig) -> dict[str, Any]:
    """The settings as a response shows them: every secret replaced by "***"."""
    document: dict[str, Any] = msgspec.to_builtins(config)
    auth = document["auth"]
    for name in ("token", "clientSecret"):
        if name in auth:
            auth[name] = REDACTED
    if document.get("signing") and document["signing"].get("hmacSecret"):
        document["signing"] = {"hmacSecret": REDACTED}
    if document.get("tls") and document["tls"].get("clientKey"):
        document["tls"]["clientKey"] = REDACTED
    return document


def compile_matcher(config: SubscriptionConfig, catalog: Catalog, sub_id: str) -> Callable[[Event], bool]:
    """Everything that decides whether an event goes to this subscription: stream, tenant, event
    types, and the subscriber's own ``filter`` over the CloudEvent (SPEC §5), if any."""
    by_type = compile_type_filter(config, catalog)
    if config.filter is None:
        return by_type
    from leadstream import formats
    from leadstream.filtering import compile_pattern

    pattern = compile_pattern(config.filter)
    return lambda e: by_type(e) and pattern(formats.cloudevent(e, subscription_id=sub_id))
