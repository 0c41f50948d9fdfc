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

LISTED = 20  # subscriptions on the overview; the subscriptions page has the rest


async def _live_values(request: Request) -> dict[str, Any]:
    principal = viewer(request)
    views = sorted(await visible_views(request, principal), key=attention)
    counts = Counter(v["state"] for v in views)
    sources, _ = await runtime_of(request).sources.views(None, principal.sees, after=None, limit=100_000)
    return {
        "subscriptions": views[:LISTED],
        "total": len(views),
        "states": [(state, counts.get(state, 0)) for state in STATES],
        "attention": sum(1 for v in views if attention(v) < 2),
        "source_states": sorted(Counter(s["state"] for s in sources).items()),
        "source_total": len(sources),
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
