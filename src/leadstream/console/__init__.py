"""The web console under ``/ui/`` (SPEC §11, issue #13): server-rendered pages, htmx for live parts.

This package is self-contained: it knows API keys only through the ``verify``/``recheck`` callables
it is given, and data only through the pages it is given. Modules, one concern each:

- ``app``: ``create_console`` (the ASGI app to mount), error pages;
- ``session``: sessions and their store, the cookie; ``gate``: no session, no page;
- ``csrf``: origin and token checks on state-changing requests; ``forms``: form bodies;
- ``headers``: CSP and friends; ``templating``: Jinja2, autoescaped; ``display``: value formatting;
- ``charts``: time series as inline SVG; ``series``: the last hour of counters, in fixed memory.
"""

from leadstream.console.app import ConsoleOptions, create_console, error_page, templates_of
from leadstream.console.charts import Series, line_chart
from leadstream.console.forms import form_of
from leadstream.console.series import Sampler
from leadstream.console.session import Identity, MemorySessionStore, Session, SessionStore, session_of
from leadstream.console.templating import Templates

__all__ = [
    "ConsoleOptions",
    "Identity",
    "MemorySessionStore",
    "Sampler",
    "Series",
    "Session",
    "SessionStore",
    "Templates",
    "create_console",
    "error_page",
    "form_of",
    "line_chart",
    "session_of",
    "templates_of",
]
