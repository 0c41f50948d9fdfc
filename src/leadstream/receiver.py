"""The ready consumer behind ``leadstream receive``: an endpoint a subscription can push to.

It answers the Adobe I/O ``?challenge=`` GET, checks the bearer token and signatures it is told
to, accepts the three body formats (SPEC §4.3), drops events it has already seen and appends the
new ones to an NDJSON file, one event per line, exactly as received and in arrival order. It can
be told to fail (``fail_for``/``status``) or to be slow (``delay``) for demos and tests.

Durability, on purpose: the receiver answers 2xx before the events reach the disk. Lines are
buffered and written out at least every ``FLUSH_INTERVAL`` (100 ms), when the buffer passes
``FLUSH_BYTES`` and on shutdown, never fsync'd. So a crash of the receiver process loses the
events acknowledged in the last ~100 ms, and a crash of the machine may also lose what the OS had
not yet written. The sender will not resend them: this is a test and demo consumer, not a store.

De-duplication remembers the last ``dedupe_window`` event ids (an LRU, 1,000,000 by default,
about 170 MB when full): an event seen again after that many newer ones is written again.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
import orjson
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

log = logging.getLogger("leadstream.receiver")

FLUSH_INTERVAL = 0.1
FLUSH_BYTES = 1024 * 1024
ADOBE_SIGNATURE_HEADERS = ("x-adobe-digital-signature-1", "x-adobe-digital-signature-2")
HOST = "127.0.0.1"  # loopback unless told otherwise
PORT = 3000  # where `leadstream receive` listens unless told otherwise


@dataclass(frozen=True)
class ReceiverConfig:
    out: Path | None = None  # append each new event as one NDJSON line
    token: str | None = None  # require Authorization: Bearer <token>
    hmac_secret: str | None = None  # Standard Webhooks secret, "whsec_…"
    public_keys: tuple[bytes, ...] = ()  # PEM (SPKI) RSA keys for x-adobe-digital-signature-1/-2
    fail_for: float = 0.0  # answer `status` to every POST for this many seconds after start
    status: int = 503
    delay: float = 0.0  # seconds to wait before answering each POST
    challenge_format: str = "text"  # "text" or "json"
    max_body: int = 10 * 1024 * 1024
    dedupe_window: int = 1_000_000


class Rejected(Exception):
    """A request the receiver refuses; carries the status and a reason for the sender."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


# -- body formats ---------------------------------------------------------------------------------


class _Envelope(msgspec.Struct):
    """Enough of a top-level object to tell the formats apart."""

    activities: list[msgspec.Raw] | None = None
    customObjects: list[msgspec.Raw] | None = None
    munchkinId: str | None = None
    eventid: str | None = None
    event_id: str | None = None


class _EventIds(msgspec.Struct):
    eventid: str | None = None
    event_id: str | None = None


class _LegacyActivity(msgspec.Struct):
    marketoGUID: str


class _LegacyCustomObject(msgspec.Struct):
    apiName: str
    marketoGUID: str
    action: str
    updatedAt: str


_envelope = msgspec.json.Decoder(_Envelope)
_array = msgspec.json.Decoder(list[msgspec.Raw])
_event_ids = msgspec.json.Decoder(_EventIds)
_legacy_activity = msgspec.json.Decoder(_LegacyActivity)
_legacy_custom_object = msgspec.json.Decoder(_LegacyCustomObject)


def _line(raw: bytes | msgspec.Raw) -> bytes:
    """The event as received, on one line (re-encoded only if the sender pretty-printed it)."""
    line = bytes(raw).strip()
    return line if b"\n" not in line and b"\r" not in line else orjson.dumps(msgspec.json.decode(line))


def _envelope_id(ids: _EventIds | _Envelope, where: str) -> str:
    if ids.eventid:
        return f"ce:{ids.eventid}"
    if ids.event_id:
        return f"io:{ids.event_id}"
    raise Rejected(400, f"{where}: neither 'eventid' (cloudevents) nor 'event_id' (adobe_io) is set")


