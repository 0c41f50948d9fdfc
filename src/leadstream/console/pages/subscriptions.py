"""Subscriptions: the live list (filter by state, tenant, name), one subscription (settings,
status, charts, the attempt log as debug tracing) and its actions, which go through the same
``Subscriptions`` service and audit trail as ``/v1/subscriptions``."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from leadstream.console.app import templates_of
from leadstream.console.charts import Series, line_chart
from leadstream.console.forms import form_of
from leadstream.console.pages.deps import (
    audit,
    position_of,
    query,
    redirect,
    render,
    runtime_of,
    sampler_of,
    viewer,
    when,
)
from leadstream.errors import LeadstreamError
from leadstream.security.principals import Principal

STATES = ("active", "retrying", "paused", "deprovisioned")
SHOWN = 500  # subscriptions listed at most (a filter narrows it)
ATTEMPTS_READ = 200  # newest attempts read for the log; its filters pick among them
ATTEMPTS_SHOWN = 50
SAMPLE_NAMES = {"activity": "name", "audit": "component", "notification": "kind"}
STATUS_KEYS = frozenset(
    {
        "id", "createdAt", "state", "pausedReason", "delivered", "pending", "expired", "deadLettered",
        "lagSeconds", "cursor", "consecutiveFailures", "lastSuccessAt", "lastAttemptAt", "lastError", "nextAttemptAt",
    }
)  # fmt: skip
DELETE_CONSEQUENCE = "Delivery to its endpoint stops for good (it stays listed as deprovisioned)."
NOTICES = {
    "paused": ("Paused. Nothing is sent until you resume.", "info"),
    "resumed": ("Resumed: delivery goes on from the cursor.", "ok"),
    "replayed": ("Replay set: the cursor moved back, delivery goes on from there.", "ok"),
    "updated": ("Saved.", "ok"),
    "deleted": ("Deleted: the subscription is deprovisioned and delivery has stopped for good.", "info"),
}
EDITABLE = (  # (field, label, kind): what the edit form changes; the rest is PATCH through the API
    ("name", "Name", "text"),
    ("endpoint", "Endpoint URL", "url"),
    ("eventTypes", "Event types (comma-separated ids or names; * for all)", "list"),
    ("batchSize", "Batch size (events, 1–500)", "int"),
    ("pushIntervalMs", "Push interval (ms)", "int"),
    ("timeoutMs", "Timeout (ms)", "int"),
    ("retryAttempts", "Retry attempts", "int"),
    ("retryIntervalMs", "Retry interval (ms)", "int"),
    ("probeIntervalMs", "Probe interval while paused (ms)", "int"),
)


def attention(view: dict[str, Any]) -> int:
    """Sort key: what needs a person first (paused by failures, retrying), deleted ones last."""
    state = view["state"]
    if state == "paused":
        return 0 if view.get("pausedReason") == "failures" else 2
    return {"retrying": 1, "active": 3}.get(state, 4)


async def visible_views(request: Request, principal: Principal) -> list[dict[str, Any]]:
    views, _ = await runtime_of(request).subscriptions.views(None, principal.sees, after=None, limit=100_000)
    return views


def _filtered(request: Request, views: list[dict[str, Any]]) -> list[dict[str, Any]]:
    state, tenant, name = query(request, "state"), query(request, "tenant"), query(request, "name").lower()
    return [
        v
        for v in views
        if (not state or v["state"] == state)
        and (not tenant or v["munchkinId"] == tenant)
        and (not name or name in v["name"].lower())
    ]


def _filters(views: list[dict[str, Any]]) -> list[dict[str, Any]]:
    tenants = sorted({v["munchkinId"] for v in views})
    return [
        {"name": "name", "label": "Name contains", "placeholder": "crm"},
        {"name": "tenant", "label": "Tenant", "type": "select", "options": [(t, t) for t in tenants]},
        {"name": "state", "label": "State", "type": "select", "options": [(s, s.capitalize()) for s in STATES]},
    ]


async def _list_values(request: Request) -> dict[str, Any]:
    principal = viewer(request)
    views = await visible_views(request, principal)
    shown = sorted(_filtered(request, views), key=attention)
    return {
        "subscriptions": shown[:SHOWN],
        "total": len(views),
        "matching": len(shown),
        "live_query": request.url.query,
        "fields": _filters(views),
    }


async def list_page(request: Request) -> Response:
    values = await _list_values(request)
    return render(request, "pages/subscriptions.html", {"title": "Subscriptions", "active": "subscriptions", **values})


async def list_live(request: Request) -> Response:
    return render(request, "pages/subscriptions_table.html", await _list_values(request))


# -- one subscription ---------------------------------------------------------------------------


def _attempt_filter(request: Request) -> tuple[str, int | None]:
    outcome = query(request, "outcome")
    status = query(request, "status")
    return (outcome if outcome in ("success", "failure") else ""), (int(status) if status.isdigit() else None)


async def _attempts(request: Request, sub_id: str, principal: Principal) -> tuple[list[dict[str, Any]], int]:
    runtime = runtime_of(request)
    document = orjson.loads(await runtime.subscriptions.attempts(sub_id, ATTEMPTS_READ, principal.sees))
    attempts: list[dict[str, Any]] = document["attempts"]
    outcome, status = _attempt_filter(request)
    chosen = [
        a
        for a in attempts
        if (not outcome or (a.get("outcome") == "delivered") == (outcome == "success"))
        and (status is None or a.get("status") == status)
    ]
    for attempt in chosen:  # positions as numbers a person can compare with the event browser's
        attempt["positions"] = [position_of(attempt.get(k)) for k in ("firstPosition", "lastPosition")]
    return chosen[:ATTEMPTS_SHOWN], len(attempts)


def _charts(request: Request, sub_id: str) -> dict[str, Any]:
    sampler = sampler_of(request)
    end = time.time()
    start = end - sampler.span
    return {
        "throughput_chart": line_chart(
            [Series("delivered", sampler.rates(("delivered", sub_id)))],
            title="Throughput, last hour", unit="events/s", start=start, end=end,
        ),
        "lag_chart": line_chart(
            [Series("lag", sampler.values(("lag", sub_id)))],
            title="Lag, last hour", unit="seconds", start=start, end=end,
        ),
    }  # fmt: skip


async def _detail_values(request: Request, sub_id: str, *, attempt_log: bool = True) -> dict[str, Any]:
    """What the page shows; without ``attempt_log`` only the live part (status and charts)."""
    principal = viewer(request)
    runtime = runtime_of(request)
    view = await runtime.subscriptions.view(sub_id, principal.sees)
    attempts, read = await _attempts(request, sub_id, principal) if attempt_log else ([], 0)
    outcome, status = _attempt_filter(request)
    settings = {k: v for k, v in view.items() if k not in STATUS_KEYS}
    sample_types = _sample_types(request, view)
    return {
        "title": view["name"],
        "active": "subscriptions",
        "sub": view,
        "settings": settings,
        "attempts": attempts,
        "attempts_read": read,
        "attempt_outcome": outcome,
        "attempt_status": "" if status is None else str(status),
        "can_change": principal.can("subscriptions"),
        "sample_types": sample_types,
        "retention_start": when((time.time() - runtime.settings.retention) * 1000),
        "form_error": None,
        "form": None,
        "replay_value": "",
        "sample_value": "",
        "cursor": position_of(view.get("cursor")),
        "sample": None,
        "delete_question": f"Delete {view['name']}? {DELETE_CONSEQUENCE}",
        "notice": NOTICES.get(query(request, "done")),
        **_charts(request, sub_id),
    }


def _sample_types(request: Request, view: dict[str, Any]) -> list[str]:
    described = runtime_of(request).catalog.describe(view["stream"], view["munchkinId"])
    key = SAMPLE_NAMES[view["stream"]]  # what POST …/sample takes as its type, per stream
    names = [str(t.get(key) or "") for t in described]
    return [n for n in names if n][:400]


async def detail_page(request: Request) -> Response:
    values = await _detail_values(request, request.path_params["id"])
    return render(request, "pages/subscription.html", values)


async def detail_live(request: Request) -> Response:
    values = await _detail_values(request, request.path_params["id"], attempt_log=False)
    return render(request, "pages/subscription_live.html", values)


# -- actions ------------------------------------------------------------------------------------


async def _act(request: Request, action: str, done: str) -> Response:
    principal = viewer(request, "subscriptions")
    sub_id = request.path_params["id"]
    service = runtime_of(request).subscriptions
    view = await getattr(service, action)(sub_id, principal.sees)
    await audit(request, principal, f"subscription.{action}", sub_id, None, [view["munchkinId"]])
    return redirect(request, f"/subscriptions/{sub_id}?done={done}")


async def pause(request: Request) -> Response:
    return await _act(request, "pause", "paused")


async def resume(request: Request) -> Response:
    return await _act(request, "resume", "resumed")


async def _form_error(
    request: Request, sub_id: str, message: str, form: str, status: int = 422, typed: str = ""
) -> Response:
    """The page again with ``form``'s problem in it, and what was typed there kept."""
    values = await _detail_values(request, sub_id)
    values.update(form_error=message, form=form, notice=None)
    values["replay_value" if form == "replay" else "sample_value"] = typed
    return render(request, "pages/subscription.html", values, status=status)


