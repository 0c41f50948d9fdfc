"""Pulling and trying a subscription: ``GET …/journal`` (SPEC §5) and ``POST …/sample``.

The subscription is read from the store, not from the delivery engine: the journal works on any
node, whoever delivers the subscription.
"""

from __future__ import annotations

from urllib.parse import quote

import orjson
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from leadstream import journal
from leadstream.api import openapi
from leadstream.api.auth import require_key
from leadstream.api.deps import Services
from leadstream.formats import event_body
from leadstream.security.principals import Principal
from leadstream.subscriptions.matching import compile_matcher
from leadstream.subscriptions.validation import decode_body

router = APIRouter(prefix="/v1/subscriptions", tags=["journal"])

JOURNAL_DESCRIPTION = f"""\
Pull the subscription's events, as Adobe I/O's journaling API serves them.

Start with no parameter (the oldest retained event), `latest=true` (the end of the log: only
new events), `seek=-PT2H` (a negative ISO 8601 duration: events ingested since that long ago), or
`since=<position>` (exclusive; a position from `_page.last` or the `next` link). `since`, `latest`
and `seek` exclude each other. Follow the `Link: <…>; rel="next"` header to page on.

Events are in the subscription's format (`cloudevents` for legacy subscriptions, which have no
per-event form) and filtered as the push is (event types and `filter`). A page holds at most
`limit` events (default {journal.DEFAULT_LIMIT}, at most {journal.MAX_LIMIT}) and at most
{journal.MAX_BODY_BYTES:,} bytes (always at least one event). A request examines at most
{journal.SCAN_BOUND:,} events of the subscription's stream and tenant: when the filter matches rarely, a
page may come back with fewer events than asked — even none — and a `_page.last` that continues
the scan. `_page.last` is where the next page starts.

`204` (with `Retry-After: {journal.RETRY_AFTER_SECONDS}` and the `next` link): the end of the log, nothing new.
`410`: `since` has expired (events after it are past retention): start again without it.
"""

JOURNAL_EXAMPLE = {
    "events": [
        {
            "position": "20000000000000064",
            "event": {
                "eventid": "6f1c…", "specversion": "1.0",
                "type": "com.adobe.platform.marketo.activity.standard.openemail",
                "source": "urn:marketo_activity_stream", "id": "3b2f…", "time": "2026-11-28T10:00:00Z",
                "datacontenttype": "application/json", "data": {"munchkinId": "123-ABC-456", "leadId": "1234"},
                "recipientclientid": "…",
            },
        }
    ],
    "_page": {"last": "20000000000000064", "count": 1},
}  # fmt: skip
JOURNAL_SCHEMA = {
    "type": "object",
    "required": ["events", "_page"],
    "properties": {
        "events": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["position", "event"],
                "properties": {
                    "position": {"type": "string", "description": "opaque; sorts as a string in log order"},
                    "event": {"type": "object", "description": "the event in the subscription's format"},
                },
            },
        },
        "_page": {
            "type": "object",
            "properties": {
                "last": {"type": "string", "description": "where the next page starts (since=)"},
                "count": {"type": "integer"},
            },
        },
    },
}
_NEXT = {"Link": {"description": 'rel="next": the next page', "schema": {"type": "string"}}}


def _next_link(sub_id: str, last: int, limit: int) -> str:
    path = f"/v1/subscriptions/{quote(sub_id, safe='')}/journal"
    return f'<{path}?since={journal.encode_position(last)}&limit={limit}>; rel="next"'


