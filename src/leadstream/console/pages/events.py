"""The event browser over the log: find events by tenant, stream, type, lead id, marketoGUID and
time; one event in each delivery format, and which subscriptions have delivered it.

A search scans at most ``SCAN`` positions back from the newest (or from the end of the time range)
through the store's ``find_events``, so its cost is bounded whatever the log holds; the page says
which span it searched, and a time range reaches further back."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from leadstream import formats
from leadstream.console.pages.deps import position_of, query, render, runtime_of, viewer, when
from leadstream.errors import NotFound
from leadstream.events import STREAMS, Event
from leadstream.runtime import Runtime
from leadstream.security.principals import Principal
from leadstream.store.base import EventQuery
from leadstream.subscriptions.matching import compile_leniently
from leadstream.subscriptions.state import decode as decode_state

SCAN = 200_000  # positions one search looks through at most
SHOWN = 50
ATTEMPTS_READ = 200  # per subscription, to find the attempt that delivered an event
SAMPLE_SUBSCRIPTION = "<subscription id>"  # the per-subscription part of a body, shown as a placeholder


class BadQuery(ValueError):
    pass


def _time(text: str, name: str) -> int | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadQuery(f"{name}: {text!r} is not a time (write 2026-11-28T09:00:00, UTC)") from exc
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000)


def _etypes(runtime: Runtime, text: str, munchkin_id: str | None) -> frozenset[str] | None:
    """A type as a person writes it: an activity id (10), an activity name (Visit Webpage), a
    CloudEvents type, an audit Component:action or a notification kind."""
    if not text:
        return None
    found = {text}
    named = runtime.catalog.activity_type_named(text, munchkin_id)
    if named is not None:
        found |= {str(named.id), named.ce_type}
    return frozenset(found)


def event_query(request: Request, principal: Principal, runtime: Runtime) -> EventQuery:
    tenant, stream, lead = query(request, "tenant"), query(request, "stream"), query(request, "lead")
    if tenant and not principal.sees(tenant):
        raise NotFound(f"no tenant {tenant}")
    if stream and stream not in STREAMS:
        raise BadQuery(f"stream: {stream!r} is not one of {', '.join(STREAMS)}")
    if lead and not lead.isdigit():
        raise BadQuery(f"lead id: {lead!r} is not a number")
    tenants = frozenset({tenant}) if tenant else principal.munchkin_ids
    return EventQuery(
        munchkin_ids=tenants,
        stream=stream or None,
        etypes=_etypes(runtime, query(request, "type"), tenant or None),
        event_id=query(request, "guid") or None,
        lead_id=int(lead) if lead else None,
    )


def _lead_of(event: Event) -> str:
    if event.stream != "activity" or event.etype.startswith("co:"):
        return "—"
    head = b'"leadId":"'
    at = event.data.find(head)
    return event.data[at + len(head) : event.data.index(b'"', at + len(head))].decode() if at >= 0 else "—"


def _type_name(runtime: Runtime, event: Event) -> str:
    """What a person calls the type: an activity's name (and id), else the filter type."""
    if event.stream == "activity" and event.etype.isdigit():
        found = runtime.catalog.activity_type(event.munchkin_id, int(event.etype))
        if found is not None:
            return f"{found.name} ({found.id})"
    return event.etype


def _row(runtime: Runtime, event: Event) -> dict[str, Any]:
    return {
        "name": _type_name(runtime, event),
        "position": event.position,
        "ingested": when(event.ingested_at),
        "time": event.time,
        "tenant": event.munchkin_id,
        "stream": event.stream,
        "type": event.type,
        "etype": event.etype,
        "id": event.id,
        "lead": _lead_of(event),
    }


async def browse(request: Request) -> Response:
    principal = viewer(request)
    runtime = runtime_of(request)
    store = runtime.store
    values: dict[str, Any] = {"title": "Events", "active": "events", "fields": _fields(principal), "error": None}
    rows: list[dict[str, Any]] = []
    span: tuple[int, int] | None = None
    try:
        wanted = event_query(request, principal, runtime)
        start_ms, end_ms = _time(query(request, "from"), "from"), _time(query(request, "to"), "to")
        upto = await store.position_before(end_ms) if end_ms is not None else await store.last_position()
        floor = await store.position_before(start_ms) if start_ms is not None else 0
        above = max(floor, upto - SCAN, await store.first_position() - 1)
        rows = [_row(runtime, e) for e in await store.find_events(wanted, above=above, upto=upto, limit=SHOWN)]
        span = (above + 1, upto)
    except BadQuery as exc:
        values["error"] = str(exc)
    searched = bool(request.query_params)
    return render(request, "pages/events.html", {**values, "events": rows, "span": span, "searched": searched})


