"""The overview: ingest rate per stream over the last hour, subscriptions and sources by state, and
what needs attention (failing subscriptions first), refreshed live."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from leadstream.console.charts import Series, line_chart
from leadstream.console.pages.deps import render, runtime_of, sampler_of, viewer
from leadstream.console.pages.subscriptions import STATES, attention, visible_views
from leadstream.events import STREAMS
from leadstream.security.principals import Principal

LISTED = 20  # subscriptions on the overview; the subscriptions page has the rest
ALERTS = 10  # the newest alerts shown
ALERT_PREFIX = "com.leadstream."


async def _live_values(request: Request) -> dict[str, Any]:
    principal = viewer(request)
    views = sorted(await visible_views(request, principal), key=attention)
    counts = Counter(v["state"] for v in views)
    runtime = runtime_of(request)
    sources, _ = await runtime.sources.views(None, principal.sees, after=None, limit=100_000)
    alerts = [_alert(a) for a in await runtime.alerts.recent(ALERTS * 3) if _sees(principal, a)][:ALERTS]
    return {
        "alerts": alerts,
        "subscriptions": views[:LISTED],
        "total": len(views),
        "states": [(state, counts.get(state, 0)) for state in STATES],
        "attention": sum(1 for v in views if attention(v) < 2),
        "source_states": sorted(Counter(s["state"] for s in sources).items()),
        "source_total": len(sources),
    }


def _sees(principal: Principal, alert: dict[str, Any]) -> bool:
    """The operator sees every alert; a tenant key those about its own tenants' things."""
    munchkin_id = (alert.get("data") or {}).get("munchkinId")
    return principal.is_operator or (isinstance(munchkin_id, str) and principal.sees(munchkin_id))


def _alert(alert: dict[str, Any]) -> dict[str, Any]:
    """An alert as the overview lists it: what happened, to what, and how its sending went."""
    data: dict[str, Any] = alert.get("data") or {}
    deliveries = alert.get("deliveries") or []
    states = Counter(d["state"] for d in deliveries)
    sent = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "no alert endpoint takes it"
    kind = str(alert.get("type", "")).removeprefix(ALERT_PREFIX)
    return {
        "time": alert.get("time"),
        "kind": kind,
        "tone": "ok" if kind.endswith(("reactivated", "recovered")) else "bad",
        "subscription": data.get("subscriptionId"),
        "name": data.get("name") or alert.get("subject") or "—",
        "tenant": data.get("munchkinId"),
        "detail": data.get("lastError") or "",
        "sent": sent,
    }


def _ingest_chart(request: Request) -> Any:
    sampler = sampler_of(request)
    end = time.time()
    series = [Series(stream, sampler.rates(("ingested", stream))) for stream in STREAMS]
    return line_chart(
        series, title="Ingest rate per stream, last hour", unit="events/s", start=end - sampler.span, end=end
    )


async def overview(request: Request) -> Response:
    values = {"title": "Overview", "active": "overview", "ingest_chart": _ingest_chart(request)}
    return render(request, "pages/overview.html", values | await _live_values(request))


async def overview_live(request: Request) -> Response:
    return render(request, "pages/overview_live.html", await _live_values(request))


def routes() -> list[BaseRoute]:
    return [Route("/", overview, methods=["GET"]), Route("/live/overview", overview_live, methods=["GET"])]
