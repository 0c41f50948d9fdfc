"""Server settings: flags and LEADSTREAM_* environment variables, read once at the edge."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str | float | int) -> float:
    """Seconds from ``"7d"``, ``"90m"``, ``"5s"``, ``"250ms"`` or a bare number of seconds."""
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", value)
        if not found:
            raise ValueError(f"{value!r} is not a duration (examples: 7d, 12h, 30m, 45s, 250ms)")
        seconds = float(found.group(1)) * _UNITS[found.group(2) or "s"]
    if seconds <= 0:
        raise ValueError(f"{value!r}: a duration must be positive")
    return seconds


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEADSTREAM_", extra="ignore")

    data_dir: Path = Path("leadstream-data")
    host: str = "127.0.0.1"
    port: int = 8470
    retention: float = 7 * 86400.0  # seconds; flags and env accept 7d / 12h / 30m / 45s
    purge_interval: float = 60.0  # how often expired events are purged
    allow_private_endpoints: bool = False
    database_url: str | None = None
    admin_key: SecretStr | None = None
    log_format: Literal["console", "json"] = "console"
    log_level: str = "info"
    access_log: bool = False  # one log line per HTTP request
    node_id: str = f"{socket.gethostname()}-{os.getpid()}"
    lease_ttl: float = 15.0  # clusters: a dead node's subscriptions move to live ones within this (seconds)
    delivery_process: bool = False  # one node: delivery runs in a second process (uses a second core)
    metrics_export_interval: float = 0.1  # how often it looks whether /metrics or the console asked for its metrics
    # How long a thread may hold the GIL while another waits for it (Python's default: 5 ms). The
    # store's writer thread takes the GIL back after every SQLite step; at 5 ms it waits behind
    # ingest's validation that long each time, and commits come late (BENCHMARKS.md: ingest +25 %).
    gil_switch_interval: Annotated[float, Field(gt=0, le=0.1)] = 0.0001  # seconds
    attempts_kept: Annotated[int, Field(ge=1)] = 1000  # attempts (with traces) kept per subscription
    # -- operator alerts (SPEC §11) --
    alert_retry_interval: float = 5.0  # first retry of a failed alert; doubles each time…
    alert_retry_max_interval: float = 600.0  # …up to this
    alert_retry_attempts: Annotated[int, Field(ge=1)] = 15  # then the alert is given up
    alert_poll_interval: float = 1.0  # how often due alert retries are looked for
    alert_timeout: float = 10.0  # per alert POST
    alert_lag_threshold: float = 900.0  # a subscription lagging this much (seconds) raises an alert
    alert_lag_check_interval: float = 10.0
    # -- security (issue 8) --
    master_key: SecretStr | None = None  # seals subscriber secrets; else <data_dir>/master.key (0600)
    allowed_cidrs: Annotated[list[str], NoDecode] = []  # outbound endpoints allowed although private
    ingest_rate_limit: float = 100.0  # ingest requests per second per tenant key (0: no limit)
    ingest_burst: int = 200  # requests a tenant key may send at once before the rate applies
    console_sample_interval: Annotated[float, Field(gt=0, le=60)] = 10.0  # the console's charts: one sample this often
    console_session_idle: Annotated[float, Field(gt=0)] = 12 * 3600.0  # a console session ends this idle (seconds)
    # A session read is reused this long in a node: the most a sign-out or revocation elsewhere waits (seconds).
    console_session_cache: Annotated[float, Field(ge=0, le=5)] = 1.0
    key_refresh_interval: float = 2.0  # how soon other nodes see a revoked API key (new ones: at once), seconds
    tls_cert: Path | None = None  # serve HTTPS with this certificate (PEM; chain allowed)
    tls_key: Path | None = None
    # -- HTTP limits (issue 16): slow or idle clients cannot hold connections forever --
    http_header_timeout: Annotated[float, Field(gt=0)] = 10.0  # a request's headers must arrive within (seconds)
    http_body_timeout: Annotated[float, Field(gt=0)] = 60.0  # an ingest body must arrive within (seconds)
    http_idle_timeout: Annotated[float, Field(gt=0)] = 30.0  # an idle keep-alive connection closes after (seconds)
    http_max_connections: Annotated[int, Field(ge=1)] = 2048  # beyond: 503 at once
    # -- sources (SPEC §10); shrunk by tests, Marketo's own values by default --
    # how soon the delivery process (or another node) notices sources created or changed through the API
    source_follow_interval: float = 0.25
    source_rate_window: float = 20.0  # Marketo's rate window (callsPer20s counts in it)
    source_backoff_base: float = 1.0  # the first retry after a transient error (seconds; doubles, jittered)
    source_backoff_cap: float = 300.0  # transient errors are retried at least this often
    source_auth_retry: float = 300.0  # refused credentials are tried again this often
    source_quota_probe: float = 3600.0  # while the instance answers 607, one (uncounted) probe this often
    source_catalog_refresh: float = 86400.0  # Get Activity Types again this often
    source_call_timeout: float = 30.0  # a REST call not answered by then is a timeout (Marketo answers within 30 s)

    @field_validator(
        "retention", "purge_interval", "lease_ttl", "alert_retry_interval", "alert_retry_max_interval",
        "alert_poll_interval", "alert_timeout", "alert_lag_threshold", "alert_lag_check_interval", mode="before",
    )  # fmt: skip
    @classmethod
    def _duration(cls, value: object) -> float:
        return parse_duration(value)  # type: ignore[arg-type]

    @field_validator("allowed_cidrs", mode="before")
    @classmethod
    def _cidrs(cls, value: object) -> object:
        """LEADSTREAM_ALLOWED_CIDRS=10.1.0.0/16,fd00::/8 — checked so a typo fails at start."""
        cidrs = [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value
        for cidr in cidrs if isinstance(cidrs, list) else []:
            ipaddress.ip_network(cidr, strict=False)
        return cidrs

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both (--tls-cert and --tls-key) or neither")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not path.is_file():
                raise ValueError(f"{path}: no such file (TLS certificate or key)")
        return self

    @property
    def store_url(self) -> str:
        return self.database_url or str(self.data_dir / "leadstream.db")

    def resolve_admin_key(self) -> tuple[str, bool]:
        """The operator key, and whether it was just generated (then it must be printed once).

        From LEADSTREAM_ADMIN_KEY, else from ``<data_dir>/admin.key`` (mode 0600), created on first use.
        """
        if self.admin_key is not None:
            return self.admin_key.get_secret_value(), False
        path = self.data_dir / "admin.key"
        if path.exists():
            return path.read_text().strip(), False
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key = "lsk_" + secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
        return key, True
