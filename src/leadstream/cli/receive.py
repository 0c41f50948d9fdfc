"""`leadstream receive`: a ready consumer to point a subscription at (``leadstream.receiver``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import typer

from leadstream.receiver import HOST, PORT, ReceiverConfig, run_receiver

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
        None, metavar="PEM", help="PEM public key(s): verify x-adobe-digital-signature-1/-2 (repeatable)"
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
    if verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(message)s")
    typer.echo(f"receiving on http://{host}:{port}" + (f", writing {out}" if out else ""))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_receiver(config, host, port))
