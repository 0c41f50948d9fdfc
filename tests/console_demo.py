"""A tiny app on the console foundation, for the console's own tests (not shipped in src/).

It mounts ``create_console`` at /ui on a Starlette app with a key table of its own and a few pages
over in-memory "things" (shaped like subscriptions), and serves it for real: uvicorn on 127.0.0.1,
a free port, in a thread, so that sync browser tests and async HTTP tests can both reach it.
"""

from __future__ import annotations

import contextlib
import http.server
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jinja2
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route

from leadstream.console import (
    ConsoleOptions,
    MemorySessionStore,
    Sampler,
    Series,
    Templates,
    create_console,
    form_of,
    line_chart,
    session_of,
    templates_of,
)
from leadstream.console.session import Identity
from leadstream.errors import LeadstreamError, NotFound

OPERATOR_KEY = "op-key-1234567890"
TENANT_KEY = "tenant-key-abcdef"
REVOKED_KEY = "tenant-key-revoked"
IDLE = 600.0  # the demo's session idle timeout (shrunk from 12 h); tests move the clock past it
ABSOLUTE = 3600.0
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


@dataclass(frozen=True, slots=True)
class Key:
    key_id: str
    munchkin_ids: frozenset[str] | None
    scopes: frozenset[str]


KEYS = {
    OPERATOR_KEY: Key("operator", None, frozenset({"ingest", "read", "subscriptions"})),
    TENANT_KEY: Key("key_7f3a9c", frozenset({"123-ABC-456", "987-XYZ-654"}), frozenset({"read", "subscriptions"})),
    REVOKED_KEY: Key("key_revoked", frozenset({"123-ABC-456"}), frozenset({"read"})),
}