def _fields(principal: Principal) -> list[dict[str, Any]]:
    tenants = sorted(principal.munchkin_ids) if principal.munchkin_ids is not None else None
    tenant: dict[str, Any] = {"name": "tenant", "label": "Tenant", "placeholder": "123-ABC-456"}
    if tenants is not None:
        tenant.update(type="select", options=[(t, t) for t in tenants])
    return [
        tenant,
        {"name": "stream", "label": "Stream", "type": "select", "options": [(s, s) for s in STREAMS]},
        {"name": "type", "label": "Type", "placeholder": "Visit Webpage or 2"},
        {"name": "lead", "label": "Lead id", "placeholder": "1234"},
        {"name": "guid", "label": "marketoGUID / id", "placeholder": "3b2f0d1e"},
        {"name": "from", "label": "From (UTC)", "type": "datetime-local"},
        {"name": "to", "label": "To (UTC)", "type": "datetime-local"},
    ]


# -- one event ------------------------------------------------------------------------------------


def _pretty(body: bytes) -> str:
    return orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2).decode()


def bodies(event: Event) -> list[tuple[str, str]]:
    """The event as each format delivers it: one batch body of it alone (legacy: activities only)."""
    shown: list[tuple[str, str]] = []
    for fmt in formats.FORMATS:
        if fmt == "legacy" and event.stream != "activity":
            continue
        body = formats.batch_body(
            fmt, [event], subscription_id=SAMPLE_SUBSCRIPTION, batch_id="<batch id>",
            created=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        )  # fmt: skip
        shown.append((fmt, _pretty(body)))
    return shown


async def deliveries(runtime: Runtime, event: Event, principal: Principal) -> list[dict[str, Any]]:
    """The subscriptions of the event's tenant and stream that take it, and what each did with it."""
    found: list[dict[str, Any]] = []
    for stored in await runtime.store.list_subscriptions(event.munchkin_id):
        if not principal.sees(stored.munchkin_id):
            continue
        config = runtime.subscriptions.config_of(stored)
        if config.stream != event.stream or not compile_leniently(config, runtime.catalog, stored.id)[0](event):
            continue
        state = runtime.subscriptions.state_of(stored)
        attempt = await _delivering_attempt(runtime, stored.id, event.position)
        if attempt is not None:
            status = f"delivered {when_iso(attempt.get('time'))} (batch {attempt.get('batchId')})"
            tone = "ok"
        elif state.cursor >= event.position:
            before = stored.created_at > event.ingested_at and decode_state(stored.state).delivered == 0
            status = "started after this event" if before else "delivered (its attempt is no longer in the log)"
            tone = "off" if before else "ok"
        else:
            status, tone = "not yet: waiting in its backlog", "warn"
        found.append({"id": stored.id, "name": config.name, "state": state.state, "status": status, "tone": tone})
    return found


def when_iso(value: Any) -> str:
    if not isinstance(value, str):
        return "—"
    return when(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


async def _delivering_attempt(runtime: Runtime, sub_id: str, position: int) -> dict[str, Any] | None:
    for doc in await runtime.store.list_attempts(sub_id, ATTEMPTS_READ):
        attempt = orjson.loads(doc)
        first, last = position_of(attempt.get("firstPosition")), position_of(attempt.get("lastPosition"))
        if (
            attempt.get("outcome") == "delivered"
            and first is not None
            and last is not None
            and first <= position <= last
        ):
            return dict(attempt)
    return None


async def event_page(request: Request) -> Response:
    principal = viewer(request)
    runtime = runtime_of(request)
    position = request.path_params["position"]
    found = await runtime.store.read(position - 1, 1)
    if not found or found[0].position != position or not principal.sees(found[0].munchkin_id):
        raise NotFound(f"There is no event at position {position} in the log (it may have left retention).")
    event = found[0]
    values = {
        "title": f"Event {event.id}",
        "active": "events",
        "event": _row(runtime, event),
        "bodies": bodies(event),
        "deliveries": await deliveries(runtime, event, principal),
        "checked_at": when(time.time() * 1000),
    }
    return render(request, "pages/event.html", values)


def routes() -> list[BaseRoute]:
    return [
        Route("/events", browse, methods=["GET"]),
        Route("/events/{position:int}", event_page, methods=["GET"]),
    ]
