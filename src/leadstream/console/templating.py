"""Jinja2 for the console: autoescaping everywhere, strict about missing names, one render call.

Autoescape is on for every template whatever its name (not ``select_autoescape``), so a name,
URL or response body with HTML in it always shows as text; markup built in Python (the charts)
is the only thing marked safe, and it escapes its own text.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from leadstream.console import display
from leadstream.console.csrf import FIELD as CSRF_FIELD
from leadstream.console.session import optional_session

STATIC_DIR = Path(__file__).parent / "static"
# htmx: no eval, no <script> run from swapped content, no inline indicator style (the CSP forbids
# it), and no page snapshots in localStorage (they would outlive sign-out).
HTMX_CONFIG = json.dumps(
    {"includeIndicatorStyles": False, "allowEval": False, "allowScriptTags": False, "historyCacheSize": 0}
)


@dataclass(frozen=True, slots=True)
class NavItem:
    key: str  # pages say which item is current with ``active=<key>``
    label: str
    path: str  # below the console prefix
    operator_only: bool = False


NAV = (
    NavItem("overview", "Overview", "/"),
    NavItem("subscriptions", "Subscriptions", "/subscriptions"),
    NavItem("events", "Events", "/events"),
    NavItem("sources", "Sources", "/sources"),
    NavItem("catalog", "Catalog", "/catalog"),
    NavItem("keys", "Keys", "/keys", operator_only=True),
    NavItem("audit", "Audit", "/audit", operator_only=True),
)


@functools.cache
def _content_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


class Templates:
    """The console's templates (package ``templates/``), optionally overlaid by ``loader`` (tests add pages)."""

    def __init__(
        self, *, prefix: str = "/ui", product: str = "leadstream", loader: jinja2.BaseLoader | None = None
    ) -> None:
        self.prefix = prefix.rstrip("/")
        loaders: list[jinja2.BaseLoader] = [jinja2.PackageLoader("leadstream.console", "templates")]
        if loader is not None:
            loaders.insert(0, loader)
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals.update(
            product=product,
            htmx_config=HTMX_CONFIG,
            nav=NAV,
            url=self.url,
            static=self.static,
            csrf_field_name=CSRF_FIELD,
            state_label=display.state_label,
            settings_rows=display.settings_rows,
            safe_href=display.safe_href,
            quota=display.quota,
            tenants_text=display.tenants_text,
        )
        self.env.filters.update(number=display.number, compact=display.compact)

    def url(self, path: str = "/") -> str:
        """A console URL: ``url('/subscriptions')`` → ``/ui/subscriptions``."""
        return self.prefix + (path if path.startswith("/") else "/" + path)

    def static(self, name: str) -> str:
        """A static asset's URL with its content hash, so browsers may cache it and still see a new release."""
        path = STATIC_DIR / name
        if not path.is_file() or path.resolve().parent != STATIC_DIR.resolve():
            raise jinja2.TemplateRuntimeError(f"no console asset named {name!r} in {STATIC_DIR}")
        return f"{self.prefix}/static/{name}?v={_content_hash(path)}"

    def context(self, request: Request, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """What every template can use: ``session`` (None on public pages), ``viewer`` (its identity),
        ``csrf_token``, ``active`` (the nav key), ``title``, ``path``; then the page's own ``values``."""
        session = optional_session(request)
        base: dict[str, Any] = {
            "request": request,
            "session": session,
            "viewer": session.identity if session is not None else None,
            "csrf_token": session.csrf_token if session is not None else "",
            "active": None,
            "title": "",
            "path": request.url.path,
        }
        return base | dict(values or {})

    def render_text(self, request: Request, name: str, values: Mapping[str, Any] | None = None) -> str:
        return self.env.get_template(name).render(self.context(request, values))

    def render(
        self,
        request: Request,
        name: str,
        values: Mapping[str, Any] | None = None,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> HTMLResponse:
        return HTMLResponse(self.render_text(request, name, values), status_code=status, headers=headers)
