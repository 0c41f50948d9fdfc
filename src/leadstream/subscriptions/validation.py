"""Checking what a subscriber registers: a new subscription, a patch, an endpoint's address.

Creating and patching both end in a full decode of the merged document, so every rule is
checked in one place and every error names its field. A PATCH that sends ``"***"`` back in place
of a secret keeps the stored one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any
from urllib.parse import SplitResult, urlsplit

import msgspec

from leadstream.catalog import Catalog
from leadstream.errors import Invalid, LeadstreamError, describe_invalid, every_invalid, invalid_fields
from leadstream.events import AwareDatetime
from leadstream.filtering import compile_pattern
from leadstream.security.guard import GuardPolicy, refusal
from leadstream.security.signing import check_hmac_secret, new_hmac_secret
from leadstream.security.tls import client_context
from leadstream.subscriptions.config import (
    DEFAULT_FORMAT,
    IMMUTABLE,
    REDACTED,
    OAuth2Auth,
    Signing,
    SubscriptionConfig,
)
from leadstream.subscriptions.matching import compile_type_filter
from leadstream.tenants import check_munchkin_id

# -- decoding -------------------------------------------------------------------------------------


MAX_BODY_DEPTH = 64  # far more than any configuration needs; deeper would only exhaust the stack later
TOO_DEEP = f"the body nests arrays and objects more than {MAX_BODY_DEPTH} levels deep"


def json_depth(document: Any) -> int:
    """How deeply arrays and objects nest in a decoded document (without recursing)."""
    deepest, todo = 0, [(document, 1)]  # (value, its depth)
    while todo:
        value, depth = todo.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, depth)
            todo.extend((item, depth + 1) for item in (value.values() if isinstance(value, dict) else value))
    return deepest


def decode_body(body: bytes) -> dict[str, Any]:
    """A request body as a JSON object; a 400 when it is not JSON or not an object (a request
    that cannot be read, as ingest says of its bodies), before any field is looked at."""
    try:
        document = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise LeadstreamError(f"the body is not valid JSON: {exc}", field="body") from None
    except RecursionError:
        raise LeadstreamError(TOO_DEEP, field="body") from None
    if json_depth(document) > MAX_BODY_DEPTH:
        raise LeadstreamError(TOO_DEEP, field="body")
    if not isinstance(document, dict):
        raise LeadstreamError(f"the body must be a JSON object, not {_json_kind(document)}", field="body")
    return document


def _json_kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def _convert(document: dict[str, Any]) -> SubscriptionConfig:
    try:
        return msgspec.convert(document, SubscriptionConfig)
    except msgspec.ValidationError as exc:
        problems = every_invalid(document, SubscriptionConfig)
        if problems:
            raise invalid_fields(problems) from None
        field, sentence = describe_invalid(exc, document)
        if not field:
            raise Invalid(f"subscription: {sentence}") from None
        raise Invalid(sentence, field=field) from None


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
    check_munchkin_id(config.munchkinId)
    if config.format == "legacy" and config.stream != "activity":
        raise Invalid(
            f"format: legacy carries the activity stream only; use cloudevents or adobe_io for {config.stream}",
            field="format",
        )
    if config.delivery == "single" and config.format == "legacy":
        raise Invalid(
            "delivery: single is not available with the legacy format (it has no single-event form)", field="delivery"
        )
    if config.customObjects and config.stream != "activity":
        raise Invalid("customObjects: custom objects travel on the activity stream only", field="customObjects")
    check_url(config.endpoint, "endpoint")
    if isinstance(config.auth, OAuth2Auth):
        check_url(config.auth.tokenUrl, "auth.tokenUrl")
    if config.startAt not in ("now", "earliest"):
        start_ms(config.startAt)
    if config.signing is not None:
        _check_signing(config.signing)
    if config.filter is not None:
        compile_pattern(config.filter)
    client_context(config.tls)  # raises for PEM that does not load
    compile_type_filter(config, catalog)  # raises for unknown types


def _check_signing(signing: Signing) -> None:
    if signing.hmacSecret is not None:
        check_hmac_secret(signing.hmacSecret)
    elif not signing.hmac:
        raise Invalid("signing: give hmacSecret (whsec_…) or set hmac to true to have one generated", field="signing")


def complete_signing(config: SubscriptionConfig) -> str | None:
    """Generate the HMAC secret asked for with ``"signing":{"hmac":true}``; return it (shown once)."""
    if config.signing is not None and config.signing.hmacSecret is None and config.signing.hmac:
        config.signing = Signing(hmacSecret=new_hmac_secret())
        return config.signing.hmacSecret
    return None


def start_ms(value: str, field: str = "startAt") -> int:
    """An RFC 3339 ``startAt`` / replay time → ms since the epoch, or Invalid."""
    try:
        moment = msgspec.convert(value, AwareDatetime)
    except msgspec.ValidationError:
        expected = "now, earliest or an RFC 3339 time" if field == "startAt" else "an RFC 3339 time or a position token"
        raise Invalid(f"{field}: expected {expected} with a time zone, got {value!r}", field=field) from None
    return int(moment.timestamp() * 1000)


def split_url(url: str, field: str) -> SplitResult:
    """``url``'s parts, or Invalid naming the field (urlsplit raises on a bad bracketed host)."""
    try:
        return urlsplit(url)
    except ValueError as exc:
        raise Invalid(f"{field}: not a valid URL ({exc}), got {url!r}", field=field) from None


def check_url(url: str, field: str) -> None:
    parts = split_url(url, field)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(f"{field}: must be an http(s) URL with a host, got {url!r}", field=field)
    if parts.username or parts.password:
        raise Invalid(f"{field}: credentials in the URL are not allowed; use auth", field=field)
    try:
        _ = parts.port  # parsed on access: a bad one raises
    except ValueError:
        raise Invalid(f"{field}: the port of {url!r} is not valid", field=field) from None


# -- the endpoint's address -----------------------------------------------------------------------


async def check_endpoints(config: SubscriptionConfig, policy: GuardPolicy) -> None:
    """The endpoint and the OAuth2 token URL, checked against the outbound guard."""
    await check_endpoint(config.endpoint, policy)
    if isinstance(config.auth, OAuth2Auth):
        await check_endpoint(config.auth.tokenUrl, policy, field="auth.tokenUrl")


async def check_endpoint(url: str, policy: GuardPolicy, field: str = "endpoint") -> None:
    """Refuse endpoints that reach this machine or its private network, unless allowed.

    A literal address is checked as is; a name is resolved (2 s at most) and refused if any of
    its addresses is not allowed. A name that does not resolve yet is accepted: the sender's
    connector checks every address it connects to (DNS may change meanwhile).
    """
    if policy.allow_private:
        return
    host = (urlsplit(url).hostname or "").rstrip(".")
    try:
        addresses = [str(ipaddress.ip_address(host.split("%", 1)[0]))]
    except ValueError:  # a name
        try:
            infos = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM), 2.0
            )
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
