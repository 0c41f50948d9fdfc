"""The HTTP side of the simulated instance: Marketo's identity and REST routes, and ``/_sim/`` controls.

Every REST call goes through ``Routes.rest``, in the order a real instance applies its checks:
URI length (HTTP 414 for REST URIs over ``max_uri_length``, before anything else), method
(``POST`` only with ``_method=GET`` in a form body, the documented 414 workaround; else 605),
access token (601, 602), limits (615, 607, 606), an injected fault, then the endpoint.

Errors are HTTP 200 with ``success:false`` and ``errors:[{code,message}]``; successes carry
``result`` (omitted when empty), and paging endpoints ``nextPageToken`` and ``moreResult``.

Delete Lead (37) records are served by Get Deleted Leads only; Get Lead Activities skips them.

``/_sim/stats`` (GET), ``/_sim/reset-day``, ``/_sim/expire-tokens``, ``/_sim/inject`` and
``/_sim/faults`` (POST) let tests, the demo and the benchmark watch and steer the instance from
another process. They need no token: the simulated instance serves loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from multidict import MultiDict, MultiMapping

from leadstream.sim.marketo import faults as fault_kinds
from leadstream.sim.marketo.identity import MESSAGES as TOKEN_MESSAGES
from leadstream.sim.marketo.limits import NOT_COUNTED, QUOTA_EXHAUSTED, RATE_LIMITED, TOO_MANY_CONCURRENT
from leadstream.sim.marketo.log import Scan, StoredActivity
from leadstream.sim.marketo.paging import BadPagingToken, Cursor, decode
from leadstream.sim.platform import DELETE_LEAD

if TYPE_CHECKING:
    from leadstream.sim.marketo.instance import MarketoInstance

MAX_BATCH = 300  # Marketo's largest page
MAX_TYPE_IDS = 10  # activity type ids per Get Lead Activities call
MAX_LEAD_IDS = 30
MAX_URI_LENGTH = 8 * 1024  # a longer GET URI gets HTTP 414
REFUSALS = frozenset({RATE_LIMITED, QUOTA_EXHAUSTED, TOO_MANY_CONCURRENT})
ENDPOINTS = {
    "/identity/oauth/token": "identity",
    "/rest/v1/activities/types.json": "types",
    "/rest/v1/activities/pagingtoken.json": "pagingtoken",
    "/rest/v1/activities.json": "activities",
    "/rest/v1/activities/deletedleads.json": "deletedleads",
}
JSON = "application/json"
Params = MultiMapping[str]


class Rejected(Exception):
    """A request-level error of an endpoint (701 blank field, 704 date, 1003 bad value)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code, self.message = code, message


def make_app(sim: MarketoInstance) -> web.Application:
    routes = Routes(sim)
    app = web.Application(middlewares=[routes.uri_limit])
    app.router.add_route("*", "/identity/oauth/token", routes.identity)
    served = {
        "types": routes.activity_types,
        "pagingtoken": routes.paging_token,
        "activities": routes.activities,
        "deletedleads": routes.deleted_leads,
    }
    for path, name in ENDPOINTS.items():
        if name in served:
            app.router.add_route("*", path, routes.endpoint(name, served[name]))
    app.router.add_route("*", "/rest/{rest:.*}", routes.endpoint("unknown", routes.not_found))
    app.router.add_get("/_sim/stats", routes.sim_stats)
    app.router.add_post("/_sim/reset-day", routes.sim_reset_day)
    app.router.add_post("/_sim/expire-tokens", routes.sim_expire_tokens)
    app.router.add_post("/_sim/inject", routes.sim_inject)
    app.router.add_post("/_sim/faults", routes.sim_faults)
    app.on_shutdown.append(routes.wake_hanging_calls)
    return app


