"""`leadstream subscriptions …`: the admin API of subscriptions, as commands."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import typer

from leadstream.cli.client import JSON, KEY, SERVER, call, echo_json, fail, read_json_file, show
from leadstream.cli.group import CommandGroup, Format, Stream
from leadstream.client import ApiError, Client

subscriptions = CommandGroup(help="Create and manage subscriptions (the admin API).")
SUMMARY = ["id", "name", "stream", "state", "delivered", "pending", "lagSeconds", "lastError"]  # `show`: the rest
ATTEMPT_COLUMNS = ["time", "batchId", "events", "status", "outcome", "retryCount", "durationMs", "error"]
SUBSCRIPTION_ID = typer.Argument(
    ..., metavar="ID", help="the subscription id (or a prefix of it that only one subscription has)"
)

# -- the settings flags, shared by create and patch (None: not given) ----------------------------------

EVENT_TYPE_HELP = "activity type id or name, audit component[:action], notification kind; repeatable"
FROM_FILE = typer.Option(
    None,
    "--from-file",
    exists=True,
    dir_okay=False,
    metavar="FILE",
    help="a JSON object with any further subscription fields (the flags given override it)",
)
BATCH_SIZE = typer.Option(None, "--batch-size", min=1, max=500, metavar="N", help="events per batch, 1 to 500")
PUSH_INTERVAL = typer.Option(
    None, "--push-interval-ms", min=10, metavar="MS", help="send a partial batch once its oldest event waited this long"
)
RETRY_ATTEMPTS = typer.Option(
    None, "--retry-attempts", min=0, max=100, metavar="N", help="retries of a failed batch before pausing"
)
RETRY_INTERVAL = typer.Option(None, "--retry-interval-ms", min=10, metavar="MS", help="wait between retries")
PROBE_INTERVAL = typer.Option(
    None, "--probe-interval-ms", min=10, metavar="MS", help="while paused after failures: try again this often"
)
HMAC = typer.Option(False, "--hmac", help="sign with Standard Webhooks HMAC; a secret is generated and shown once")
HMAC_SECRET = typer.Option(
    None, "--hmac-secret", envvar="LEADSTREAM_HMAC_SECRET", metavar="SECRET", help="sign with this whsec_… secret"
)
FILTER = typer.Option(
    None, "--filter", metavar="JSON", help='an Event-Ruler pattern, e.g. {"data":{"leadId":[{"numeric":[">",100]}]}}'
)


def _event_types(given: list[str]) -> list[int | str]:
    return [int(t) if t.isdigit() else t for t in given]


def _settings(
    batch_size: int | None,
    push_interval_ms: int | None,
    retry_attempts: int | None,
    retry_interval_ms: int | None,
    probe_interval_ms: int | None,
    hmac: bool,
    hmac_secret: str | None,
    filter_json: str | None,
) -> dict[str, Any]:
    """The fields the shared flags set, by their API names."""
    body: dict[str, Any] = {
        name: value
        for name, value in (
            ("batchSize", batch_size),
            ("pushIntervalMs", push_interval_ms),
            ("retryAttempts", retry_attempts),
            ("retryIntervalMs", retry_interval_ms),
            ("probeIntervalMs", probe_interval_ms),
        )
        if value is not None
    }
    if hmac and hmac_secret:
        fail("--hmac and --hmac-secret exclude each other: --hmac generates a secret", 2)
    if hmac_secret:
        body["signing"] = {"hmacSecret": hmac_secret}
    elif hmac:
        body["signing"] = {"hmac": True}
    if filter_json is not None:
        try:
            body["filter"] = json.loads(filter_json)
        except json.JSONDecodeError as exc:
            fail(f"--filter: not JSON: {exc.msg} at column {exc.colno}", 2)
    return body


def _file_fields(settings_file: Path | None) -> dict[str, Any]:
    document = read_json_file(settings_file, "--from-file") if settings_file else {}
    if not isinstance(document, dict):
        fail(f"--from-file {settings_file}: expected a JSON object of subscription fields", 2)
    return document


@subscriptions.command("create")
def create(
    name: str = typer.Option(..., metavar="NAME", help="a name for people"),
    munchkin: str = typer.Option(
        ..., "--munchkin", metavar="MUNCHKIN-ID", help="the tenant's Munchkin ID (123-ABC-456)"
    ),
    stream: Stream = typer.Option(..., help="the stream to deliver"),
    endpoint: str = typer.Option(..., metavar="URL", help="the URL events are POSTed to"),
    event_type: list[str] = typer.Option(["*"], "--event-type", metavar="TYPE", help=EVENT_TYPE_HELP),
    format: Format | None = typer.Option(None, help="the body format (default: legacy for activity, else adobe_io)"),
    start_at: str | None = typer.Option(
        None, "--start-at", metavar="WHEN", help="now (the default: only new events), earliest, or an RFC 3339 time"
    ),
    token: str | None = typer.Option(None, metavar="TOKEN", help="send Authorization: Bearer TOKEN"),
    oauth_token_url: str | None = typer.Option(None, metavar="URL", help="OAuth2 client credentials: token URL"),
    client_id: str | None = typer.Option(None, metavar="ID", help="OAuth2 client credentials: client id"),
    client_secret: str | None = typer.Option(
        None, envvar="LEADSTREAM_CLIENT_SECRET", metavar="SECRET", help="OAuth2 client credentials: client secret"
    ),
    custom_objects: bool = typer.Option(False, help="also deliver custom-object changes (activity stream)"),
    batch_size: int | None = BATCH_SIZE,
    push_interval_ms: int | None = PUSH_INTERVAL,
    retry_attempts: int | None = RETRY_ATTEMPTS,
    retry_interval_ms: int | None = RETRY_INTERVAL,
    probe_interval_ms: int | None = PROBE_INTERVAL,
    hmac: bool = HMAC,
    hmac_secret: str | None = HMAC_SECRET,
    filter_json: str | None = FILTER,
    settings_file: Path | None = FROM_FILE,
    server: str = SERVER,
    key: str | None = KEY,
    as_json: bool = JSON,
) -> None:
    """Create a subscription."""
    body = _file_fields(settings_file)
    body.update(
        name=name,
        munchkinId=munchkin,
        stream=stream.value,
        endpoint=endpoint,
        customObjects=custom_objects,
        eventTypes=_event_types(event_type),
    )
    body.update(
        _settings(
            batch_size, push_interval_ms, retry_attempts, retry_interval_ms, probe_interval_ms, hmac, hmac_secret,
            filter_json,
        )
    )  # fmt: skip
    if format:
        body["format"] = format.value
    if start_at:
        body["startAt"] = start_at
    if token and oauth_token_url:
        fail("--token and --oauth-token-url exclude each other: give one kind of auth", 2)
    if token:
        body["auth"] = {"type": "token", "token": token}
    elif oauth_token_url:
        if not client_id or not client_secret:
            fail("--oauth-token-url needs --client-id and --client-secret", 2)
        body["auth"] = {"type": "oauth2", "tokenUrl": oauth_token_url, "clientId": client_id,
                        "clientSecret": client_secret}  # fmt: skip
    created = call(server, key, lambda client: client.request("POST", "/v1/subscriptions", json=body))
    show(created, as_json, title="created")


@subscriptions.command("patch")
def patch(
    subscription_id: str = SUBSCRIPTION_ID,
    name: str | None = typer.Option(None, metavar="NAME", help="a new name"),
    endpoint: str | None = typer.Option(None, metavar="URL", help="a new endpoint (it is challenged again)"),
    event_type: list[str] | None = typer.Option(None, "--event-type", metavar="TYPE", help=EVENT_TYPE_HELP),
    token: str | None = typer.Option(None, metavar="TOKEN", help="send Authorization: Bearer TOKEN from now on"),
    batch_size: int | None = BATCH_SIZE,
    push_interval_ms: int | None = PUSH_INTERVAL,
    retry_attempts: int | None = RETRY_ATTEMPTS,
    retry_interval_ms: int | None = RETRY_INTERVAL,
    probe_interval_ms: int | None = PROBE_INTERVAL,
    hmac: bool = HMAC,
    hmac_secret: str | None = HMAC_SECRET,
    filter_json: str | None = FILTER,
    settings_file: Path | None = FROM_FILE,
    server: str = SERVER,
    key: str | None = KEY,
    as_json: bool = JSON,
) -> None:
    """Change a subscription's settings (only the fields given)."""
    body = _file_fields(settings_file)
    body.update(
        _settings(
            batch_size, push_interval_ms, retry_attempts, retry_interval_ms, probe_interval_ms, hmac, hmac_secret,
            filter_json,
        )
    )  # fmt: skip
    for field, value in (("name", name), ("endpoint", endpoint)):
        if value is not None:
            body[field] = value
    if event_type:
        body["eventTypes"] = _event_types(event_type)
    if token:
        body["auth"] = {"type": "token", "token": token}
    if not body:
        fail("nothing to change: give at least one setting (see --help)", 2)
    show(_on_one(server, key, subscription_id, "PATCH", "", body), as_json)


