"""`leadstream serve`: the options given become ``Settings``, which holds every default and reads
the rest of the LEADSTREAM_* environment, so each default lives in one place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from leadstream.cli.client import fail
from leadstream.cli.group import DEFAULTS, with_default
from leadstream.settings import Settings


def duration_text(seconds: float) -> str:
    """``604800.0`` → ``"7d"``: a duration as the options take it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _flag_default(name: str, on: bool) -> str:
    return name if on else f"no-{name}"


def serve(
    data_dir: Path | None = typer.Option(
        None,
        envvar="LEADSTREAM_DATA_DIR",
        metavar="DIR",
        help=with_default("where the embedded store keeps its files", DEFAULTS.data_dir),
    ),
    host: str | None = typer.Option(
        None, envvar="LEADSTREAM_HOST", metavar="ADDRESS", help=with_default("the address to listen on", DEFAULTS.host)
    ),
    port: int | None = typer.Option(
        None, envvar="LEADSTREAM_PORT", metavar="PORT", help=with_default("the port to listen on", DEFAULTS.port)
    ),
    retention: str | None = typer.Option(
        None,
        envvar="LEADSTREAM_RETENTION",
        metavar="DURATION",
        help=with_default("how long events are kept: 7d, 12h, 30m, 45s", duration_text(DEFAULTS.retention)),
    ),
    purge_interval: str | None = typer.Option(
        None,
        envvar="LEADSTREAM_PURGE_INTERVAL",
        metavar="DURATION",
        help=f"how often expired events are purged (default: {duration_text(DEFAULTS.purge_interval)}, "
        "or retention/10 if shorter)",
    ),
    allow_private_endpoints: bool | None = typer.Option(
        None,
        "--allow-private-endpoints/--no-allow-private-endpoints",
        envvar="LEADSTREAM_ALLOW_PRIVATE_ENDPOINTS",
        help=with_default(
            "allow endpoints on loopback/private addresses (demo, tests)",
            _flag_default("allow-private-endpoints", DEFAULTS.allow_private_endpoints),
        ),
    ),
    database_url: str | None = typer.Option(
        None, envvar="LEADSTREAM_DATABASE_URL", metavar="URL", help="postgresql://… to run as a node of a cluster"
    ),
    log_format: str | None = typer.Option(
        None,
        envvar="LEADSTREAM_LOG_FORMAT",
        metavar="FORMAT",
        help=with_default("console or json", DEFAULTS.log_format),
    ),
    tls_cert: Path | None = typer.Option(
        None, envvar="LEADSTREAM_TLS_CERT", metavar="PEM", help="serve HTTPS: the certificate (PEM, chain allowed)"
    ),
    tls_key: Path | None = typer.Option(
        None, envvar="LEADSTREAM_TLS_KEY", metavar="PEM", help="serve HTTPS: its private key (PEM)"
    ),
    allow_cidr: list[str] | None = typer.Option(
        None,
        "--allow-cidr",
        metavar="CIDR",
        help="allow endpoints in this private range (repeatable), e.g. 10.20.0.0/16 "
        "\\[env var: LEADSTREAM_ALLOWED_CIDRS, comma-separated]",
    ),
    delivery_process: bool | None = typer.Option(
        None,
        "--delivery-process/--one-process",
        envvar="LEADSTREAM_DELIVERY_PROCESS",
        help="embedded store: deliver from a second process, so that the server uses two cores "
        "(the default), or run everything in one process",
        show_default=False,
    ),
    access_log: bool | None = typer.Option(
        None,
        "--access-log",
        envvar="LEADSTREAM_ACCESS_LOG",
        help="log one line per HTTP request (method, path, status, duration)",
    ),
) -> None:
    """Run the server: ingest, admin, journal and delivery."""
    from pydantic import ValidationError

    from leadstream.datadir import DataDirError
    from leadstream.server import serve as run

    options: dict[str, Any] = {
        "data_dir": data_dir,
        "host": host,
        "port": port,
        "retention": retention,
        "purge_interval": purge_interval,
        "allow_private_endpoints": allow_private_endpoints,
        "database_url": database_url,
        "log_format": log_format,
        "tls_cert": tls_cert,
        "tls_key": tls_key,
        "allowed_cidrs": allow_cidr or None,
        "delivery_process": delivery_process,
        "access_log": access_log,
    }
    try:
        settings = Settings(**{name: value for name, value in options.items() if value is not None})
    except ValidationError as exc:
        fail(settings_problems(exc), 2)
    if "delivery_process" not in settings.model_fields_set and settings.database_url is None:
        settings.delivery_process = True  # two cores by default (a cluster spreads delivery over its nodes)
    if "purge_interval" not in settings.model_fields_set:  # a short retention is purged more often
        settings.purge_interval = min(settings.purge_interval, settings.retention / 10)
    try:
        run(settings)
    except DataDirError as exc:
        fail(str(exc))


def settings_problems(exc: Any) -> str:
    """A pydantic ``ValidationError`` of ``Settings`` as one line, by option name, not by field."""
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        where = f"--{field.replace('_', '-')} (LEADSTREAM_{field.upper()}): " if field else ""
        problems.append(where + plain_message(error))
    return "; ".join(problems)


def plain_message(error: Any) -> str:
    """pydantic's message without its "Value error, " prefix."""
    message = str(error["msg"])
    return message.removeprefix("Value error, ")