class Clock:
    """Wall time plus an offset the tests move forward (session expiry without waiting)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class Thing:
    id: int
    name: str
    munchkin_id: str
    state: str
    endpoint: str
    settings: dict[str, Any]
    last_response: str


def _things() -> dict[int, Thing]:
    auth = {
        "type": "oauth2",
        "tokenUrl": "https://idp.example.com/token",
        "clientId": "crm",
        "clientSecret": "s3cr3t-value",
    }
    return {
        1: Thing(
            1,
            "crm-sync",
            "123-ABC-456",
            "active",
            "https://hooks.example.com/marketo",
            {"stream": "activity", "batchSize": 500, "auth": auth},
            '{"ok": true}',
        ),
        2: Thing(
            2,
            HOSTILE,
            "123-ABC-456",
            "retrying",
            "javascript:alert(1)",
            {"stream": "lead", "auth": {"type": "token", "token": "tok-should-not-show"}},
            "<b>bold?</b><script>window.__pwned = 3</script>",
        ),
        3: Thing(
            3,
            "warehouse",
            "987-XYZ-654",
            "paused",
            "https://dw.example.com/in",
            {"stream": "activity", "auth": {"type": "none"}},
            "503 Service Unavailable",
        ),
        4: Thing(4, "other-tenant", "555-QQQ-555", "active", "https://other.example.com/", {"stream": "activity"}, ""),
    }


@dataclass
class Demo:
    clock: Clock = field(default_factory=Clock)
    sampler: Sampler = field(default_factory=lambda: Sampler(interval=10, span=3600))

    def __post_init__(self) -> None:
        self.sessions = MemorySessionStore(idle=IDLE, absolute=ABSOLUTE, clock=self.clock)
        start = 1_764_324_000.0  # 2025-11-28 10:00 UTC: the chart's x axis reads 10:00 … 11:00
        for i in range(361):
            t = start + i * 10
            ingested = 400 * i + 1200 * math.sin(i / 12)  # about 40 events/s, in waves
            self.sampler.record({"ingested": ingested, "lag": 3 + 2 * math.sin(i / 20) + (i % 9) / 9}, now=t)
        self.chart_window = (start, start + 3600)
        self.reset()

    def reset(self) -> None:
        """As new, for the next test (the server itself is shared by a module's tests)."""
        self.clock.offset = 0.0
        self.things: dict[int, Thing] = _things()
        self.revoked: set[str] = {"key_revoked"}  # key ids
        self.polls = 0
        self.sessions.clear()

    async def verify(self, key: str) -> Identity | None:
        found = KEYS.get(key)
        return None if found is None or found.key_id in self.revoked else found

    async def recheck(self, identity: Identity) -> Identity | None:
        return None if identity.key_id in self.revoked else identity

    def visible(self, request: Request) -> list[Thing]:
        identity = session_of(request).identity
        return [
            t for t in self.things.values() if identity.munchkin_ids is None or t.munchkin_id in identity.munchkin_ids
        ]

    def thing(self, request: Request) -> Thing:
        wanted = int(request.path_params["id"])
        for thing in self.visible(request):
            if thing.id == wanted:
                return thing
        raise NotFound("There is no such thing, or it belongs to another tenant.")


PAGES = {
    "overview.html": """{% extends "base.html" %}
{% block content %}
<h1>Overview</h1>
<div class="grid">
  <section class="card">{{ ingest_chart }}</section>
  <section class="card">{{ lag_chart }}</section>
</div>
<section class="card">
  <h2>Live</h2>
  {% include "partials/polls.html" %}
</section>
<section class="card">
  <h2>States</h2>
  <p>{% for s in states %}{{ ui.badge(s) }} {% endfor %}</p>
  {{ ui.quota_bar(41250, 50000, "calls") }}
  {{ ui.quota_bar(50000, 50000, "calls", "Quota (spent)") }}
  {{ empty_chart }}
</section>
{% endblock %}""",
    "partials/polls.html": """{% import "macros.html" as ui with context %}
{% call ui.live(url('/live/polls'), 'polls', every='300ms') %}
<p>Refreshes so far: <strong class="polls">{{ polls }}</strong></p>
{% endcall %}""",
    "things.html": """{% extends "base.html" %}
{% block content %}
<h1>Things</h1>
{{ ui.filter_form(url('/things'), fields, request.query_params) }}
<table>
  <thead><tr><th>Name</th><th>Tenant</th><th>State</th><th>Endpoint</th><th></th></tr></thead>
  <tbody>
  {% for t in things %}
  <tr data-id="{{ t.id }}">
    <td><a class="name" href="{{ url('/things/' ~ t.id) }}">{{ t.name }}</a></td>
    <td>{{ ui.tenant(t.munchkin_id) }}</td>
    <td>{{ ui.badge(t.state) }}</td>
    <td>{{ ui.link_or_text(t.endpoint) }}</td>
    <td>
      <form method="post" action="{{ url('/things/' ~ t.id ~ '/pause') }}" class="inline">
        {{ ui.csrf_field() }}<button type="submit" class="button pause">Pause</button>
      </form>
    </td>
  </tr>
  {% endfor %}
  </tbody>
</table>
{{ ui.pager(None, url('/things?page=2'), "1–" ~ things | length ~ " of " ~ things | length) }}
{% endblock %}""",
    "thing.html": """{% extends "base.html" %}
{% block content %}
<h1>{{ thing.name }} {{ ui.badge(thing.state) }}</h1>
<section class="card">{{ ui.settings_table(thing.settings) }}</section>
<section class="card">
  <h2>Last response body</h2>
  <pre class="response">{{ thing.last_response }}</pre>
</section>
{% set question = "Delete " ~ thing.name ~ "? Delivery stops for good." %}
{{ ui.confirm(url('/things/' ~ thing.id ~ '/delete'), "Delete", question) }}
{% endblock %}""",
}

STATES = ["active", "retrying", "paused", "deprovisioned", "running", "throttled", "quota_exhausted", "failing"]


def build_app(demo: Demo, *, options: ConsoleOptions = ConsoleOptions()) -> Starlette:
    async def overview(request: Request) -> Response:
        start, end = demo.chart_window
        values = {
            "title": "Overview",
            "active": "overview",
            "states": STATES,
            "polls": demo.polls,
            "ingest_chart": line_chart(
                [Series("activity", demo.sampler.rates("ingested"))],
                title="Ingest rate, last hour",
                unit="events/s",
                start=start,
                end=end,
            ),
            "lag_chart": line_chart(
                [
                    Series("crm-sync", demo.sampler.values("lag")),
                    Series(HOSTILE, [(t, v / 2 if v else v) for t, v in demo.sampler.values("lag")]),
                ],
                title=f"Lag of {HOSTILE}",
                unit="seconds",
                start=start,
                end=end,
            ),
            "empty_chart": line_chart([], title="Quota spent", unit="calls/min"),
        }
        return templates_of(request).render(request, "overview.html", values)

    async def polls(request: Request) -> Response:
        demo.polls += 1
        return templates_of(request).render(request, "partials/polls.html", {"polls": demo.polls})

    async def things(request: Request) -> Response:
        fields = [
            {"name": "tenant", "label": "Tenant", "placeholder": "123-ABC-456"},
            {"name": "state", "label": "State", "type": "select", "options": [(s, s.capitalize()) for s in STATES[:4]]},
        ]
        shown = [
            t
            for t in demo.visible(request)
            if request.query_params.get("state") in (None, "", t.state)
            and request.query_params.get("tenant") in (None, "", t.munchkin_id)
        ]
        values = {"title": "Things", "active": "subscriptions", "things": shown, "fields": fields}
        return templates_of(request).render(request, "things.html", values)

    async def thing(request: Request) -> Response:
        values = {"title": "Thing", "active": "subscriptions", "thing": demo.thing(request)}
        return templates_of(request).render(request, "thing.html", values)

    async def pause(request: Request) -> Response:
        demo.thing(request).state = "paused"
        return RedirectResponse(templates_of(request).url("/things"), status_code=303)

    async def confirm_delete(request: Request) -> Response:
        found = demo.thing(request)
        templates = templates_of(request)
        values = {
            "title": "Delete a thing",
            "label": "Delete",
            "action": templates.url(f"/things/{found.id}/delete"),
            "question": f"Delete {found.name}? Delivery stops for good.",
            "cancel_href": templates.url(f"/things/{found.id}"),
        }
        return templates.render(request, "confirm.html", values)

    async def delete(request: Request) -> Response:
        found = demo.thing(request)
        if (await form_of(request)).get("confirm") != "yes":
            raise LeadstreamError("Deleting needs the confirmation step.")
        del demo.things[found.id]
        return RedirectResponse(templates_of(request).url("/things"), status_code=303)

    async def keys(request: Request) -> Response:
        if not session_of(request).is_operator:
            raise LeadstreamError("Only the operator key may see API keys.", status=403)
        return templates_of(request).render(request, "error.html", {"status": 200, "message": "no keys"})

    async def boom(request: Request) -> Response:
        raise RuntimeError("internal detail: /var/lib/leadstream/secret")

    templates = Templates(prefix=options.prefix, loader=jinja2.DictLoader(PAGES))
    console = create_console(
        demo.verify,
        recheck=demo.recheck,
        sessions=demo.sessions,
        options=options,
        templates=templates,
        pages=[
            Route("/", overview),
            Route("/live/polls", polls),
            Route("/things", things),
            Route("/things/{id:int}", thing),
            Route("/things/{id:int}/pause", pause, methods=["POST"]),
            Route("/things/{id:int}/delete", confirm_delete, methods=["GET"]),
            Route("/things/{id:int}/delete", delete, methods=["POST"]),
            Route("/keys", keys),
            Route("/boom", boom),
        ],
    )
    return Starlette(routes=[Mount(options.prefix, app=console)])


@dataclass
class Running:
    url: str  # http(s)://127.0.0.1:<port>
    demo: Demo

    def ui(self, path: str = "/") -> str:
        return f"{self.url}/ui{path}"


@contextlib.contextmanager
def serve_demo(demo: Demo | None = None, **uvicorn_options: Any) -> Iterator[Running]:
    """The demo app under uvicorn on 127.0.0.1 (free port) in a thread; ``ssl_certfile`` etc. for TLS."""
    demo = demo or Demo()
    config = uvicorn.Config(
        build_app(demo),
        host="127.0.0.1",
        port=0,
        log_level="warning",
        access_log=False,
        lifespan="off",
        **uvicorn_options,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="console-demo", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("the console demo server did not start within 10 s")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    scheme = "https" if "ssl_certfile" in uvicorn_options else "http"
    try:
        yield Running(f"{scheme}://127.0.0.1:{port}", demo)
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def serve_html(html: str) -> Iterator[str]:
    """One static page from another origin (another port of 127.0.0.1: same site, other origin)."""
    body = html.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, name="other-origin", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