@router.get(
    "/{sub_id}/journal",
    summary="Pull the subscription's events (journal)",
    description=JOURNAL_DESCRIPTION,
    response_class=Response,
    responses={
        200: openapi.ok(JOURNAL_SCHEMA, JOURNAL_EXAMPLE, "A page of events", headers=_NEXT),
        204: {"description": "At the end of the log; try the next link again later",
              "headers": {**_NEXT, "Retry-After": {"description": "seconds", "schema": {"type": "integer"}}}},
        400: {"description": "A query parameter is not valid (problem+json naming it)"},
        404: {"description": "No such subscription"},
        409: {"description": "The subscription is deprovisioned"},
        410: {"description": "since has expired"},
    },
)  # fmt: skip
async def get_journal(
    services: Services,
    sub_id: str,
    since: str | None = Query(None, description="a position (exclusive) from _page.last or the next link"),
    limit: str | None = Query(
        None, description=f"events per page, 1 to {journal.MAX_LIMIT} (default {journal.DEFAULT_LIMIT})"
    ),
    latest: str | None = Query(None, description="true: start at the end of the log (only new events)"),
    seek: str | None = Query(None, description="a negative ISO 8601 duration, e.g. -PT2H: start that long ago"),
    principal: Principal = Depends(require_key),
) -> Response:
    _, config = await services.subscriptions.active(sub_id, principal.sees)
    query = journal.Query.parse(since=since, limit=limit, latest=latest, seek=seek)
    store = services.store
    fmt = journal.journal_format(config.body_format)
    page = await journal.read_page(
        store,
        (config.stream, config.munchkinId),
        await query.start(store),
        query.limit,
        compile_matcher(config, services.catalog, sub_id),
        lambda event: event_body(fmt, event, subscription_id=sub_id),
    )
    if query.since is not None:
        await journal.check_retained(store, query.since)
    link = _next_link(sub_id, page.last, query.limit)
    if page.at_end and not page.count:
        return Response(status_code=204, headers={"Link": link, "Retry-After": str(journal.RETRY_AFTER_SECONDS)})
    return Response(page.body(), media_type="application/json", headers={"Link": link})


SAMPLE_SCHEMA = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {
            "oneOf": [{"type": "integer"}, {"type": "string"}],
            "description": "activity: a type id or name, or co:<apiName> for a custom object; "
            "audit: Component or Component:action; notification: a kind. "
            "GET /v1/catalog/{stream} lists them.",
        }
    },
}


SAMPLE_ANSWER = {
    "type": "object",
    "properties": {
        "delivered": {"type": "boolean"},
        "status": {"type": ["integer", "null"], "description": "the endpoint's status; null: no HTTP answer"},
        "error": {"type": ["string", "null"]},
        "durationMs": {"type": "number"},
        "event": {"type": "object", "description": "the sample event as sent"},
    },
}


@router.post(
    "/{sub_id}/sample",
    summary="Push a sample event of a type to the endpoint",
    description="A realistic, catalog-shaped event of the requested type, built as ingest would store it but "
    "not stored: sent to the subscription's endpoint with its format, delivery mode, auth and signatures, as a "
    "delivery is. The type must be one the subscription takes (its eventTypes; its filter is not applied). "
    "The answer says what the endpoint answered: `status` (null when there was no HTTP answer) and `error`.",
    openapi_extra=openapi.body(SAMPLE_SCHEMA, {"type": "Open Email"}),
    responses={
        200: openapi.ok(SAMPLE_ANSWER, {
            "delivered": True, "status": 200, "error": None, "durationMs": 12.5,
            "event": {"eventid": "…", "type": "com.adobe.platform.marketo.activity.standard.openemail", "id": "…"}},
            "The endpoint's answer"),
        404: {"description": "No such subscription"},
        409: {"description": "The subscription is deprovisioned"},
        422: {"description": "The type is not in the catalog, or not one the subscription takes"},
    },
)  # fmt: skip
async def post_sample(
    request: Request, services: Services, sub_id: str, principal: Principal = Depends(require_key)
) -> Response:
    await services.subscriptions.active(sub_id, principal.sees)
    requested = decode_body(await request.body()).get("type")
    answer = await services.subscriptions.sample(sub_id, requested, principal.sees)
    return Response(orjson.dumps(answer), media_type="application/json")