def replay_time(text: str, retention: float, now: float) -> tuple[str | None, str | None]:
    """The form's time → (RFC 3339, None), or (None, why not). A time without a zone is UTC, as
    every time on these pages is. Outside retention is refused here, naming the earliest time
    (the API would replay everything retained; a person asking for an older time should know)."""
    if not text:
        return None, "Enter the time to replay from."
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None, f"{text!r} is not a time: use the picker, or write 2026-11-28T09:00:00 (UTC)."
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    earliest = now - retention
    if moment.timestamp() < earliest:
        return None, (
            f"{moment:%Y-%m-%d %H:%M:%S} UTC is outside retention: the log keeps events for "
            f"{_duration(retention)}, so the earliest time to replay from is {when(earliest * 1000)}."
        )
    if moment.timestamp() > now:
        return None, f"{moment:%Y-%m-%d %H:%M:%S} UTC is in the future: replay moves the cursor back."
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z"), None


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit[:-1] if count == 1 else unit}"
    return f"{seconds:g} seconds"


async def replay(request: Request) -> Response:
    principal = viewer(request, "subscriptions")
    sub_id = request.path_params["id"]
    runtime = runtime_of(request)
    await runtime.subscriptions.get(sub_id, principal.sees)
    text = str((await form_of(request)).get("from") or "").strip()
    start, problem = replay_time(text, runtime.settings.retention, time.time())
    if problem is not None or start is None:
        return await _form_error(request, sub_id, problem or "", "replay", typed=text)
    try:
        view = await runtime.subscriptions.replay(sub_id, start, principal.sees)
    except LeadstreamError as exc:
        return await _form_error(request, sub_id, exc.detail, "replay", exc.status, typed=text)
    await audit(request, principal, "subscription.replay", sub_id, {"from": start}, [view["munchkinId"]])
    return redirect(request, f"/subscriptions/{sub_id}?done=replayed")