def parse_events(body: bytes) -> list[tuple[str, bytes]]:
    """(identity, NDJSON line) for each event of a body in any of the three formats.

    Identity: ``eventid`` (cloudevents), ``event_id`` (adobe_io), munchkinId + ``marketoGUID``
    (legacy activities), munchkinId + apiName + marketoGUID + action + updatedAt (legacy custom
    objects: one record changes many times). Raises Rejected(400) naming what is wrong.
    """
    try:
        if body.lstrip()[:1] == b"[":
            return [
                (_envelope_id(_event_ids.decode(raw), f"[{i}]"), _line(raw))
                for i, raw in enumerate(_array.decode(body))
            ]
        envelope = _envelope.decode(body)
        if envelope.activities is None and envelope.customObjects is None:
            return [(_envelope_id(envelope, "body"), _line(body))]
        tenant = envelope.munchkinId or ""
        events = []
        for raw in envelope.activities or ():
            activity = _legacy_activity.decode(raw)
            events.append((f"lg:{tenant}/{activity.marketoGUID}", _line(raw)))
        for raw in envelope.customObjects or ():
            change = _legacy_custom_object.decode(raw)
            key = f"co:{tenant}/{change.apiName}/{change.marketoGUID}/{change.action}/{change.updatedAt}"
            events.append((key, _line(raw)))
        return events
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise Rejected(400, f"the body is not a legacy, cloudevents or adobe_io batch: {exc}") from None


# -- authentication -------------------------------------------------------------------------------


def _bearer_ok(header: str | None, token: str) -> bool:
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer ") :].encode(), token.encode())


def _check_hmac(webhook: Webhook, body: bytes, headers: Any) -> None:
    wanted = ("webhook-id", "webhook-timestamp", "webhook-signature")
    try:
        webhook.verify(body, {name: headers.get(name, "") for name in wanted}, json_parse=False)
    except WebhookVerificationError as exc:
        raise Rejected(401, f"webhook-signature: {exc}") from None
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Rejected(401, "webhook-signature: malformed signature header") from None


def _check_rsa(keys: list[rsa.RSAPublicKey], body: bytes, headers: Any) -> None:
    signatures = [headers[h] for h in ADOBE_SIGNATURE_HEADERS if h in headers]
    if not signatures:
        raise Rejected(401, "x-adobe-digital-signature-1/-2: missing")
    for signature in signatures:
        try:
            raw = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            continue
        for key in keys:
            try:
                key.verify(raw, body, padding.PKCS1v15(), hashes.SHA256())
                return
            except InvalidSignature:
                pass
    raise Rejected(401, "x-adobe-digital-signature-1/-2: no signature matches the body and the configured public keys")


def _load_public_key(pem: bytes) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("public_keys: expected RSA public keys (PEM, SPKI)")
    return key


# -- state ----------------------------------------------------------------------------------------


class Receiver:
    """Counters, the seen-set and the output buffer of one receiver app."""

    def __init__(self, config: ReceiverConfig) -> None:
        if config.challenge_format not in ("text", "json"):
            raise ValueError(f"challenge_format: expected 'text' or 'json', got {config.challenge_format!r}")
        self.config = config
        self.stats = {"requests": 0, "received": 0, "duplicates": 0, "rejected": 0, "failed": 0, "challenges": 0}
        self.started = time.monotonic()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._file: BinaryIO | None = None
        self._webhook = Webhook(config.hmac_secret) if config.hmac_secret else None
        self._keys = [_load_public_key(pem) for pem in config.public_keys]

    def failing(self) -> bool:
        return time.monotonic() - self.started < self.config.fail_for

    def check_signatures(self, body: bytes, headers: Any) -> None:
        if self._webhook is not None:
            _check_hmac(self._webhook, body, headers)
        if self._keys:
            _check_rsa(self._keys, body, headers)

    def accept(self, events: list[tuple[str, bytes]]) -> tuple[int, int]:
        """Record the new events of a batch; returns (new, duplicates)."""
        new = duplicates = 0
        seen = self._seen
        for key, line in events:
            if key in seen:
                seen.move_to_end(key)
                duplicates += 1
                continue
            seen[key] = None
            if len(seen) > self.config.dedupe_window:
                seen.popitem(last=False)
            new += 1
            if self._file is not None:
                self._pending.append(line)
                self._pending_bytes += len(line) + 1
        self.stats["received"] += new
        self.stats["duplicates"] += duplicates
        if self._pending_bytes >= FLUSH_BYTES:
            self.flush()
        return new, duplicates

    # -- the output file ----------------------------------------------------------------------
    def open(self) -> None:
        if self.config.out is not None:
            self.config.out.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.config.out, "ab")  # noqa: SIM115  (open for the receiver's life; closed by close())

    def flush(self) -> None:
        if self._file is None or not self._pending:
            return
        self._file.write(b"\n".join(self._pending) + b"\n")
        self._file.flush()  # to the OS, not to the disk: see the module docstring
        self._pending.clear()
        self._pending_bytes = 0

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None

    async def flush_every(self, interval: float = FLUSH_INTERVAL) -> None:
        while True:
            await asyncio.sleep(interval)
            self.flush()


RECEIVER = web.AppKey("receiver", Receiver)


# -- handlers -------------------------------------------------------------------------------------