class Routes:
    def __init__(self, sim: MarketoInstance) -> None:
        self.sim = sim
        self._stopping = asyncio.Event()

    # -- the envelope ------------------------------------------------------------------------------
    def _json(self, fields: dict[str, Any]) -> web.Response:
        return web.Response(body=orjson.dumps({"requestId": self.sim.next_request_id(), **fields}), content_type=JSON)

    def _error(self, endpoint: str, code: str, message: str) -> web.Response:
        self.sim.stats.record(endpoint, code)
        return self._json({"success": False, "errors": [{"code": code, "message": message}]})

    @web.middleware
    async def uri_limit(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        if request.path.startswith("/rest/") and len(request.raw_path) > self.sim.max_uri_length:
            self.sim.stats.record(ENDPOINTS.get(request.path, "unknown"), "http414")
            return web.Response(
                status=414,
                text="<html><body><h1>414 Request-URI Too Large</h1></body></html>",
                content_type="text/html",
            )
        response: web.StreamResponse = await handler(request)
        return response

    # -- identity ----------------------------------------------------------------------------------
    async def identity(self, request: web.Request) -> web.Response:
        sim, stats = self.sim, self.sim.stats
        params: MultiDict[str] = MultiDict(request.query)
        if request.method == "POST":
            params.extend((k, str(v)) for k, v in (await request.post()).items())
        elif request.method != "GET":
            stats.record("identity", "http405")
            return web.Response(status=405, text="Method Not Allowed")
        if params.get("grant_type") != "client_credentials":
            stats.record("identity", "http400")
            return web.json_response(
                {"error": "unsupported_grant_type", "error_description": "grant_type must be client_credentials"},
                status=400,
            )
        good_id = hmac.compare_digest(params.get("client_id", ""), sim.client_id)
        good_secret = hmac.compare_digest(params.get("client_secret", ""), sim.client_secret)
        if not (good_id and good_secret):
            stats.record("identity", "http401")
            refusal = {"error": "invalid_client", "error_description": "Bad client credentials"}
            return web.json_response(refusal, status=401)
        token, expires_in = sim.tokens.issue(sim.clock())
        stats.record("identity", "ok")
        return web.json_response(
            {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": expires_in,
                "scope": f"apiuser@{sim.munchkin_id.lower().replace('-', '')}.example",
            }
        )

    # -- every REST call ---------------------------------------------------------------------------
    def endpoint(self, name: str, serve: Callable[[Params], dict[str, Any]]) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self.rest(request, name, serve)

        return handle

    async def rest(
        self,
        request: web.Request,
        endpoint: str,
        serve: Callable[[Params], dict[str, Any]],
    ) -> web.StreamResponse:
        sim = self.sim
        now = sim.clock()
        if "access_token" in request.query:
            sim.stats.token_in_query += 1  # no longer accepted (removed 2026-08-31): only the header counts
        params = await self._params(request)
        if params is None:
            return self._error(endpoint, "605", f"Request method '{request.method}' not supported")
        token_error = sim.tokens.check(_bearer(request), now)
        if token_error:
            return self._error(endpoint, token_error, TOKEN_MESSAGES[token_error])
        refused = sim.limits.refusal(now)
        if refused:
            return self._error(endpoint, refused, sim.limits.limits.message(refused))
        fault = sim.faults.draw()
        if fault in NOT_COUNTED:
            return self._error(endpoint, fault, fault_kinds.MESSAGES[fault])
        if fault in REFUSALS:  # as if other integrations had spent the limit
            return self._error(endpoint, fault, sim.limits.limits.message(fault))
        sim.limits.count(now)
        sim.limits.enter()
        try:
            if sim.latency:
                await asyncio.sleep(sim.latency)
            if fault == "timeout":
                await self._hang()
                sim.stats.record(endpoint, "timeout")  # the client has given up by now; 604 is what it would read
                return self._json({"success": False, "errors": [{"code": "604", "message": "Request timed out"}]})
            if fault == "5xx":
                sim.stats.record(endpoint, "http503")
                page = "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>"
                return web.Response(status=503, text=page, content_type="text/html")
            if fault == "713":
                return self._error(endpoint, "713", fault_kinds.MESSAGES["713"])
            if sim.access_denied:
                return self._error(endpoint, "603", "Access denied")
            try:
                fields = serve(params)
            except Rejected as rejected:
                return self._error(endpoint, rejected.code, rejected.message)
            sim.stats.record(endpoint, "ok")
            return self._json(fields)
        finally:
            sim.limits.leave()

    async def _params(self, request: web.Request) -> Params | None:
        """Query parameters; for ``POST`` with ``_method=GET``, the form body's too. None: method not allowed."""
        if request.method == "GET":
            return request.query
        if request.method != "POST":
            return None
        form = await request.post()
        if str(form.get("_method", "")).upper() != "GET":
            return None
        params: MultiDict[str] = MultiDict(request.query)
        params.extend((k, str(v)) for k, v in form.items() if k != "_method")
        return params

    async def _hang(self) -> None:
        """Longer than a client waits; cut short when the instance stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self.sim.hang_seconds)

    async def wake_hanging_calls(self, app: web.Application) -> None:
        self._stopping.set()

    # -- the endpoints -----------------------------------------------------------------------------
    def activity_types(self, params: Params) -> dict[str, Any]:
        return {"result": self.sim.activity_types_result(), "success": True}

    def paging_token(self, params: Params) -> dict[str, Any]:
        text = params.get("sinceDatetime", "").strip()
        if not text:
            raise Rejected("701", "'sinceDatetime' cannot be blank")
        try:
            since = datetime.fromisoformat(text)
        except ValueError:
            raise Rejected("704", f"Invalid date '{text}' (ISO 8601, for example 2026-11-28T10:00:00Z)") from None
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        return {"success": True, "nextPageToken": Cursor(int(since.timestamp() // 1)).encode()}

    def activities(self, params: Params) -> dict[str, Any]:
        wanted = set(_type_ids(params, self.sim.types))
        lead_ids = _lead_ids(params)

        def accept(item: StoredActivity) -> bool:
            if item.type_id not in wanted or item.type_id == DELETE_LEAD:
                return False
            return lead_ids is None or item.lead_id in lead_ids

        return self._page(params, accept)

    def deleted_leads(self, params: Params) -> dict[str, Any]:
        return self._page(params, lambda item: item.type_id == DELETE_LEAD)

    def not_found(self, params: Params) -> dict[str, Any]:
        raise Rejected("610", "Requested resource not found")

    def _page(self, params: Params, accept: Callable[[StoredActivity], bool]) -> dict[str, Any]:
        token = params.get("nextPageToken", "").strip()
        if not token:
            raise Rejected("701", "'nextPageToken' cannot be blank")
        try:
            cursor = decode(token)
        except BadPagingToken:
            raise Rejected("1003", f"Invalid nextPageToken '{token[:64]}'") from None
        batch_size = _int_param(params, "batchSize", default=MAX_BATCH, low=1, high=MAX_BATCH)
        scan: Scan = self.sim.page(token, cursor, accept, batch_size)
        fields: dict[str, Any] = {"success": True, "nextPageToken": scan.cursor.encode(), "moreResult": scan.more}
        if scan.found:
            fields["result"] = orjson.Fragment(b"[" + b",".join(item.body for item in scan.found) + b"]")
        return fields

    # -- /_sim/ controls ---------------------------------------------------------------------------
    async def sim_stats(self, request: web.Request) -> web.Response:
        sim = self.sim
        now = sim.clock()
        limits = sim.limits.limits
        return web.json_response(
            {
                **sim.stats.as_json(),
                "quotaUsed": sim.limits.quota_used,
                "inFlight": sim.limits.in_flight,
                "inWindow": sim.limits.in_window(now),
                "tokensIssued": sim.tokens.issued,
                "activities": len(sim.log),
                "limits": {
                    "callsPerWindow": limits.calls_per_window,
                    "windowSeconds": limits.window_seconds,
                    "maxConcurrent": limits.max_concurrent,
                    "dailyQuota": limits.daily_quota,
                },
            }
        )

    async def sim_reset_day(self, request: web.Request) -> web.Response:
        self.sim.reset_day()
        return web.json_response({"quotaUsed": self.sim.limits.quota_used})

    async def sim_expire_tokens(self, request: web.Request) -> web.Response:
        self.sim.expire_tokens()
        return web.json_response({"expired": True})

    async def sim_inject(self, request: web.Request) -> web.Response:
        """``{"count": 20000, "typeIds": [1, 10, …]}`` → the activities are in the log, dated now."""
        body = await _json_body(request)
        try:
            records = self.sim.inject(int(body.get("count", 0)), body.get("typeIds"))
        except (TypeError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=422)
        return web.json_response({"injected": len(records), "lastId": records[-1]["id"] if records else None})

    async def sim_faults(self, request: web.Request) -> web.Response:
        """``{"queue": ["611", "timeout"]}``: the next REST calls get these faults."""
        body = await _json_body(request)
        try:
            self.sim.faults.queue(*body.get("queue", []))
        except (TypeError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=422)
        return web.json_response({"queued": len(body.get("queue", []))})


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _listed(params: Params, name: str) -> list[str]:
    """The values of ``name``, comma-separated or repeated."""
    return [part.strip() for value in params.getall(name, []) for part in value.split(",") if part.strip()]


def _type_ids(params: Params, known: dict[int, Any]) -> list[int]:
    """``activityTypeIds=1,12`` or ``activityTypeIds=1&activityTypeIds=12``: at most 10 known ids."""
    texts = _listed(params, "activityTypeIds")
    if not texts:
        raise Rejected("701", "'activityTypeIds' cannot be blank")
    try:
        type_ids = [int(text) for text in texts]
    except ValueError:
        raise Rejected("1003", f"Invalid activityTypeIds '{','.join(texts)}': expected integer ids") from None
    if len(set(type_ids)) > MAX_TYPE_IDS:
        raise Rejected("1003", f"Too many activityTypeIds: {len(set(type_ids))} (at most {MAX_TYPE_IDS})")
    for type_id in type_ids:
        if type_id not in known:
            raise Rejected("1003", f"Invalid activity type id {type_id}")
    return type_ids


def _lead_ids(params: Params) -> set[int] | None:
    texts = _listed(params, "leadIds")
    if not texts:
        return None
    try:
        lead_ids = {int(text) for text in texts}
    except ValueError:
        raise Rejected("1003", f"Invalid leadIds '{','.join(texts)}': expected integer ids") from None
    if len(lead_ids) > MAX_LEAD_IDS:
        raise Rejected("1003", f"Too many leadIds: {len(lead_ids)} (at most {MAX_LEAD_IDS})")
    return lead_ids


def _int_param(params: Params, name: str, *, default: int, low: int, high: int) -> int:
    text = params.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise Rejected("1003", f"Invalid {name} '{text}': expected an integer") from None
    if not low <= value <= high:
        raise Rejected("1003", f"Invalid {name} {value}: between {low} and {high}")
    return value


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="expected a JSON object") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return body
