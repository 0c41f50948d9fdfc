"""Sources (SPEC §10): each one's state, the Marketo API quota spent today as a bar, and lag."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from leadstream.console.pages.deps import render, runtime_of, viewer


async def sources_page(request: Request) -> Response:
    principal = viewer(request)
    found, _ = await runtime_of(request).sources.views(None, principal.sees, after=None, limit=100_000)
    return render(request, "pages/sources.html", {"title": "Sources", "active": "sources", "sources": found})


def routes() -> list[BaseRoute]:
    return [Route("/sources", sources_page, methods=["GET"])]