@subscriptions.command("list")
def list_subscriptions(
    munchkin: str | None = typer.Option(None, "--munchkin", metavar="MUNCHKIN-ID", help="only this tenant's"),
    server: str = SERVER,
    key: str | None = KEY,
    as_json: bool = JSON,
) -> None:
    """List subscriptions (of one tenant with --munchkin), with their whole ids."""
    items = call(server, key, lambda client: _every_subscription(client, munchkin))
    if as_json:
        echo_json(items)
        return
    if not items:
        typer.echo("no subscriptions" + (f" of {munchkin}" if munchkin else "") + " (create one: subscriptions create)")
        return
    show([{**item, "state": state_text(item)} for item in items], False, SUMMARY, full_columns=("id",))


def state_text(view: dict[str, Any]) -> str:
    """``paused (failures)``: the state with the reason of a pause."""
    reason = view.get("pausedReason")
    return f"{view['state']} ({reason})" if reason else str(view.get("state"))


async def _every_subscription(client: Client, munchkin: str | None = None) -> list[Any]:
    query = f"?munchkinId={quote(munchkin)}" if munchkin else ""
    items, path = [], f"/v1/subscriptions{query}"
    while path:
        page = await client.request("GET", path)
        items += page["subscriptions"]
        path = page.get("next")
    return items


