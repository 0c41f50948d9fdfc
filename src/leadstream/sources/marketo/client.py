"""A Marketo REST client for the ``marketo`` source: identity, Get Activity Types, paging tokens, activities.

Every REST call goes through ``MarketoClient.call``, which holds a reservation of the instance's
``CallBudget`` for exactly one HTTP request: no call can bypass the budget, and the budget sees
what each call answered (see ``leadstream.sources.budget``). The client decides no policy: it does
not back off, wait or give up. It does two things Marketo documents as part of the protocol:

- 601/602 (token invalid or expired): a new token and the same call again (at most
  ``TOKEN_ATTEMPTS`` times; then ``AuthFailed``);
- HTTP 414 (URI over 8 KB): the same call again as ``POST`` with ``_method=GET`` in a form body.

Both repeats are new calls with their own reservations; Marketo does not count the failed ones,
and neither does the budget. Everything else is raised as the ``MarketoError`` subclass that says
what happened (``leadstream.sources.marketo.errors``).

The access token comes from ``<identity>/oauth/token`` (client credentials) and is cached until
``token_refresh_margin`` (60 s) before it expires; it is sent only as ``Authorization: Bearer``.
Identity calls are not REST calls: they spend no budget. Secrets and tokens appear in no message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson

from leadstream.sources.budget import CallBudget
from leadstream.sources.marketo.errors import (
    AuthFailed,
    MarketoError,
    RequestRejected,
    TokenRejected,
    Transient,
    UriTooLong,
    classify,
)

DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=30.0)  # Marketo answers Get Lead Activities within 30 s
TOKEN_ATTEMPTS = 3  # tokens tried for one call before the refusal is taken as an auth failure
MAX_TYPE_IDS = 10
MAX_BATCH = 300
Params = Sequence[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Page:
    """One page of Get Lead Activities or Get Deleted Leads. Page on while ``more_result`` (a page may be short
    or empty meanwhile); when it is false, ``next_page_token`` is the cursor to poll from later."""

    records: list[dict[str, Any]]
    next_page_token: str
    more_result: bool
    request_id: str = ""
    warnings: list[Any] = field(default_factory=list)


class MarketoClient:
    def __init__(
        self,
        rest_url: str,
        client_id: str,
        client_secret: str,
        *,
        budget: CallBudget,
        session: aiohttp.ClientSession,
        identity_url: str | None = None,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
        token_refresh_margin: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        observe: Callable[[str, str], None] | None = None,  # (path, outcome: "ok" or the code) of every call
    ) -> None:
        self.rest_url = rest_url.rstrip("/")
        self.identity_url = (identity_url or f"{self.rest_url}/identity").rstrip("/")
        self._client_id, self._client_secret = client_id, client_secret
        self.budget, self._session, self._timeout = budget, session, timeout
        self._margin, self._clock = token_refresh_margin, clock
        self._token: str | None = None
        self._token_good_until = 0.0
        self._token_lock = asyncio.Lock()
        self.tokens_fetched = 0
        self._observe = observe

    # -- the API ---------------------------------------------------------------------------------
    async def get_activity_types(self) -> list[dict[str, Any]]:
        """Get Activity Types: the ``result`` list (custom types too), as ``Catalog.load_activity_types`` takes it."""
        body = await self.call("/rest/v1/activities/types.json", [])
        result = body.get("result") or []
        if not isinstance(result, list):
            raise MarketoError("invalid-response", "Get Activity Types: 'result' is not a list")
        return result

    async def get_paging_token(self, since: datetime) -> str:
        """A date-based paging token for activities (and deleted leads) from ``since`` (timezone-aware)."""
        if since.tzinfo is None:
            raise ValueError("since: a timezone-aware datetime (Marketo reads the offset)")
        stamp = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = await self.call("/rest/v1/activities/pagingtoken.json", [("sinceDatetime", stamp)])
        return _token(body, "Get Paging Token")

    async def get_activities(
        self,
        next_page_token: str,
        type_ids: Sequence[int],
        *,
        batch_size: int = MAX_BATCH,
    ) -> Page:
        """Get Lead Activities of at most 10 activity types from ``next_page_token``."""
        if not 1 <= len(type_ids) <= MAX_TYPE_IDS:
            raise ValueError(f"type_ids: between 1 and {MAX_TYPE_IDS} activity type ids per call, got {len(type_ids)}")
        params = [
            ("nextPageToken", next_page_token),
            ("activityTypeIds", ",".join(str(t) for t in type_ids)),
            *_batch(batch_size),
        ]
        return _page(await self.call("/rest/v1/activities.json", params), "Get Lead Activities")

    async def get_deleted_leads(self, next_page_token: str, *, batch_size: int = MAX_BATCH) -> Page:
        """Get Deleted Leads (Delete Lead, type 37, records) from ``next_page_token``."""
        params = [("nextPageToken", next_page_token), *_batch(batch_size)]
        return _page(await self.call("/rest/v1/activities/deletedleads.json", params), "Get Deleted Leads")

    # -- the one way out -------------------------------------------------------------------------
    async def call(self, path: str, params: Params) -> dict[str, Any]:
        """One REST call, inside a budget reservation; the answer's body when ``success`` is true.

        Raises the ``MarketoError`` subclass of what Marketo answered (``RateLimited``,
        ``QuotaExhausted``, ``TooManyConcurrent``, ``Transient``, ``AuthFailed``, ``RequestRejected``)
        and whatever the budget raises (``ShareSpent``).
        """
        as_post = False
        refused_tokens = 0
        while True:
            token = await self.access_token()
            try:
                async with self.budget.call():
                    answer = await self._send(path, params, token, as_post)
                if self._observe is not None:
                    self._observe(path, "ok")
                return answer
            except MarketoError as error:
                if self._observe is not None:
                    self._observe(path, error.code)
                if not isinstance(error, (TokenRejected, UriTooLong)):
                    raise
                rejected = error
            if isinstance(rejected, TokenRejected):
                refused_tokens += 1
                if refused_tokens >= TOKEN_ATTEMPTS:
                    detail = f"{rejected.message} (a fresh token was refused {refused_tokens} times)"
                    raise AuthFailed(rejected.code, detail) from None
                self._forget_token(token)
            elif as_post:
                raise rejected
            else:
                as_post = True  # HTTP 414, the documented workaround: the query moves into a form body

    async def _send(self, path: str, params: Params, token: str, as_post: bool) -> dict[str, Any]:
        url = self.rest_url + path
        headers = {"Authorization": f"Bearer {token}"}
        try:
            if as_post:
                form = [("_method", "GET"), *params]
                request = self._session.post(url, data=form, headers=headers, timeout=self._timeout)
            else:
                request = self._session.get(url, params=list(params), headers=headers, timeout=self._timeout)
            async with request as response:
                body = await response.read()
                status, reason = response.status, response.reason or ""
        except TimeoutError:
            raise Transient("timeout", f"no answer within {self._timeout.total:g} s") from None
        except aiohttp.ClientError as exc:
            raise Transient("connection", f"{type(exc).__name__}: {exc}") from None
        if status == 414:
            raise UriTooLong("HTTP 414", reason or "Request-URI Too Long")
        if status >= 500:
            raise Transient(f"HTTP {status}", reason)
        if status != 200:
            raise RequestRejected(f"HTTP {status}", reason)
        answer = _json_object(body)
        if answer.get("success") is not True:
            errors = answer.get("errors")
            first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
            raise classify(first.get("code", "invalid-response"), first.get("message", "no success and no error given"))
        return answer

    # -- the access token ------------------------------------------------------------------------
    async def access_token(self) -> str:
        """The cached token, or a new one from the identity service (one request, however many callers wait)."""
        if self._token is not None and self._clock() < self._token_good_until:
            return self._token
        async with self._token_lock:
            if self._token is not None and self._clock() < self._token_good_until:
                return self._token
            token, expires_in = await self._fetch_token()
            # Identity hands back the same token until it expires: when less than the margin is left,
            # use it to the end (a 602 in between costs one uncounted call) rather than ask on every call.
            lifetime = expires_in - self._margin if expires_in > self._margin else expires_in
            self._token, self._token_good_until = token, self._clock() + lifetime
            return token

    def _forget_token(self, token: str) -> None:
        if self._token == token:  # concurrent calls refused with the same token ask identity once
            self._token = None

    async def _fetch_token(self) -> tuple[str, float]:
        params = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._client_secret,
        }
        url = f"{self.identity_url}/oauth/token"
        try:
            async with self._session.get(url, params=params, timeout=self._timeout) as response:
                body = await response.read()
                status, reason = response.status, response.reason or ""
        except TimeoutError:
            raise Transient("timeout", f"identity: no answer within {self._timeout.total:g} s") from None
        except aiohttp.ClientError as exc:
            # the identity URL carries the secret: keep it out of the message
            detail = str(exc).replace(self._client_secret, "***") if self._client_secret else str(exc)
            raise Transient("connection", f"identity: {type(exc).__name__}: {detail}") from None
        if status >= 500:
            raise Transient(f"HTTP {status}", f"identity: {reason}")
        if status != 200:
            try:
                answer = _json_object(body)
            except MarketoError:
                answer = {}
            description = answer.get("error_description") or answer.get("error") or reason
            raise AuthFailed(f"HTTP {status}", f"identity refused the client credentials: {description}")
        answer = _json_object(body)
        token, expires_in = answer.get("access_token"), answer.get("expires_in")
        if not isinstance(token, str) or not token or not isinstance(expires_in, (int, float)):
            raise AuthFailed("invalid-response", "identity: no access_token and expires_in in its answer")
        self.tokens_fetched += 1
        return token, float(expires_in)


def _batch(batch_size: int) -> list[tuple[str, str]]:
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch_size: between 1 and {MAX_BATCH}, got {batch_size}")
    return [] if batch_size == MAX_BATCH else [("batchSize", str(batch_size))]


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Transient("invalid-response", f"not JSON: {body[:80]!r}") from None
    if not isinstance(answer, dict):
        raise Transient("invalid-response", f"not a JSON object: {body[:80]!r}")
    return answer


def _token(body: dict[str, Any], what: str) -> str:
    token = body.get("nextPageToken")
    if not isinstance(token, str) or not token:
        raise MarketoError("invalid-response", f"{what}: no nextPageToken in the answer")
    return token


def _page(body: dict[str, Any], what: str) -> Page:
    records = body.get("result") or []  # Marketo omits `result` when a page is empty
    if not isinstance(records, list):
        raise MarketoError("invalid-response", f"{what}: 'result' is not a list")
    return Page(
        records,
        _token(body, what),
        body.get("moreResult") is True,
        str(body.get("requestId", "")),
        body.get("warnings") or [],
    )
