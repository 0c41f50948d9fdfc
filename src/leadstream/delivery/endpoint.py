"""How one subscription's requests reach its endpoint: body, headers, auth, TLS, signatures.

An ``Endpoint`` turns a batch into the request the endpoint expects (SPEC §4.2, §4.3, §5): the
body in the subscription's format (built once, reused by every retry), the delivery headers,
the RSA signatures and the Standard Webhooks HMAC, the bearer token or an OAuth2 token from its
own cache. It POSTs, renews a refused OAuth2 token once (not a failure), and scrubs every secret
from what comes back, should an endpoint echo what it was sent. What an answer *means* is the
sender's business.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from leadstream import formats
from leadstream.clock import now_rfc3339
from leadstream.delivery import metrics
from leadstream.delivery.auth import OAuth2ClientCredentials, TokenEndpointError
from leadstream.delivery.http import Answer, post
from leadstream.events import Event
from leadstream.security.audit import REDACTED, redact
from leadstream.security.secretbox import scrub
from leadstream.security.signing import KeyRing, hmac_headers
from leadstream.security.tls import client_context
from leadstream.subscriptions.config import OAuth2Auth, SubscriptionConfig, TokenAuth

SIGNATURE_HEADERS = frozenset({"webhook-signature", "x-adobe-digital-signature-1", "x-adobe-digital-signature-2"})


@dataclass(eq=False)
class Batch:
    id: str
    events: list[Event]
    upto: int  # the cursor once it is acknowledged
    created: str = dataclasses.field(default_factory=now_rfc3339)  # legacy messageCreatedDate, the same on every retry
    sends: int = 0
    shared: list[bytes] | None = None  # the events' formats.elements, when the log tail built them
    body: bytes | None = None  # built once, reused by every retry
    signature: dict[str, str] | None = None


class Endpoint:
    def __init__(
        self, sub_id: str, config: SubscriptionConfig, session: aiohttp.ClientSession, keyring: KeyRing | None
    ) -> None:
        self.sub_id = sub_id
        self.config = config
        self.session = session
        self.keyring = keyring  # RSA signatures of cloudevents/adobe_io deliveries
        self.format = config.body_format
        self.single = config.delivery == "single"
        auth = config.auth
        self.oauth = (
            OAuth2ClientCredentials(auth.tokenUrl, auth.clientId, auth.clientSecret, auth.scope)
            if isinstance(auth, OAuth2Auth)
            else None
        )
        self.ssl = client_context(config.tls)
        self.secrets = [  # never written to lastError or the attempt log, should an endpoint echo them
            getattr(auth, "clientSecret", None), getattr(auth, "token", None),
            config.signing.hmacSecret if config.signing else None, config.tls.clientKey if config.tls else None,
        ]  # fmt: skip

    def body(self, batch: Batch) -> bytes:
        if batch.body is None:
            if self.single:
                element = batch.shared[0] if batch.shared else None
                batch.body = formats.event_body(
                    self.format, batch.events[0], subscription_id=self.sub_id, shared=element
                )
            else:
                batch.body = formats.batch_body(
                    self.format, batch.events, subscription_id=self.sub_id, batch_id=batch.id, created=batch.created,
                    shared=batch.shared,
                )  # fmt: skip
            batch.signature = None
        return batch.body

    def headers(self, batch: Batch, body: bytes) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "X-Leadstream-Subscription": self.sub_id,
            "X-Leadstream-Delivery": batch.id,
        }
        if batch.sends:
            headers["X-Leadstream-Retry-Count"] = str(batch.sends)
        if self.format != "legacy":
            if batch.sends:
                headers["x-adobe-retry-count"] = str(batch.sends)
            if self.single:
                headers["x-adobe-event-id"] = batch.events[0].eventid
            if self.keyring is not None:
                if batch.signature is None:
                    batch.signature = self.keyring.signature_headers(body)
                headers.update(batch.signature)
        signing = self.config.signing
        if signing is not None and signing.hmacSecret:
            headers.update(hmac_headers(signing.hmacSecret, batch.id, body))
        return headers

    async def post(self, batch: Batch, extra_headers: dict[str, str] | None = None) -> tuple[Answer, Answer | None]:
        """POST the batch. Returns the answer, and the 401 that came before it when an OAuth2
        token was refused, renewed and the batch sent again at once (None otherwise)."""
        body = self.body(batch)
        headers = self.headers(batch, body)
        if extra_headers:
            headers.update(extra_headers)
        answer, token = await self._send(body, headers)
        if answer.status == 401 and self.oauth is not None and token is not None:
            self.oauth.invalidate(token)
            renewed, _ = await self._send(body, headers)
            return renewed, answer
        return answer, None

    async def _send(self, body: bytes, headers: dict[str, str]) -> tuple[Answer, str | None]:
        timeout = self.config.timeoutMs / 1000
        token = None
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                if self.oauth is not None:
                    token = await self.oauth.token(self.session)
                    headers = {**headers, "Authorization": f"Bearer {token}"}
                elif isinstance(self.config.auth, TokenAuth):
                    headers = {**headers, "Authorization": f"Bearer {self.config.auth.token}"}
                answer = await post(self.session, self.config.endpoint, body, headers, timeout, ssl=self.ssl)
        except TimeoutError:
            answer = Answer(error=f"timed out after {self.config.timeoutMs} ms", duration=time.perf_counter() - started)
        except TokenEndpointError as exc:
            answer = Answer(error=str(exc), duration=time.perf_counter() - started)
        metrics.ATTEMPT_SECONDS.observe(answer.duration)
        secrets = [*self.secrets, token]
        if answer.snippet or answer.error or answer.body:  # an endpoint may echo what it was sent
            answer = dataclasses.replace(
                answer, snippet=scrub(answer.snippet, secrets), error=answer.error and scrub(answer.error, secrets),
                body=scrub(answer.body, secrets),
                headers=answer.headers and {k: scrub(v, secrets) for k, v in answer.headers.items()},
            )  # fmt: skip
        sent = {"User-Agent": self.session.headers.get("User-Agent", ""), **headers}
        return dataclasses.replace(answer, request_headers=masked(sent)), token


def masked(headers: dict[str, str]) -> dict[str, str]:
    """Request headers as the attempt log keeps them: credentials (``security.audit.redact``) and
    signatures replaced by "***" — a signature is no secret, but it is no one's business either."""
    shown: dict[str, str] = redact(headers)
    for name in shown:
        if name.lower() in SIGNATURE_HEADERS:
            shown[name] = REDACTED
    return shown


async def send_sample(endpoint: Endpoint, event: Event) -> Answer:
    """POST one event outside the log, as the subscription's deliveries go (format, auth,
    signatures), marked ``X-Leadstream-Sample: true``; not recorded, not retried."""
    batch = Batch(str(uuid.uuid4()), [event], 0)
    answer, _ = await endpoint.post(batch, {"X-Leadstream-Sample": "true"})
    return answer


def sample_sender(
    session: aiohttp.ClientSession, keyring: KeyRing | None
) -> Callable[[str, SubscriptionConfig, Event], Awaitable[Answer]]:
    """Samples where no engine runs here (the API process, when delivery has a process of its own)."""

    async def send(sub_id: str, config: SubscriptionConfig, event: Event) -> Answer:
        return await send_sample(Endpoint(sub_id, config, session, keyring), event)

    return send