async def resolve(client: Client, given: str) -> str:
    """The subscription id ``given`` names: itself, or the one id it is a prefix of."""
    try:
        await client.request("GET", f"/v1/subscriptions/{quote(given, safe='')}")
        return given
    except ApiError as exc:
        if exc.status != 404 or not given:
            raise
        matching = [s["id"] for s in await _every_subscription(client) if s["id"].startswith(given)]
        if len(matching) == 1:
            return str(matching[0])
        if matching:
            raise ApiError(f"{given!r} is the start of {len(matching)} subscription ids: give more of it") from None
        raise


def _on_one(server: str, key: str | None, given: str, method: str, suffix: str, body: Any = None) -> Any:
    """One request about one subscription, named by its id or a unique prefix of it."""

    async def work(client: Client) -> Any:
        sub_id = await resolve(client, given)
        return await client.request(method, f"/v1/subscriptions/{quote(sub_id, safe='')}{suffix}", json=body)

    return call(server, key, work)


def _show_one(view: dict[str, Any], as_json: bool) -> None:
    show(view if as_json else {**view, "state": state_text(view)}, as_json)


def _action(method: str, suffix: str, help_text: str) -> Callable[..., None]:
    """A command that sends ``method`` to one subscription (``suffix`` after its path) and shows the answer."""

    def command(
        subscription_id: str = SUBSCRIPTION_ID, server: str = SERVER, key: str | None = KEY, as_json: bool = JSON
    ) -> None:
        _show_one(_on_one(server, key, subscription_id, method, suffix, {} if method == "POST" else None), as_json)

    command.__doc__ = help_text
    return command


subscriptions.command("show")(_action("GET", "", "Show a subscription with its live status."))
subscriptions.command("pause")(_action("POST", "/pause", "Pause delivery (no probes) until resumed."))
subscriptions.command("resume")(_action("POST", "/resume", "Resume delivery; the backlog drains in order."))


@subscriptions.command("delete")
def delete(
    subscription_id: str = SUBSCRIPTION_ID,
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation"),
    server: str = SERVER,
    key: str | None = KEY,
    as_json: bool = JSON,
) -> None:
    """Deprovision: delivery stops for good (asks first unless --yes)."""
    if not yes and not typer.confirm(f"Deprovision subscription {subscription_id}? Delivery stops for good"):
        fail("not deleted")
    _show_one(_on_one(server, key, subscription_id, "DELETE", ""), as_json)


@subscriptions.command("replay")
def replay(
    subscription_id: str = SUBSCRIPTION_ID,
    from_: str = typer.Option(
        ...,
        "--from",
        metavar="TIME|POSITION",
        help="an RFC 3339 time, or a position (as the journal, the cursor and the attempts show them)",
    ),
    server: str = SERVER,
    key: str | None = KEY,
    as_json: bool = JSON,
) -> None:
    """Move the cursor back (within retention) and deliver again from there."""
    # a bare small integer is the first API's position; tokens and times go as they are
    start: Any = int(from_) if from_.isdigit() and len(from_) < 17 else from_
    _show_one(_on_one(server, key, subscription_id, "POST", "/replay", {"from": start}), as_json)


