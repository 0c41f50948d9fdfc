"""The console's pages in a real browser (headless Debian Chromium) against a real `leadstream serve`.

One server for the module, real endpoints on loopback (one answers, one fails on demand), and the
API beside the browser to check that what the page did is what the API would have done. Each test
saves screenshots to tests/screenshots/ for a person to look at.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from leadstream.console.pages.subscriptions import replay_time
from leadstream.testing import ServerProcess

pytest_plugins = ["browser"]  # its fixtures: chromium, open_browser, browser_page, screenshot

TENANT_A = "123-ABC-456"
TENANT_B = "987-XYZ-654"
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
FAILURE_BODY = "<h1>Service down</h1><script>window.__pwned = 3</script>"
expect.set_options(timeout=15_000)


@dataclass
class Endpoints:
    """Loopback endpoints: ``/ok/<name>`` answers 200; ``/flaky`` answers 503 with an HTML body
    while ``failing``. Every body received is kept, by path."""

    url: str = ""
    failing: bool = False
    bodies: dict[str, list[Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self, path: str) -> list[Any]:
        with self.lock:
            return list(self.bodies.get(path, []))


@contextlib.contextmanager
def serve_endpoints() -> Iterator[Endpoints]:
    endpoints = Endpoints()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if self.path == "/flaky" and endpoints.failing:
                answer, status = FAILURE_BODY.encode(), 503
            else:
                with endpoints.lock:
                    endpoints.bodies.setdefault(self.path, []).append(json.loads(body))
                answer, status = b'{"ok":true}', 200
            self.send_response(status)
            self.send_header("content-type", "text/html" if status != 200 else "application/json")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    endpoints.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, name="endpoints", daemon=True)
    thread.start()
    try:
        yield endpoints
    finally:
        httpd.shutdown()
        httpd.server_close()


@dataclass
class Console:
    server: ServerProcess
    endpoints: Endpoints
    tenant_key: str  # TENANT_A, scope subscriptions
    read_key: str  # TENANT_A, scope read
    subs: dict[str, str]  # name → id

    def ui(self, path: str = "/") -> str:
        return f"{self.server.url}/ui{path}"

    def api(self, method: str, path: str, body: Any = None, key: str | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.server.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {key or self.server.key}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def subscription(self, name: str) -> dict[str, Any]:
        status, view = self.api("GET", f"/v1/subscriptions/{self.subs[name]}")
        assert status == 200, view
        return dict(view)

    def publish(self, munchkin_id: str, guid: str, lead_id: int = 1234) -> None:
        record = {
            "munchkinId": munchkin_id, "marketoGUID": guid, "id": 1, "leadId": lead_id,
            "activityDate": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "activityTypeId": 1, "primaryAttributeValueId": 1, "primaryAttributeValue": "Pricing",
            "attributes": [{"name": "Webpage URL", "value": "/pricing?q=<b>x</b>"}],
        }  # fmt: skip
        status, answer = self.api("POST", "/v1/streams/activity/events", [record])
        assert status == 200 and answer["accepted"] == 1, answer


def _subscription(name: str, munchkin_id: str, endpoint: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name, "munchkinId": munchkin_id, "stream": "activity", "endpoint": endpoint,
        "startAt": "earliest", "pushIntervalMs": 50, "auth": {"type": "token", "token": "tok-not-for-pages"},
        **extra,
    }  # fmt: skip


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    root: Path = tmp_path_factory.mktemp("console-pages")
    env = {"LEADSTREAM_CONSOLE_SAMPLE_INTERVAL": "0.5", "LEADSTREAM_KEY_REFRESH_INTERVAL": "0.2"}
    with serve_endpoints() as endpoints:
        server = ServerProcess(root / "data", env=env)
        # Playwright's sync API keeps an event loop in this thread: start the server from another.
        starting = threading.Thread(target=lambda: asyncio.run(server.start()))
        starting.start()
        starting.join()
        try:
            running = Console(server, endpoints, "", "", {})
            status, key = running.api(
                "POST", "/v1/keys", {"munchkinIds": [TENANT_A], "scopes": ["subscriptions"], "name": "tenant A"}
            )
            assert status == 201, key
            running.tenant_key = key["key"]
            status, key = running.api("POST", "/v1/keys", {"munchkinIds": [TENANT_A], "scopes": ["read"]})
            assert status == 201, key
            running.read_key = key["key"]
            specs = {
                "crm-sync": _subscription("crm-sync", TENANT_A, f"{endpoints.url}/ok/crm"),
                "flaky-hook": _subscription(
                    "flaky-hook", TENANT_A, f"{endpoints.url}/flaky",
                    retryAttempts=3, retryIntervalMs=1500, probeIntervalMs=600_000,
                ),
                HOSTILE: _subscription(HOSTILE, TENANT_B, f"{endpoints.url}/ok/other"),
            }  # fmt: skip
            source = {  # a source whose instance does not answer as Marketo would: it shows, failing or retrying
                "type": "marketo", "name": "acme <b>prod</b>", "munchkinId": TENANT_A,
                "restUrl": f"{endpoints.url}/marketo", "clientId": "client", "clientSecret": "secret-not-for-pages",
                "dailyQuota": 1000,
            }  # fmt: skip
            status, view = running.api("POST", "/v1/sources", source)
            assert status == 201, view
            for name, spec in specs.items():
                status, view = running.api("POST", "/v1/subscriptions", spec)
                assert status == 201, view
                running.subs[name] = view["id"]
            yield running
        finally:
            server.stop()
            if server.running():
                server.kill()


def sign_in(page: Any, console: Console, key: str, path: str = "/") -> None:
    page.goto(console.ui(path))
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def row(page: Any, console: Console, name: str) -> Any:
    return page.locator(f"tr[data-id='{console.subs[name]}']")


def test_an_operator_watches_a_failing_endpoint_go_retrying_then_paused_without_a_reload(
    browser_page: Any, console: Console, screenshot: Any
) -> None:
    page = browser_page
    sign_in(page, console, console.server.key)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    for name in ("crm-sync", "flaky-hook"):
        expect(row(page, console, name).locator(".badge")).to_have_text("Active")
    expect(row(page, console, HOSTILE).locator("a.name")).to_have_text(HOSTILE)  # a script in a name is text
    page.evaluate("() => { window.__same_page = true }")  # gone if the page reloads

    console.endpoints.failing = True
    console.publish(TENANT_A, "guid-failing-1")
    expect(row(page, console, "flaky-hook").locator(".badge")).to_have_text("Retrying")
    screenshot(page, "pages-overview-retrying")
    expect(row(page, console, "flaky-hook").locator(".badge")).to_have_text("Paused")
    expect(page.locator(".notice.tone-bad")).to_contain_text("1 subscription needs attention")
    alert = page.locator("table.alerts tbody tr", has_text="flaky-hook").first
    expect(alert).to_contain_text("subscription.paused")  # the operator alert, on the overview too
    assert page.evaluate("() => window.__same_page") is True  # live, without a reload
    assert console.subscription("flaky-hook")["state"] == "paused"
    first = page.locator("table.subscriptions tbody tr").first
    expect(first).to_have_attribute("data-id", console.subs["flaky-hook"])  # failing first
    screenshot(page, "pages-overview-paused")

    row(page, console, "flaky-hook").locator("a.name").click()
    expect(page.locator("h1 .sub-name")).to_have_text("flaky-hook")
    attempt = page.locator("tbody.attempt").first
    expect(attempt.locator(".status")).to_have_text("503")
    attempt.locator("summary").click()
    expect(attempt.locator("pre.response-body")).to_have_text(FAILURE_BODY)  # the endpoint's body, as text
    expect(attempt.locator("table.headers").first).to_contain_text("***")  # the token is masked
    assert "tok-not-for-pages" not in page.content()
    page.get_by_label("Outcome").select_option("success")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("main")).to_contain_text("No attempts match these filters.")
    page.get_by_label("Outcome").select_option("failure")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("tbody.attempt").first.locator(".status")).to_have_text("503")
    expect(page.locator("svg.chart title")).to_have_text(["Throughput, last hour", "Lag, last hour"])
    assert page.evaluate("() => window.__pwned") is None
    assert page.script_errors == []
    screenshot(page, "pages-subscription-failing")
    console.endpoints.failing = False


def test_pause_resume_replay_edit_and_delete_through_the_page_are_what_the_api_does(
    browser_page: Any, console: Console, screenshot: Any
) -> None:
    page = browser_page
    guid = f"guid-replay-{uuid.uuid4().hex[:8]}"
    console.publish(TENANT_A, guid)
    path = "/ok/crm"
    sign_in(page, console, console.server.key, f"/subscriptions/{console.subs['crm-sync']}")

    def delivered_times() -> int:
        return sum(
            1 for body in console.endpoints.received(path) for a in body["activities"] if a["marketoGUID"] == guid
        )

    expect(page.locator("#subscription-live .state .badge")).to_have_text("Active")
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("status").first).to_have_text("Paused. Nothing is sent until you resume.")
    view = console.subscription("crm-sync")
    assert (view["state"], view["pausedReason"]) == ("paused", "manual")
    page.get_by_role("button", name="Resume").click()
    expect(page.locator("#subscription-live .state .badge")).to_have_text("Active")
    assert console.subscription("crm-sync")["state"] == "active"

    replay = page.get_by_role("form", name="Replay")
    too_old = (datetime.now(UTC) - timedelta(days=8)).strftime("%Y-%m-%dT%H:%M:%S")
    replay.get_by_label("Replay from (UTC)").fill(too_old)
    replay.get_by_role("button", name="Replay").click()
    expect(page.get_by_role("form", name="Replay").get_by_role("alert")).to_contain_text("is outside retention")
    expect(page.get_by_label("Replay from (UTC)")).to_have_value(too_old)  # what was typed stays
    screenshot(page, "pages-replay-outside-retention")
    assert delivered_times() == 1

    start = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S")
    page.get_by_role("form", name="Replay").get_by_label("Replay from (UTC)").fill(start)
    page.get_by_role("form", name="Replay").get_by_role("button", name="Replay").click()
    expect(page.get_by_role("status").first).to_contain_text("Replay set")
    _wait(lambda: delivered_times() >= 2, "the replayed event to arrive again")
    _, audit = console.api("GET", "/v1/audit?action=subscription")
    actions = [e["action"] for e in audit["entries"] if e["target"] == console.subs["crm-sync"]]
    assert actions[:3] == ["subscription.replay", "subscription.resume", "subscription.pause"]

    page.get_by_role("link", name="Edit").click()
    page.get_by_label("Batch size (events, 1–500)").fill("0")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("alert")).to_contain_text("batchSize")
    screenshot(page, "pages-edit-refused")
    assert console.subscription("crm-sync")["batchSize"] == 500  # nothing changed
    page.get_by_label("Batch size (events, 1–500)").fill("200")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status").first).to_have_text("Saved.")
    assert console.subscription("crm-sync")["batchSize"] == 200

    sample = page.get_by_role("form", name="Send a sample")
    sample.get_by_label("Send a sample event of type").fill("Visit Webpage")
    sample.get_by_role("button", name="Send sample").click()
    expect(page.get_by_role("status").first).to_contain_text("Sample Visit Webpage delivered: 200")
    page.get_by_role("form", name="Send a sample").get_by_label("Send a sample event of type").fill("No Such Type")
    page.get_by_role("form", name="Send a sample").get_by_role("button", name="Send sample").click()
    expect(page.get_by_role("form", name="Send a sample").get_by_role("alert")).to_contain_text("No Such Type")
    expect(page.get_by_label("Send a sample event of type")).to_have_value("No Such Type")
    page.locator("summary", has_text="Delete").click()
    screenshot(page, "pages-delete-confirm")
    page.get_by_role("alertdialog").get_by_role("button", name="Delete").click()
    expect(page.get_by_role("status").first).to_contain_text("Deleted")
    assert console.subscription("crm-sync")["state"] == "deprovisioned"
    expect(page.get_by_role("button", name="Pause")).to_have_count(0)
    screenshot(page, "pages-subscription-deleted")


def _wait(condition: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_tenant_key_sees_only_its_tenant(browser_page: Any, console: Console, screenshot: Any) -> None:
    page = browser_page
    sign_in(page, console, console.tenant_key, "/subscriptions")
    expect(page.locator(".who-tenants")).to_have_text(TENANT_A)
    expect(row(page, console, HOSTILE)).to_have_count(0)
    expect(row(page, console, "flaky-hook")).to_have_count(1)
    screenshot(page, "pages-subscriptions-tenant")
    page.goto(console.ui(f"/subscriptions/{console.subs[HOSTILE]}"))  # another tenant's, by URL
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    assert HOSTILE not in page.content() and "window.__pwned" not in page.content()
    status, _ = console.api("GET", f"/v1/subscriptions/{console.subs[HOSTILE]}", key=console.tenant_key)
    assert status == 404  # the same answer as the API's
    page.goto(console.ui(f"/events?tenant={TENANT_B}"))
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    page.goto(console.ui("/keys"))
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    nav = page.get_by_role("navigation", name="Console")
    expect(nav.get_by_role("link", name="Keys")).to_have_count(0)


def test_the_event_browser_finds_an_event_by_marketo_guid_and_shows_each_format(
    browser_page: Any, console: Console, screenshot: Any
) -> None:
    page = browser_page
    guid = f"guid-browse-{uuid.uuid4().hex[:8]}"
    console.publish(TENANT_B, guid, lead_id=777)
    _wait(
        lambda: any(a["marketoGUID"] == guid for b in console.endpoints.received("/ok/other") for a in b["activities"]),
        "delivery",
    )
    sign_in(page, console, console.server.key, "/events")
    page.get_by_label("marketoGUID / id").fill(guid)
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("table.events tbody tr")).to_have_count(1)
    expect(page.locator("a.event-id")).to_have_text(guid)
    screenshot(page, "pages-events")
    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
    page.goto(console.ui(f"/events?guid={guid}&to={an_hour_ago}"))  # a time range that ends before it
    expect(page.get_by_role("status")).to_have_text("No event matches.")
    page.goto(console.ui(f"/events?guid={guid}&from={an_hour_ago}"))
    expect(page.locator("a.event-id")).to_have_text(guid)
    page.goto(console.ui("/events?lead=777"))
    expect(page.locator("a.event-id")).to_have_text(guid)
    page.locator("a.event-id").click()
    expect(page.locator("h1 .event-id")).to_have_text(guid)
    bodies = page.locator("pre.event-body")
    expect(bodies).to_have_count(3)
    for fmt in ("legacy", "cloudevents", "adobe_io"):
        expect(page.locator(f"pre[data-format='{fmt}']")).to_contain_text(guid)
    expect(page.locator("pre[data-format='cloudevents']")).to_contain_text(
        '"type": "com.adobe.platform.marketo.activity.standard.visitwebpage"'
    )
    expect(page.locator("pre[data-format='legacy']")).to_contain_text("/pricing?q=<b>x</b>")  # as text
    delivered = page.locator(f"table.deliveries tr[data-id='{console.subs[HOSTILE]}']")
    expect(delivered).to_contain_text("delivered")
    assert page.evaluate("() => window.__pwned") is None
    screenshot(page, "pages-event")


def test_every_page_renders_for_the_operator(browser_page: Any, console: Console, screenshot: Any) -> None:
    page = browser_page
    sign_in(page, console, console.server.key)
    for path, heading, name in (
        ("/subscriptions", "Subscriptions", "pages-subscriptions"),
        ("/sources", "Sources", "pages-sources"),
        ("/catalog?stream=audit", "Catalog", "pages-catalog-audit"),
        ("/catalog?stream=notification", "Catalog", "pages-catalog-notification"),
        ("/catalog?stream=activity", "Catalog", "pages-catalog"),
        ("/keys", "API keys", "pages-keys"),
        ("/audit", "Audit trail", "pages-audit"),
        ("/", "Overview", "pages-overview"),
    ):
        page.goto(console.ui(path))
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
        screenshot(page, name)
    page.goto(console.ui("/sources"))
    source = page.locator("table.sources tbody tr").first
    expect(source).to_contain_text("acme <b>prod</b>")  # as text
    expect(source.locator("meter")).to_have_attribute("max", "500")  # its share of the daily quota
    assert "secret-not-for-pages" not in page.content()
    page.goto(console.ui("/keys"))
    expect(page.locator("table.keys")).to_contain_text("tenant A")
    page.goto(console.ui("/audit"))
    expect(page.locator("table.audit")).to_contain_text("subscription.create")
    assert page.script_errors == []


def test_a_read_key_only_looks_and_forged_or_tokenless_posts_change_nothing(
    browser_page: Any, console: Console, screenshot: Any
) -> None:
    page = browser_page
    sub_id = console.subs["flaky-hook"]
    sign_in(page, console, console.read_key, f"/subscriptions/{sub_id}")
    expect(page.locator("h1 .sub-name")).to_have_text("flaky-hook")
    expect(page.get_by_role("heading", name="Actions")).to_have_count(0)  # nothing to press
    screenshot(page, "pages-subscription-read-key")
    before = console.subscription("flaky-hook")["state"]
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    origin = console.server.url
    answer = page.request.post(
        console.ui(f"/subscriptions/{sub_id}/pause"), form={"csrf_token": token or ""}, headers={"Origin": origin}
    )
    assert answer.status == 403 and "does not allow subscriptions" in answer.text()  # the scope, as the API
    page.context.clear_cookies()
    sign_in(page, console, console.server.key, f"/subscriptions/{sub_id}")
    answer = page.request.post(console.ui(f"/subscriptions/{sub_id}/pause"), form={}, headers={"Origin": origin})
    assert answer.status == 403 and "nothing was changed" in answer.text()  # no token
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    answer = page.request.post(
        console.ui(f"/subscriptions/{sub_id}/pause"), form={"csrf_token": token or ""},
        headers={"Origin": "http://evil.example"},
    )  # fmt: skip
    assert answer.status == 403 and "another site" in answer.text()
    assert console.subscription("flaky-hook")["state"] == before
    page.goto(console.ui("/events?lead=12x"))
    expect(page.get_by_role("alert")).to_have_text("lead id: '12x' is not a number")
    screenshot(page, "pages-events-bad-query")


def test_the_replay_time_is_read_as_utc_and_refused_outside_retention() -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC).timestamp()
    week = 7 * 86400.0
    assert replay_time("2026-11-28T09:00:00", week, now) == ("2026-11-28T09:00:00Z", None)  # no zone: UTC
    assert replay_time("2026-11-28T10:00:00+01:00", week, now) == ("2026-11-28T09:00:00Z", None)
    start, why = replay_time("2026-11-20T09:00", week, now)
    assert start is None and why == (
        "2026-11-20 09:00:00 UTC is outside retention: the log keeps events for 7 days, "
        "so the earliest time to replay from is 2026-11-21 12:00:00 UTC."
    )
    assert replay_time("2026-11-28T13:00", week, now)[1] == (
        "2026-11-28 13:00:00 UTC is in the future: replay moves the cursor back."
    )
    assert "is not a time" in (replay_time("yesterday", week, now)[1] or "")
    assert replay_time("", week, now) == (None, "Enter the time to replay from.")


def test_the_operator_revokes_a_key_and_its_sessions_end(open_browser: Any, console: Console, screenshot: Any) -> None:
    status, key = console.api(
        "POST", "/v1/keys", {"munchkinIds": [TENANT_B], "scopes": ["read"], "name": "short-lived"}
    )
    assert status == 201
    tenant, operator = open_browser(), open_browser()
    sign_in(tenant, console, key["key"], "/subscriptions")
    expect(row(tenant, console, HOSTILE)).to_have_count(1)
    sign_in(operator, console, console.server.key, "/keys")
    entry = operator.locator(f"tr[data-id='{key['id']}']")
    entry.locator("summary", has_text="Revoke").click()
    screenshot(operator, "pages-keys-revoke")
    entry.get_by_role("alertdialog").get_by_role("button", name="Revoke").click()
    expect(operator.get_by_role("status").first).to_contain_text(f"Key {key['id']} is revoked")
    expect(operator.locator(f"tr[data-id='{key['id']}'] .badge")).to_contain_text("revoked")
    assert console.api("GET", "/v1/subscriptions", key=key["key"])[0] == 401  # the API refuses it too
    tenant.reload()
    expect(tenant.get_by_role("status")).to_have_text("Your session has ended. Sign in again to continue.")
    _, audit = console.api("GET", "/v1/audit?action=key.revoke")
    assert [(e["actor"], e["target"]) for e in audit["entries"]][:1] == [("operator", key["id"])]