async def sample(request: Request) -> Response:
    principal = viewer(request, "subscriptions")
    sub_id = request.path_params["id"]
    runtime = runtime_of(request)
    requested = str((await form_of(request)).get("type") or "").strip()
    wanted: int | str = int(requested) if requested.isdigit() else requested
    try:
        answer = await runtime.subscriptions.sample(sub_id, wanted, principal.sees)
    except LeadstreamError as exc:
        return await _form_error(request, sub_id, exc.detail, "sample", exc.status, typed=requested)
    values = await _detail_values(request, sub_id)
    values["sample"] = {"type": requested, **answer}
    return render(request, "pages/subscription.html", values)


async def confirm_delete(request: Request) -> Response:
    principal = viewer(request, "subscriptions")
    sub_id = request.path_params["id"]
    view = await runtime_of(request).subscriptions.view(sub_id, principal.sees)
    url = templates_of(request).url
    values = {
        "title": "Delete a subscription",
        "active": "subscriptions",
        "label": "Delete",
        "action": url(f"/subscriptions/{sub_id}/delete"),
        "question": f"Delete {view['name']}? {DELETE_CONSEQUENCE}",
        "cancel_href": url(f"/subscriptions/{sub_id}"),
    }
    return render(request, "confirm.html", values)


async def delete(request: Request) -> Response:
    viewer(request, "subscriptions")
    if (await form_of(request)).get("confirm") != "yes":
        return redirect(request, f"/subscriptions/{request.path_params['id']}/delete")
    return await _act(request, "delete", "deleted")


