"""The `leadstream` command: thin — parse, build settings, call the library."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from leadstream.settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="leadstream: Data Streams, self-hosted.")


@app.callback()
def main() -> None:
    """leadstream: Data Streams, self-hosted."""


@app.command()
def serve(
    data_dir: Path = typer.Option(Path("leadstream-data"), envvar="LEADSTREAM_DATA_DIR", help="where the embedded store keeps its files"),
    host: str = typer.Option("127.0.0.1", envvar="LEADSTREAM_HOST"),
    port: int = typer.Option(8470, envvar="LEADSTREAM_PORT"),
    retention: str = typer.Option("7d", envvar="LEADSTREAM_RETENTION", help="how long events are kept: 7d, 12h, 30m, 45s"),
    purge_interval: Optional[str] = typer.Option(None, envvar="LEADSTREAM_PURGE_INTERVAL", help="how often expired events are purged (default: 60s, or retention/10 if shorter)"),
    allow_private_endpoints: bool = typer.Option(False, envvar="LEADSTREAM_ALLOW_PRIVATE_ENDPOINTS", help="allow endpoints on loopback/private addresses (demo, tests)"),
    database_url: Optional[str] = typer.Option(None, envvar="LEADSTREAM_DATABASE_URL", help="postgresql://… to run as a node of a cluster"),
    log_format: str = typer.Option("console", envvar="LEADSTREAM_LOG_FORMAT", help="console or json"),
) -> None:
    """Run the server: ingest, admin, journal and delivery."""
    from leadstream.server import serve as run
    from leadstream.settings import parse_duration

    keep = parse_duration(retention)
    settings = Settings(
        data_dir=data_dir,
        host=host,
        port=port,
        retention=keep,
        purge_interval=parse_duration(purge_interval) if purge_interval else min(60.0, keep / 10),
        allow_private_endpoints=allow_private_endpoints,
        database_url=database_url,
        log_format=log_format,  # type: ignore[arg-type]
    )
    run(settings)


if __name__ == "__main__":
    app()
