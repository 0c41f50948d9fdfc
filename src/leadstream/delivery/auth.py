"""OAuth2 client credentials for push delivery (SPEC §4.2).

One ``OAuth2ClientCredentials`` per subscription: it caches the access token, lets concurrent
callers share one token request, and forgets a token the endpoint refused with 401.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import time
from typing import Annotated
from urllib.parse import quote

import aiohttp
import msgspec


class TokenEndpointError(Exception):
    """The token endpoint could not give a token; ``str()`` says why and never holds the secret."""


class _TokenAnswer(msgspec.Struct):
    access_token: Annotated[str, msgspec.Meta(min_length=1)]
    expires_in: float | None = None


_decode_answer = msgspec.json.Decoder(_TokenAnswer, strict=False)  # strict=False: "3600" as a number


class OAuth2ClientCredentials:
    def __init__(
        self, token_url: str, client_id: str, client_secret: str, scope: str | None = None,
        *, refresh_margin: float = 60.0, timeout: float = 10.0,
    ) -> None:  # fmt: skip
        self.token_url = token_url
        self.client_id = client_id
        self.scope = scope
        self.refresh_margin = refresh_margin
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        # RFC 6749 §2.3.1: id and secret are form-encoded before they are joined for Basic auth
        credentials = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
        basic = base64.b64encode(credentials.encode()).decode()
        self._headers = {"Authorization": f"Basic {basic}", "Accept": "application/json"}
        # the forms in which an endpoint might echo the secret back into an error we show
        self._secret_forms = {
            form for form in (client_secret, quote(client_secret, safe=""), json.dumps(client_secret)[1:-1],
                              json.dumps(client_secret, ensure_ascii=False)[1:-1], basic) if form
        }  # fmt: skip
        self._token: str | None = None
        self._refresh_at = 0.0
        self._pending: asyncio.Future[str] | None = None

    def __repr__(self) -> str:
        return (
            f"OAuth2ClientCredentials(token_url={self.token_url!r}, client_id={self.client_id!r}, scope={self.scope!r})"
        )

    async def token(self, session: aiohttp.ClientSession) -> str:
        """The cached access token, or a new one. Raises TokenEndpointError."""
        if self._token is not None and time.monotonic() < self._refresh_at:
            return self._token
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._fetch(session))
            # retrieve the error even when every caller was cancelled, so it is not logged as lost
            self._pending.add_done_callback(lambda done: done.cancelled() or done.exception())
        # shield: a caller that gives up (its attempt timed out) must not cancel the others' request
        return await asyncio.shield(self._pending)

    def invalidate(self, token: str) -> None:
        """The endpoint answered 401 with ``token``: fetch anew, unless a newer token is already here."""
        if token == self._token:
            self._token = None

    async def _fetch(self, session: aiohttp.ClientSession) -> str:
        try:
            answer = await self._request(session)
            self._token = answer.access_token
            if answer.expires_in is None:
                self._refresh_at = math.inf
            else:  # a lifetime shorter than twice the margin is used for half of it, not refetched at every call
                fresh_for = max(answer.expires_in - self.refresh_margin, answer.expires_in / 2)
                self._refresh_at = time.monotonic() + fresh_for
            return answer.access_token
        finally:
            self._pending = None

    async def _request(self, session: aiohttp.ClientSession) -> _TokenAnswer:
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        try:
            async with session.post(self.token_url, data=form, headers=self._headers, timeout=self.timeout) as response:
                body = await response.read()
                status = response.status
        except TimeoutError:
            raise self._error(f"no answer within {self.timeout.total:g} s") from None
        except aiohttp.ClientConnectorError as exc:
            # "connection refused" rather than asyncio's "Connect call failed (…)"; DNS errors have their own text
            error = exc.os_error
            raise self._error(
                os.strerror(error.errno).lower() if error.errno is not None and error.errno > 0 else str(error)
            ) from None
        except aiohttp.ClientError as exc:
            raise self._error(f"{type(exc).__name__}: {exc}") from None
        if not 200 <= status < 300:
            raise self._error(f"HTTP {status} {_snippet(body)}".rstrip())
        try:
            return _decode_answer.decode(body)
        except msgspec.ValidationError as exc:
            if "access_token" in str(exc):
                raise self._error("answer has no access_token") from None
            raise self._error(f"answer is not a token response: {exc}") from None
        except msgspec.DecodeError:
            raise self._error(f"answer is not JSON: {_snippet(body)}") from None

    def _error(self, reason: str) -> TokenEndpointError:
        for secret in self._secret_forms:
            reason = reason.replace(secret, "***")
        return TokenEndpointError(f"token endpoint {self.token_url} failed: {reason}")


def _snippet(body: bytes, limit: int = 200) -> str:
    text = " ".join(body.decode("utf-8", "replace").split())
    return text if len(text) <= limit else text[:limit] + "…"
