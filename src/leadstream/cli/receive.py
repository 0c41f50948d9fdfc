"""`leadstream receive`: a ready consumer to point a subscription at (``leadstream.receiver``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import typer

from leadstream.cli.client import fail
from leadstream.receiver import HOST, PORT, Receiver, ReceiverConfig, run_receiver

DEFAULTS = ReceiverConfig()


def receive(
    port: int = typer.Option(PORT, metavar="PORT", help="port to listen on"),
    host: str = typer.Option(HOST, metavar="ADDRESS", help="address to listen on"),
    out: Path | None = typer.Option(None, metavar="FILE", help="append each new event to this NDJSON file"),
    token: str | None = typer.Option(
        None, envvar="LEADSTREAM_RECEIVER_TOKEN", metavar="TOKEN", help="require Authorization: Bearer TOKEN"
    ),
    hmac_secret: str | None = typer.Option(
        None,
        envvar="LEADSTREAM_RECEIVER_HMAC_SECRET",
        metavar="SECRET",
        help="verify Standard Webhooks signatures (whsec_…)",
    ),
    public_key: list[Path] | None = typer.Option(
        None,
        exists=True,
        dir_okay=False,
        metavar="PEM",
        help="PEM public key(s): verify x-adobe-digital-signature-1/-2 (repeatable)",
    ),
    fail_for: float = typer.Option(
        DEFAULTS.fail_for, metavar="SECONDS", help="answer --status to every delivery for this many seconds"
    ),
    status: int = typer.Option(DEFAULTS.status, metavar="STATUS", help="the status --fail-for answers"),
    delay: float = typer.Option(
        DEFAULTS.delay, metavar="SECONDS", help="seconds to wait before answering each delivery"
    ),
    challenge_format: str = typer.Option(
        DEFAULTS.challenge_format, metavar="FORMAT", help="answer ?challenge= as text or json"
    ),
    max_body: int = typer.Option(
        DEFAULTS.max_body, metavar="BYTES", help="answer 413 above this many bytes (Express's default is 100000)"
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log one line per request"),
) -> None:
    """A ready consumer: answers challenges, checks token or signatures, drops duplicates, writes NDJSON."""
    if challenge_format not in ("text", "json"):
        fail(f"--challenge-format: expected text or json, got {challenge_format!r}", 2)
    config = ReceiverConfig(
        out=out,
        token=token,
        hmac_secret=hmac_secret,
        public_keys=tuple(p.read_bytes() for p in public_key or ()),
        fail_for=fail_for,
        status=status,
        delay=delay,
        challenge_format=challenge_format,
        max_body=max_body,
    )
    try:
        Receiver(config)  # checks the keys and the secret now, not at the first delivery
    except ValueError as exc:
        fail(f"--public-key or --hmac-secret: {str(exc).splitlines()[0]}", 2)
    if verbose:  # our request lines only: asyncio and aiohttp stay at warnings
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        receiver_log = logging.getLogger("leadstream.receiver")
        receiver_log.addHandler(handler)
        receiver_log.setLevel(logging.DEBUG)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run_receiver(config, host, port, report=typer.echo))
    except OSError as exc:  # the port is taken, or the address is not ours
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