def _refuse(receiver: Receiver, status: int, reason: str) -> web.Response:
    receiver.stats["rejected"] += 1
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return web.json_response({"error": reason}, status=status, headers=headers)


async def _handle_get(request: web.Request) -> web.Response:
    receiver = request.app[RECEIVER]
    challenge = request.query.get("challenge")
    if challenge is None:
        return web.Response(text="leadstream receiver: POST events here; GET /stats for counters\n")
    receiver.stats["challenges"] += 1
    if receiver.config.challenge_format == "json":
        return web.json_response({"challenge": challenge})
    return web.Response(text=challenge, content_type="text/plain")


async def _handle_post(request: web.Request) -> web.Response:
    receiver = request.app[RECEIVER]
    config = receiver.config
    receiver.stats["requests"] += 1
    if config.delay:
        await asyncio.sleep(config.delay)
    if receiver.failing():
        receiver.stats["failed"] += 1
        return web.json_response({"error": "failing on purpose (fail_for)"}, status=config.status)
    if config.token is not None and not _bearer_ok(request.headers.get("Authorization"), config.token):
        reason = "missing bearer token" if "Authorization" not in request.headers else "wrong bearer token"
        return _refuse(receiver, 401, reason)
    if request.content_length is not None and request.content_length > config.max_body:
        return _refuse(receiver, 413, f"the body is {request.content_length} bytes; the limit is {config.max_body}")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _refuse(receiver, 413, f"the body is over the limit of {config.max_body} bytes")
    try:
        receiver.check_signatures(body, request.headers)
        events = parse_events(body)
    except Rejected as exc:
        return _refuse(receiver, exc.status, exc.reason)
    new, duplicates = receiver.accept(events)
    return web.json_response({"received": new, "duplicates": duplicates})


async def _handle_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[RECEIVER].stats)


@web.middleware
async def _log_requests(request: web.Request, handler: Any) -> web.StreamResponse:
    started = time.perf_counter()
    response = await handler(request)
    if log.isEnabledFor(logging.DEBUG):
        # method, path and status only: headers carry tokens and signatures
        log.debug(
            "%s %s -> %s in %.1f ms",
            request.method,
            request.path,
            response.status,
            (time.perf_counter() - started) * 1000,
        )
    return response


def make_receiver_app(config: ReceiverConfig) -> web.Application:
    receiver = Receiver(config)
    # client_max_size makes request.read() stop at the limit; _handle_post turns that into a 413
    app = web.Application(client_max_size=config.max_body, middlewares=[_log_requests])
    app[RECEIVER] = receiver

    async def lifecycle(app: web.Application) -> Any:
        receiver.started = time.monotonic()  # fail_for counts from the moment the app serves
        receiver.open()
        flusher = asyncio.create_task(receiver.flush_every())
        yield
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
        receiver.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/stats", _handle_stats)
    app.router.add_get("/{path:.*}", _handle_get)
    app.router.add_post("/{path:.*}", _handle_post)
    return app


# -- running it -----------------------------------------------------------------------------------


@dataclass
class RunningReceiver:
    """A receiver serving on a real socket (what the demo starts, one per subscription)."""

    runner: web.AppRunner
    receiver: Receiver
    url: str

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_receiver(config: ReceiverConfig, host: str = HOST, port: int = 0) -> RunningReceiver:
    """Start serving and return at once; ``port=0`` picks a free port (see ``.url``)."""
    app = make_receiver_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    return RunningReceiver(runner, app[RECEIVER], f"http://{url_host}:{bound_port}")


def summary(stats: dict[str, int]) -> str:
    """The counters as one line for people: what was written, and what was dropped or refused."""
    parts = [f"received {stats['received']} events", f"{stats['duplicates']} duplicates dropped"]
    parts += [f"{stats[name]} {name}" for name in ("rejected", "failed", "challenges") if stats[name]]
    return ", ".join(parts)


async def run_receiver(
    config: ReceiverConfig,
    host: str = HOST,
    port: int = PORT,
    report: Callable[[str], None] | None = None,
    report_every: float = 2.0,
) -> None:
    """Serve until cancelled; buffered lines are written out on the way down. ``report`` gets
    the counters (``summary``) every ``report_every`` seconds when they changed, and at the end."""
    running = await start_receiver(config, host, port)
    log.info("receiving on %s", running.url)
    if report is not None:
        report(f"receiving on {running.url}" + (f", writing {config.out}" if config.out else ""))
    last: dict[str, int] = dict(running.receiver.stats)
    try:
        while True:
            await asyncio.sleep(report_every)
            if report is not None and running.receiver.stats != last:
                last = dict(running.receiver.stats)
                report(summary(last))
    finally:
        await running.close()
        if report is not None:
            report(summary(running.receiver.stats))