@subscriptions.command("attempts")
def attempts(
    subscription_id: str = SUBSCRIPTION_ID,
    limit: int = typer.Option(20, min=1, max=1000, metavar="N", help="how many attempts, newest first"),
    server: str = SERVER,
    key: str | None = KEY,
    as_json: bool = JSON,
) -> None:
    """The delivery attempt log, newest first."""
    found = _on_one(server, key, subscription_id, "GET", f"/attempts?limit={limit}")
    show(found["attempts"], as_json, ATTEMPT_COLUMNS)


@subscriptions.command("dead-letters")
def dead_letters(
    subscription_id: str = SUBSCRIPTION_ID,
    limit: int = typer.Option(100, min=1, max=1000, metavar="N", help="how many, newest first"),
    server: str = SERVER,
    key: str | None = KEY,
    as_json: bool = JSON,
) -> None:
    """Events the endpoint refused for good (413 on a single event); replay brings them back."""
    found = _on_one(server, key, subscription_id, "GET", f"/dead-letters?limit={limit}")
    show(found["deadLetters"], as_json, ["position", "type", "id", "reason"])


@subscriptions.command("sample")
def sample(
    subscription_id: str = SUBSCRIPTION_ID,
    event_type: str = typer.Option(
        ..., "--type", metavar="TYPE", help="an event type the subscription takes, e.g. 'Open Email' or 7"
    ),
    server: str = SERVER,
    key: str | None = KEY,
    as_json: bool = JSON,
) -> None:
    """Push one sample event of a type to the endpoint, and show what it answered."""
    requested: int | str = int(event_type) if event_type.isdigit() else event_type
    answer = _on_one(server, key, subscription_id, "POST", "/sample", {"type": requested})
    if as_json:
        echo_json(answer)
        return
    show({k: v for k, v in answer.items() if k != "event"}, False)
    if not answer.get("delivered"):
        raise typer.Exit(1)


@subscriptions.command("journal")
def read_journal(
    subscription_id: str = SUBSCRIPTION_ID,
    since: str | None = typer.Option(None, metavar="POSITION", help="start after this position"),
    latest: bool = typer.Option(False, "--latest", help="start at the end of the log (only new events)"),
    seek: str | None = typer.Option(None, metavar="DURATION", help="start that long ago, e.g. -PT2H"),
    limit: int = typer.Option(100, min=1, max=1000, metavar="N", help="events per page"),
    follow: bool = typer.Option(False, "--follow", "-f", help="at the end, wait for new events (Ctrl-C stops)"),
    server: str = SERVER,
    key: str | None = KEY,
) -> None:
    """Pull the subscription's events, following the next links: one JSON line per event
    ({"position": …, "event": …}); the position to continue from goes to stderr at the end."""
    query = {"since": since, "seek": seek, "latest": "true" if latest else None, "limit": str(limit)}
    first = "&".join(f"{k}={quote(v)}" for k, v in query.items() if v is not None)

    async def pull(client: Client) -> str | None:
        sub_id = await resolve(client, subscription_id)
        path: str | None = f"/v1/subscriptions/{quote(sub_id, safe='')}/journal?{first}"
        last: str | None = since
        while path:
            page, link, retry_after = await _journal_page(client, path)
            for entry in page["events"] if page else []:
                typer.echo(json.dumps(entry, separators=(",", ":")))
            if page:
                last = page["_page"]["last"]
            path = link
            if page is None:  # the end of the log
                if not follow:
                    break
                await asyncio.sleep(retry_after)
        return last

    try:
        last = call(server, key, pull)
    except KeyboardInterrupt:
        return
    if last:
        typer.echo(f"continue with --since {last}", err=True)


async def _journal_page(client: Client, path: str) -> tuple[dict[str, Any] | None, str | None, float]:
    """(the page, or None at the end; the next link's path; the seconds to wait at the end)."""
    status, headers, body = await client.request("GET", path, with_status=True)
    link = headers.get("Link", "")
    following = link[link.index("<") + 1 : link.index(">")] if "<" in link else None
    if status == 204:
        return None, following, float(headers.get("Retry-After", "10"))
    return body, following, 0.0
