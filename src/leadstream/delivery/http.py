"""The HTTP side of delivery: one shared client session, one POST, and what came back.

Every sender shares one ``aiohttp.ClientSession`` (``security.guard.make_session``). A POST
never raises: it returns an ``Answer`` — a status, or an error sentence for the attempt log —
and the sender decides what the answer means (SPEC §4.4).
"""

from __future__ import annotations

import ssl as ssl_module
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import aiohttp

from leadstream.security.guard import BODY_CAP, read_capped, snippet

TRACE_HEADERS = 100  # response headers kept per attempt at most (aiohttp caps each at 8 kB)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int | None = None  # None: no HTTP answer at all (see error)
    error: str | None = None
    retry_after_ms: int | None = None
    snippet: str = ""  # the start of a non-2xx body, for lastError
    duration: float = 0.0  # seconds
    # Debug tracing (the attempt log): what was sent and what came back.
    headers: dict[str, str] | None = None  # the response's headers (None: no answer)
    body: str = ""  # its first BODY_CAP bytes, as text
    truncated: bool = False  # the body went on past them
    request_headers: dict[str, str] | None = None  # what was sent, secrets and signatures masked

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def describe(self) -> str:
        """One line for lastError and the attempt log."""
        if self.status is None:
            return self.error or "no answer"
        return f"HTTP {self.status} {self.snippet}".rstrip()


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout: float,
    *,
    ssl: ssl_module.SSLContext | bool = True,
) -> Answer:
    """POST ``body``; ``timeout`` seconds for everything, connecting included. ``ssl``: the
    subscription's TLS context (its own CA, a client certificate), or True for the defaults."""
    started = time.perf_counter()
    try:
        async with session.post(
            url,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
            ssl=ssl,
        ) as response:
            status = response.status
            retry_after = _retry_after_ms(response.headers.get("Retry-After"))
            headers = _headers(response.headers)
            # A small answer is read whole so the connection goes back to the pool; a large one
            # is cut short (and its connection closed). One byte more says whether it was cut.
            head = await read_capped(response, BODY_CAP + 1)
        excerpt = "" if 200 <= status < 300 else snippet(head)
        return Answer(
            status, None, retry_after, excerpt, time.perf_counter() - started,
            headers=headers, body=head[:BODY_CAP].decode("utf-8", "replace"), truncated=len(head) > BODY_CAP,
        )  # fmt: skip
    except TimeoutError:
        return Answer(error=f"timed out after {timeout * 1000:.0f} ms", duration=time.perf_counter() - started)
    except aiohttp.ClientConnectorError as exc:
        reason = exc.os_error.strerror or str(exc.os_error) if exc.os_error else str(exc)
        return Answer(
            error=f"cannot connect to {exc.host}:{exc.port}: {reason}", duration=time.perf_counter() - started
        )
    except aiohttp.ClientError as exc:
        return Answer(error=f"{type(exc).__name__}: {exc}".rstrip(": "), duration=time.perf_counter() - started)
    except OSError as exc:  # e.g. the outbound guard
        return Answer(error=str(exc), duration=time.perf_counter() - started)


def _headers(received: Mapping[str, str]) -> dict[str, str]:
    """The response's headers for the attempt log; a repeated one (Set-Cookie) joined with ", "."""
    kept: dict[str, str] = {}
    for name, value in received.items():
        if name in kept:
            kept[name] += ", " + value
        elif len(kept) < TRACE_HEADERS:
            kept[name] = value
    return kept


def _retry_after_ms(value: str | None) -> int | None:
    """Retry-After as delay-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value) * 1000
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0, int((moment.timestamp() - time.time()) * 1000))
