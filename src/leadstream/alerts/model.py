"""An alert endpoint's settings (SPEC §11) and the CloudEvents it receives.

Stored as JSON with its HMAC secret sealed under the master key (``signing.hmacSecret``, one of
the secret box's fields, so ``keys rotate-master`` re-seals it too), and shown with it as "***".
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Final

import msgspec
import orjson

from leadstream.clock import now_rfc3339
from leadstream.errors import Invalid, describe_invalid
from leadstream.security.secretbox import SecretBox
from leadstream.security.signing import check_hmac_secret, new_hmac_secret
from leadstream.subscriptions.config import REDACTED
from leadstream.subscriptions.validation import check_url

SUBSCRIPTION_PAUSED: Final = "com.leadstream.subscription.paused"
SUBSCRIPTION_REACTIVATED: Final = "com.leadstream.subscription.reactivated"
SUBSCRIPTION_EXPIRING: Final = "com.leadstream.subscription.expiring"  # events leave retention undelivered
SUBSCRIPTION_LAGGING: Final = "com.leadstream.subscription.lagging"  # lag over the threshold
SOURCE_QUOTA_EXHAUSTED: Final = "com.leadstream.source.quota_exhausted"
SOURCE_FAILING: Final = "com.leadstream.source.failing"
SOURCE_RECOVERED: Final = "com.leadstream.source.recovered"
EVENT_TYPES: Final = (
    SUBSCRIPTION_PAUSED, SUBSCRIPTION_REACTIVATED, SUBSCRIPTION_EXPIRING, SUBSCRIPTION_LAGGING,
    SOURCE_QUOTA_EXHAUSTED, SOURCE_FAILING, SOURCE_RECOVERED,
)  # fmt: skip
SOURCE: Final = "urn:leadstream:alerts"


class Signing(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    hmacSecret: str | None = None
    hmac: bool = False


class AlertConfig(msgspec.Struct, forbid_unknown_fields=True):
    endpoint: Annotated[str, msgspec.Meta(max_length=2048)]
    events: Annotated[list[str], msgspec.Meta(min_length=1, max_length=len(EVENT_TYPES) + 1)] = msgspec.field(
        default_factory=lambda: ["*"]
    )
    signing: Signing | None = None  # absent: a secret is generated (and shown once), as with {"hmac": true}
    name: Annotated[str, msgspec.Meta(max_length=200)] = ""


class Alert(msgspec.Struct, omit_defaults=True):
    """As stored (the secret sealed) and as used (opened)."""

    id: str
    endpoint: str
    events: list[str]
    signing: dict[str, str]  # {"hmacSecret": …}
    createdAt: str
    name: str = ""

    def wants(self, event_type: str) -> bool:
        return "*" in self.events or event_type in self.events

    @property
    def secret(self) -> str:
        return self.signing["hmacSecret"]

    def view(self, *, secret_shown: bool = False) -> dict[str, Any]:
        """As the API answers: the secret as "***", except once, in the answer that generated it."""
        shown: dict[str, Any] = msgspec.to_builtins(self)
        shown["signing"] = {"hmacSecret": self.secret if secret_shown else REDACTED}
        shown.setdefault("name", "")
        return shown


_decode_alert = msgspec.json.Decoder(Alert).decode
_encode = msgspec.json.Encoder().encode


def parse_new(document: dict[str, Any]) -> tuple[Alert, bool]:
    """A new alert endpoint from a POST body, checked (errors name the field). Returns it with
    its secret, and whether the secret was generated (then the answer shows it, once)."""
    try:
        config = msgspec.convert(document, AlertConfig)
    except msgspec.ValidationError as exc:
        field, sentence = describe_invalid(exc, document)
        if not field:
            raise Invalid(f"alert: {sentence}") from None
        raise Invalid(sentence, field=field) from None
    check_url(config.endpoint, "endpoint")
    for index, name in enumerate(config.events):
        if name != "*" and name not in EVENT_TYPES:
            raise Invalid(
                f'events[{index}]: unknown alert type {name!r}; expected "*" or one of {", ".join(EVENT_TYPES)}',
                field=f"events[{index}]",
            )
    signing = config.signing or Signing(hmac=True)
    if signing.hmacSecret is not None:
        secret, generated = check_hmac_secret(signing.hmacSecret), False
    elif signing.hmac:
        secret, generated = new_hmac_secret(), True
    else:
        raise Invalid("signing: give hmacSecret (whsec_…) or set hmac to true to have one generated", field="signing")
    alert = Alert(
        id="alr_" + uuid.uuid4().hex[:16], endpoint=config.endpoint, events=sorted(set(config.events)),
        signing={"hmacSecret": secret}, createdAt=now_rfc3339(), name=config.name,
    )  # fmt: skip
    return alert, generated


def seal(alert: Alert, box: SecretBox) -> bytes:
    return box.seal_config(_encode(alert))


def unseal(stored: bytes, box: SecretBox) -> Alert:
    return _decode_alert(box.open_config(stored))


def cloudevent(event_type: str, subject: str, data: dict[str, Any]) -> bytes:
    """One alert as the operator's endpoint receives it: a CloudEvent 1.0 (structured JSON)."""
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": SOURCE,
            "type": event_type,
            "subject": subject,
            "time": now_rfc3339(),
            "datacontenttype": "application/json",
            "data": data,
        }
    )