# -- edit ---------------------------------------------------------------------------------------


def _form_values(view: dict[str, Any]) -> dict[str, str]:
    shown: dict[str, str] = {}
    for name, _, kind in EDITABLE:
        value = view.get(name)
        shown[name] = ", ".join(str(v) for v in value) if kind == "list" and isinstance(value, list) else str(value)
    return shown


def _patch_of(form: dict[str, str], view: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The changed fields as a PATCH document, or the first field that is not a number."""
    patch: dict[str, Any] = {}
    for name, label, kind in EDITABLE:
        text = form.get(name, "").strip()
        value: Any = text
        if kind == "int":
            if not text.lstrip("-").isdigit():
                return {}, f"{name}: {label.split(' (')[0]} must be a whole number, not {text!r}."
            value = int(text)
        elif kind == "list":
            value = [int(p) if p.strip().isdigit() else p.strip() for p in text.split(",") if p.strip()]
        if value != view.get(name):
            patch[name] = value
    return patch, None


async def edit_page(request: Request) -> Response:
    principal = viewer(request, "subscriptions")
    view = await runtime_of(request).subscriptions.view(request.path_params["id"], principal.sees)
    return _edit(request, view, _form_values(view), None)


def _edit(
    request: Request, view: dict[str, Any], form: dict[str, str], error: str | None, status: int = 200
) -> Response:
    values = {
        "title": f"Edit {view['name']}",
        "active": "subscriptions",
        "sub": view,
        "editable": EDITABLE,
        "form": form,
        "error": error,
    }
    return render(request, "pages/subscription_edit.html", values, status=status)


async def edit(request: Request) -> Response:
    principal = viewer(request, "subscriptions")
    sub_id = request.path_params["id"]
    service = runtime_of(request).subscriptions
    view = await service.view(sub_id, principal.sees)
    posted = await form_of(request)
    form = {name: str(posted.get(name) or "") for name, _, _ in EDITABLE}
    patch, problem = _patch_of(form, view)
    if problem is not None:
        return _edit(request, view, form, problem, 422)
    if patch:
        try:
            updated = await service.patch(sub_id, patch, principal.sees)
        except LeadstreamError as exc:
            return _edit(request, view, form, exc.detail, exc.status)
        await audit(request, principal, "subscription.update", sub_id, patch, [updated["munchkinId"]])
    return redirect(request, f"/subscriptions/{sub_id}?done=updated")


def routes() -> list[BaseRoute]:
    return [
        Route("/subscriptions", list_page, methods=["GET"]),
        Route("/subscriptions/live", list_live, methods=["GET"]),
        Route("/subscriptions/{id}", detail_page, methods=["GET"]),
        Route("/subscriptions/{id}/live", detail_live, methods=["GET"]),
        Route("/subscriptions/{id}/pause", pause, methods=["POST"]),
        Route("/subscriptions/{id}/resume", resume, methods=["POST"]),
        Route("/subscriptions/{id}/replay", replay, methods=["POST"]),
        Route("/subscriptions/{id}/sample", sample, methods=["POST"]),
        Route("/subscriptions/{id}/edit", edit_page, methods=["GET"]),
        Route("/subscriptions/{id}/edit", edit, methods=["POST"]),
        Route("/subscriptions/{id}/delete", confirm_delete, methods=["GET"]),
        Route("/subscriptions/{id}/delete", delete, methods=["POST"]),
    ]
