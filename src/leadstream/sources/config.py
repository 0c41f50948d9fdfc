"""A source's settings (SPEC §10.1): one msgspec struct with Marketo's documented defaults, stored as
JSON with the client secret sealed, shown with it masked; and the checks of a new source or a patch
(every error names its field).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec

from leadstream.catalog import Catalog
from leadstream.catalog.model import CUSTOM_ACTIVITY_MIN_ID, MAX_TYPE_ID
from leadstream.clock import rfc3339
from leadstream.errors import Invalid, describe_invalid, every_invalid, invalid_fields
from leadstream.security.guard import GuardPolicy
from leadstream.security.secretbox import SecretBox
from leadstream.subscriptions.config import DAY_MS, REDACTED
from leadstream.subscriptions.validation import check_endpoint, split_url
from leadstream.tenants import check_munchkin_id

SECRET_CONTEXT = "source.clientSecret"
IMMUTABLE = ("type", "munchkinId", "startAt")
FUTURE_SLACK_MS = 60_000  # a startAt this far ahead of our clock is still taken as "now"


class MarketoSourceConfig(msgspec.Struct, forbid_unknown_fields=True):
    type: Literal["marketo"]
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    munchkinId: str
    restUrl: Annotated[str, msgspec.Meta(max_length=2048)]
    clientId: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    clientSecret: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    identityUrl: Annotated[str, msgspec.Meta(max_length=2048)] | None = None
    activityTypes: list[int | str] = msgspec.field(default_factory=lambda: ["*"])
    deletedLeads: bool = True
    startAt: str = "now"  # resolved to an RFC 3339 time at creation
    pollIntervalMs: Annotated[int, msgspec.Meta(ge=10, le=DAY_MS)] = 5000
    dailyQuota: Annotated[int, msgspec.Meta(ge=1, le=100_000_000)] = 50_000
    quotaShare: float = 0.5
    callsPer20s: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 100
    maxConcurrent: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 10

    @property
    def identity(self) -> str:
        return (self.identityUrl or f"{self.restUrl.rstrip('/')}/identity").rstrip("/")


_encoder = msgspec.json.Encoder()


def seal(config: MarketoSourceConfig, box: SecretBox | None) -> bytes:
    secret = box.encrypt(config.clientSecret, SECRET_CONTEXT) if box is not None else config.clientSecret
    return _encoder.encode(msgspec.structs.replace(config, clientSecret=secret))


def unseal(stored: bytes, box: SecretBox | None) -> MarketoSourceConfig:
    config = msgspec.json.decode(stored, type=MarketoSourceConfig)
    if box is not None:
        config.clientSecret = box.decrypt(config.clientSecret, SECRET_CONTEXT)
    return config


def redacted(config: MarketoSourceConfig) -> dict[str, Any]:
    document: dict[str, Any] = msgspec.to_builtins(config)
    document["clientSecret"] = REDACTED
    return document


# -- checks ---------------------------------------------------------------------------------------


def _convert(document: dict[str, Any]) -> MarketoSourceConfig:
    problems: list[tuple[str, str]] = []
    if "type" not in document:
        problems.append(("type", 'type: required; the one source type is "marketo"'))
    elif document["type"] != "marketo":
        problems.append(("type", f'type: {document["type"]!r} is not a source type (the one there is: "marketo")'))
    try:
        config = msgspec.convert(document, MarketoSourceConfig)
    except msgspec.ValidationError as exc:
        problems += [p for p in every_invalid(document, MarketoSourceConfig) if p[0] != "type"]
        if not problems:
            field, sentence = describe_invalid(exc, document)
            if not field:
                raise Invalid(f"source: {sentence}") from None
            problems.append((field, sentence))
    if problems:
        raise invalid_fields(problems)
    return config


async def parse_new(
    document: dict[str, Any], catalog: Catalog, policy: GuardPolicy, *, now_ms: int, retention_ms: int
) -> MarketoSourceConfig:
    """A new source from a POST body: decoded, defaults filled in, ``startAt`` resolved, every rule checked."""
    config = _convert(document)
    try:
        config.startAt = _resolve_start(config.startAt, now_ms, retention_ms)
    except Invalid as exc:
        wrong_start = tuple(_problems_of(exc))
    else:
        wrong_start = ()
    await _check_rules(config, catalog, policy, wrong_start)
    return config


async def apply_patch(
    current: MarketoSourceConfig, patch: dict[str, Any], catalog: Catalog, policy: GuardPolicy
) -> MarketoSourceConfig:
    """``current`` with the fields of a PATCH body replaced; ``"***"`` for the secret keeps it."""
    for field in IMMUTABLE:
        if field in patch and patch[field] != getattr(current, field):
            raise Invalid(f"{field}: cannot be changed; create a new source instead", field=field)
    merged = {**msgspec.to_builtins(current), **patch}
    if merged.get("clientSecret") == REDACTED:
        merged["clientSecret"] = current.clientSecret
    config = _convert(merged)
    await _check_rules(config, catalog, policy)
    return config


def _resolve_start(value: str, now_ms: int, retention_ms: int) -> str:
    if value == "now":
        return rfc3339(now_ms) or ""
    try:
        start = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Invalid(f'startAt: "now" or an RFC 3339 time, got {value!r}', field="startAt") from None
    if start.tzinfo is None:
        raise Invalid(f"startAt: {value!r} has no UTC offset (write 2026-11-28T10:00:00Z)", field="startAt")
    start_ms = int(start.timestamp() * 1000)
    if start_ms < now_ms - retention_ms:
        oldest = rfc3339(now_ms - retention_ms)
        raise Invalid(f"startAt: {value} is outside retention (the oldest allowed is {oldest})", field="startAt")
    if start_ms > now_ms + FUTURE_SLACK_MS:
        raise Invalid(f"startAt: {value} is in the future", field="startAt")
    return start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _check_rules(
    config: MarketoSourceConfig,
    catalog: Catalog,
    policy: GuardPolicy,
    problems_so_far: tuple[tuple[str, str], ...] = (),
) -> None:
    """Every rule a decoded source must meet; one 422 names each field that breaks one (and those
    found before, ``problems_so_far``)."""
    problems = list(problems_so_far)
    rules: list[Callable[[], object]] = [
        lambda: check_munchkin_id(config.munchkinId),
        lambda: _check_share(config.quotaShare),
        lambda: resolve_types(config.activityTypes, catalog, config.munchkinId),
    ]
    for rule in rules:
        try:
            rule()
        except Invalid as exc:
            problems += _problems_of(exc)
    for field, url in (("restUrl", config.restUrl), ("identityUrl", config.identityUrl)):
        try:
            if url is not None:
                await _check_url(field, url, policy)
        except Invalid as exc:
            problems += _problems_of(exc)
    if problems:
        raise invalid_fields(problems)


def _problems_of(exc: Invalid) -> list[tuple[str, str]]:
    """The (field, sentence) pairs of an Invalid, whether it names one field or several."""
    errors = exc.extra.get("errors")
    if isinstance(errors, list):
        return [(e["field"], e["detail"]) for e in errors]
    return [(str(exc.extra.get("field", "")), exc.detail)]


def _check_share(share: float) -> None:
    if not 0 < share <= 1:
        raise Invalid(f"quotaShare: a share in (0, 1], got {share!r}", field="quotaShare")


async def _check_url(field: str, url: str, policy: GuardPolicy) -> None:
    parts = split_url(url, field)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise Invalid(f"{field}: an https URL (https://123-ABC-456.mktorest.com), got {url!r}", field=field)
    if parts.scheme == "http" and not policy.allow_private:
        raise Invalid(
            f"{field}: must be https (plain http only with --allow-private-endpoints), got {url!r}", field=field
        )
    if parts.query or parts.fragment:
        raise Invalid(f"{field}: no query or fragment, got {url!r}", field=field)
    await check_endpoint(url, policy, field=field)


def resolve_types(wanted: list[int | str], catalog: Catalog, munchkin_id: str) -> list[int] | None:
    """The type ids of ``activityTypes`` (None: "*", every type the instance lists). Names must be
    in the tenant's catalog; ids must be too, or custom ids the instance will list."""
    if not wanted:
        raise Invalid('activityTypes: at least one type id or name, or ["*"]', field="activityTypes")
    if "*" in wanted:
        if len(wanted) > 1:
            raise Invalid('activityTypes: "*" stands alone (every type)', field="activityTypes")
        return None
    ids: list[int] = []
    problems: list[tuple[str, str]] = []
    for i, entry in enumerate(wanted):
        field = f"activityTypes[{i}]"
        if isinstance(entry, int):
            if not 0 < entry <= MAX_TYPE_ID:
                problems.append((field, f"{field}: {entry} is not an activity type id (a positive 64-bit integer)"))
            elif catalog.activity_type(munchkin_id, entry) is None and entry < CUSTOM_ACTIVITY_MIN_ID:
                problems.append((field, f"{field}: {entry} is not an activity type"))
            ids.append(entry)
            continue
        found = catalog.activity_type_named(entry, munchkin_id)
        if found is None:
            problems.append((field, f"{field}: {entry!r} is not the name of an activity type of {munchkin_id}"))
        else:
            ids.append(found.id)
    if problems:
        raise invalid_fields(problems)
    return sorted(set(ids))
