"""A subscription's settings (SPEC §3): one msgspec struct with the platform's defaults, stored as
JSON with its secrets sealed, and shown with them masked.

Secrets (OAuth2 client secret, bearer token, HMAC secret, TLS client key) are stored but never
shown: responses carry ``"***"`` in their place. Checking a document against the rules is
``validation``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from leadstream.security.secretbox import SecretBox
from leadstream.security.tls import TlsOptions

REDACTED = "***"
DAY_MS = 86_400_000
Format = Literal["legacy", "cloudevents", "adobe_io"]
DEFAULT_FORMAT: dict[str, Format] = {"activity": "legacy", "audit": "adobe_io", "notification": "adobe_io"}
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
    format: Format | None = None  # None: the stream's default
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
    def body_format(self) -> Format:
        return self.format or DEFAULT_FORMAT[self.stream]

    @property
    def needs_challenge(self) -> bool:
        return self.body_format != "legacy" or self.challenge


_decoder = msgspec.json.Decoder(SubscriptionConfig)
_encoder = msgspec.json.Encoder()
# -- storage and responses ------------------------------------------------------------------------


def encode(config: SubscriptionConfig) -> bytes:
    return _encoder.encode(config)


def decode(stored: bytes) -> SubscriptionConfig:
    return _decoder.decode(stored)


def seal(config: SubscriptionConfig, box: SecretBox | None) -> bytes:
    """The settings as the store keeps them: JSON, every secret sealed (SPEC §3, secrets at rest)."""
    stored = encode(config)
    return box.seal_config(stored) if box is not None else stored


def unseal(stored: bytes, box: SecretBox | None) -> SubscriptionConfig:
    """The settings as stored, secrets opened, for whoever must use them."""
    return decode(box.open_config(stored) if box is not None else stored)


def redacted(config: SubscriptionConfig) -> dict[str, Any]:
    """The settings as a response shows them: every secret replaced by "***"."""
    document: dict[str, Any] = msgspec.to_builtins(config)
    document["challenge"] = config.needs_challenge  # cloudevents and adobe_io endpoints always pass one
    auth = document["auth"]
    for name in ("token", "clientSecret"):
        if name in auth:
            auth[name] = REDACTED
    if document.get("signing") and document["signing"].get("hmacSecret"):
        document["signing"] = {"hmacSecret": REDACTED}
    if document.get("tls") and document["tls"].get("clientKey"):
        document["tls"]["clientKey"] = REDACTED
    return document
