"""The console foundation in a real browser (headless Debian Chromium): sign-in, sign-out, session
expiry, forged cookies, CSRF refusals, escaping, charts, live parts, pages without JavaScript.

Runs the demo app of ``console_demo`` over real HTTP; each test saves screenshots to
tests/screenshots/ for a person to look at.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from console_demo import HOSTILE, IDLE, OPERATOR_KEY, REVOKED_KEY, TENANT_KEY, Running, serve_demo, serve_html
from leadstream.console.session import COOKIE

pytest_plugins = ["browser"]  # its fixtures: chromium, open_browser, browser_page, screenshot


@pytest.fixture(scope="module")
def demo_server() -> Iterator[Running]:
    with serve_demo() as running:
        yield running


@pytest.fixture
def demo(demo_server: Running) -> Running:
    demo_server.demo.reset()
    return demo_server


def sign_in(page: Any, demo: Running, key: str, path: str = "/") -> None:
    page.goto(demo.ui(path))
    expect(page).to_have_url(re.compile(r"/ui/sign-in\?"))
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def signed_in(page: Any, demo: Running, key: str = OPERATOR_KEY, path: str = "/") -> None:
    sign_in(page, demo, key, path)
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def session_cookie(page: Any) -> dict[str, Any] | None:
    return next((c for c in page.context.cookies() if c["name"] == COOKIE), None)


def test_sign_in_with_the_operator_key_shows_who_is_signed_in(
    browser_page: Any, demo: Running, screenshot: Any
) -> None:
    page = browser_page
    page.goto(demo.ui("/"))
    expect(page).to_have_url(re.compile(r"/ui/sign-in\?next=%2Fui%2F"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    screenshot(page, "sign-in")
    signed_in(page, demo, OPERATOR_KEY)
    expect(page).to_have_url(demo.ui("/"))
    header = page.locator("header")
    expect(header.locator(".who-key")).to_have_text("key operator")
    expect(header.locator(".who-tenants")).to_have_text("operator · all tenants")
    nav = page.get_by_role("navigation", name="Console")
    expect(nav.get_by_role("link")).to_have_text(
        ["Overview", "Subscriptions", "Events", "Sources", "Catalog", "Keys", "Audit"]
    )
    expect(nav.get_by_role("link", name="Overview")).to_have_attribute("aria-current", "page")
    cookie = session_cookie(page)
    assert cookie is not None and OPERATOR_KEY not in cookie["value"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    assert OPERATOR_KEY not in page.content()
    assert page.script_errors == []  # the CSP refused nothing we ship (htmx, the stylesheet, inline SVG)
    screenshot(page, "overview")


def test_a_tenant_key_sees_its_tenants_and_no_operator_pages(browser_page: Any, demo: Running, screenshot: Any) -> None:
    page = browser_page
    signed_in(page, demo, TENANT_KEY, "/things")
    expect(page.locator(".who-tenants")).to_have_text("123-ABC-456, 987-XYZ-654")
    nav = page.get_by_role("navigation", name="Console")
    expect(nav.get_by_role("link", name="Keys")).to_have_count(0)
    expect(nav.get_by_role("link", name="Audit")).to_have_count(0)
    expect(page.locator("tbody tr")).to_have_count(3)  # not the fourth tenant's thing
    page.goto(demo.ui("/keys"))
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    expect(page.locator("main")).to_contain_text("Only the operator key may see API keys.")
    screenshot(page, "error-403")
    page.goto(demo.ui("/things/4"))
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    page.goto(demo.ui("/no-such-page"))
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    expect(page.locator("main")).to_contain_text("There is nothing here.")
    screenshot(page, "error-404")


def test_wrong_and_revoked_keys_get_one_message_that_says_nothing_about_the_key(
    browser_page: Any, demo: Running, screenshot: Any
) -> None:
    page = browser_page
    messages = []
    for key in ("not-a-key", REVOKED_KEY):
        sign_in(page, demo, key, "/things")
        alert = page.get_by_role("alert")
        expect(alert).to_have_text("That API key was not accepted. Check it and try again.")
        expect(page.get_by_label("API key")).to_have_value("")  # the key is not rendered back
        assert key not in page.content()
        messages.append(alert.text_content())
        assert session_cookie(page) is None
    assert messages[0] == messages[1]
    screenshot(page, "sign-in-refused")


def test_sign_out_ends_the_session_on_the_server(browser_page: Any, demo: Running, screenshot: Any) -> None:
    page = browser_page
    signed_in(page, demo, OPERATOR_KEY, "/things")
    cookie = session_cookie(page)
    assert cookie is not None
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    assert session_cookie(page) is None
    screenshot(page, "signed-out")
    page.context.add_cookies([cookie])  # the old cookie, replayed: the server no longer knows it
    page.goto(demo.ui("/things"))
    expect(page).to_have_url(re.compile(r"/ui/sign-in\?reason=ended"))
    expect(page.get_by_role("status")).to_have_text("Your session has ended. Sign in again to continue.")


def test_an_idle_session_expires_and_a_forged_cookie_goes_to_sign_in(
    browser_page: Any, demo: Running, screenshot: Any
) -> None:
    page = browser_page
    signed_in(page, demo, OPERATOR_KEY, "/things")
    demo.demo.clock.advance(IDLE - 5)  # used just before the idle limit: renewed
    page.reload()
    expect(page.get_by_role("heading", name="Things")).to_be_visible()
    demo.demo.clock.advance(IDLE + 1)
    page.reload()
    expect(page).to_have_url(re.compile(r"/ui/sign-in\?reason=ended&next=%2Fui%2Fthings"))
    expect(page.get_by_role("status")).to_have_text("Your session has ended. Sign in again to continue.")
    assert session_cookie(page) is None  # the dead cookie is cleared
    screenshot(page, "session-ended")
    page.get_by_label("API key").fill(OPERATOR_KEY)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(demo.ui("/things"))  # back where the person was

    page.context.clear_cookies()
    page.context.add_cookies([{"name": COOKIE, "value": "forged-" + "A" * 43, "url": demo.ui("/")}])
    page.goto(demo.ui("/things/1"))
    expect(page).to_have_url(re.compile(r"/ui/sign-in\?reason=ended&next=%2Fui%2Fthings%2F1"))


def test_a_form_with_its_token_changes_state(browser_page: Any, demo: Running, screenshot: Any) -> None:
    page = browser_page
    signed_in(page, demo, OPERATOR_KEY, "/things")
    row = page.locator("tr[data-id='1']")
    expect(row.locator(".badge")).to_have_text("Active")
    row.get_by_role("button", name="Pause").click()
    expect(page.locator("tr[data-id='1'] .badge")).to_have_text("Paused")
    assert demo.demo.things[1].state == "paused"
    screenshot(page, "things")


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(
    browser_page: Any, demo: Running, screenshot: Any
) -> None:
    page = browser_page
    signed_in(page, demo, OPERATOR_KEY, "/things")
    page.evaluate("""() => {
        const form = document.createElement("form");
        form.method = "post";
        form.action = "/ui/things/1/pause";
        document.body.append(form);
        form.submit();
    }""")
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    expect(page.locator("main")).to_contain_text("This form has expired or did not come from this console")
    screenshot(page, "csrf-refused")
    assert demo.demo.things[1].state == "active"
    page.goto(demo.ui("/things"))
    expect(page.locator("tr[data-id='1'] .badge")).to_have_text("Active")


def test_a_post_from_another_origin_is_refused_even_with_the_token(browser_page: Any, demo: Running) -> None:
    page = browser_page
    signed_in(page, demo, OPERATOR_KEY, "/things")
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    assert token
    # Another port of 127.0.0.1 is the same *site* (the SameSite=Strict cookie goes along) but another
    # origin: only the Origin check stands between it and the console. It even knows the token.
    attack = (
        f'<form method="post" action="{demo.ui("/things/1/pause")}">'
        f'<input type="hidden" name="csrf_token" value="{token}"><button>Win a prize</button></form>'
    )
    with serve_html(attack) as other_origin:
        page.goto(other_origin)
        page.get_by_role("button", name="Win a prize").click()
        expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
        expect(page.locator("main")).to_contain_text("This request came from another site, so it was refused.")
    assert demo.demo.things[1].state == "active"


def test_html_and_script_in_names_urls_and_bodies_show_as_text(
    browser_page: Any, demo: Running, screenshot: Any
) -> None:
    page = browser_page
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    signed_in(page, demo, OPERATOR_KEY, "/things")
    row = page.locator("tr[data-id='2']")
    expect(row.locator("a.name")).to_have_text(HOSTILE)
    expect(row.locator("code", has_text="javascript:")).to_have_text("javascript:alert(1)")
    expect(row.locator("a[href^='javascript']")).to_have_count(0)  # an unsafe endpoint is text, not a link
    row.locator("a.name").click()
    expect(page.locator("h1")).to_contain_text(HOSTILE)
    expect(page.locator("pre.response")).to_have_text("<b>bold?</b><script>window.__pwned = 3</script>")
    expect(page.locator("table.kv")).to_contain_text("***")
    assert "tok-should-not-show" not in page.content()
    screenshot(page, "escaped-detail")
    page.goto(demo.ui("/"))  # a chart title and a series label carry the same text
    expect(page.locator("svg.chart title").nth(1)).to_have_text(f"Lag of {HOSTILE}")
    assert page.evaluate("() => window.__pwned") is None
    assert page.locator("main script, main img").count() == 0
    assert dialogs == []


def test_charts_have_a_title_units_and_time_of_day(browser_page: Any, demo: Running, screenshot: Any) -> None:
    page = browser_page
    signed_in(page, demo, OPERATOR_KEY)
    ingest = page.locator("svg.chart").first
    expect(ingest.locator("text").first).to_have_text("Ingest rate, last hour")
    texts = ingest.locator("text").all_text_contents()
    assert "events/s" in texts and "time of day (UTC)" in texts
    assert "10:00" in texts and "11:00" in texts  # whole-hour ticks of the demo's window
    assert ingest.locator("polyline").count() == 1
    box = ingest.bounding_box()
    assert box is not None and box["width"] > 300  # drawn at a readable size
    empty = page.locator("svg.chart").nth(2)
    expect(empty.locator("text", has_text="no data yet")).to_have_count(1)
    screenshot(ingest, "chart-ingest")
    screenshot(page.locator("svg.chart").nth(1), "chart-lag")


def test_a_live_part_refreshes_in_place_and_an_ended_session_sends_the_page_to_sign_in(
    browser_page: Any, demo: Running
) -> None:
    page = browser_page
    signed_in(page, demo, OPERATOR_KEY)
    marker = page.evaluate("() => { window.__samePage = true; return true; }")
    first = int(page.locator("#polls .polls").text_content() or "0")
    expect(page.locator("#polls .polls")).not_to_have_text(str(first))  # htmx swapped it (every 2 s)
    assert marker and page.evaluate("() => window.__samePage") is True  # in place: no navigation
    demo.demo.clock.advance(IDLE + 1)  # the next refresh finds no session: HX-Redirect to sign-in
    expect(page).to_have_url(re.compile(r"/ui/sign-in\?reason=ended&next=%2Fui%2F$"))


def test_destructive_actions_are_confirmed_without_javascript(
    open_browser: Any, demo: Running, screenshot: Any
) -> None:
    page = open_browser(javascript=False)
    signed_in(page, demo, OPERATOR_KEY, "/things/3")
    question = page.get_by_role("alertdialog")
    expect(question).to_be_hidden()
    page.get_by_text("Delete…").click()  # a <details> disclosure: no script needed
    expect(question).to_contain_text("Delete warehouse? Delivery stops for good.")
    screenshot(page, "confirm-inline")
    assert 3 in demo.demo.things
    question.get_by_role("button", name="Delete").click()
    expect(page).to_have_url(demo.ui("/things"))
    assert 3 not in demo.demo.things

    page.goto(demo.ui("/things/1/delete"))  # the confirmation as a page of its own
    expect(page.get_by_role("alertdialog")).to_contain_text("Delete crm-sync? Delivery stops for good.")
    screenshot(page, "confirm-page")
    page.get_by_role("link", name="Cancel").click()
    expect(page).to_have_url(demo.ui("/things/1"))
    assert 1 in demo.demo.things
