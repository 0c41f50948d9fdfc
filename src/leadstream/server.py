"""Running the API server (what `leadstream serve` does)."""

from __future__ import annotations

import uvicorn
from rich.console import Console

from leadstream.api import create_app
from leadstream.logs import configure
from leadstream.settings import Settings


def serve(settings: Settings) -> None:
    configure(settings.log_format, settings.log_level)
    key, generated = settings.resolve_admin_key()
    if generated:
        # Printed once, on the run that created it; it is kept in the data dir with mode 0600.
        Console(stderr=True).print(
            f"[bold]Admin API key[/bold] (stored in {settings.data_dir / 'admin.key'}, shown once): {key}"
        )
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=5,
        # HTTPS with --tls-cert/--tls-key (both or neither: Settings checks).
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
    )
    uvicorn.Server(config).run()
