"""Browser fixtures for console tests: Playwright for Python driving Debian's Chromium.

Never a browser download: Playwright is pointed at ``/usr/bin/chromium`` (``executable_path``),
installed with ``apt-get install chromium``. Without it the browser tests skip and say how to get
it; under CI (``CI=true``) they fail instead, as the PostgreSQL tests do. A test module shares one
browser (fresh user-data-dir); each test gets its own context, so no cookie leaks between tests.

Use: ``pytest_plugins = ["browser"]`` in a test module; its fixtures are ``browser_page``,
``open_browser``, ``screenshot`` (and ``chromium``). The tests are sync: Playwright's sync API must
not run inside an asyncio loop. Screenshots go to tests/screenshots/ (ignored by git).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("LEADSTREAM_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",  # tests run as root in a container; the sandbox needs user namespaces
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # no calls home: loopback-only traffic
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).parent / "screenshots"
IN_CI = os.environ.get("CI") == "true"
TIMEOUT_MS = 10_000  # every Playwright wait is a wait on a condition, with this deadline


def _missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (required under CI=true)", pytrace=False)
    pytest.skip(reason)


def chromium_executable() -> str:
    if not CHROMIUM.exists():
        _missing(
            f"no Chromium at {CHROMIUM}: install Debian's package with `apt-get install chromium` "
            "(Playwright must not download a browser)"
        )
    return str(CHROMIUM)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One headless Chromium per test module (launching costs more than a context), with the
    flags above. Playwright starts it with a fresh, temporary user-data-dir of its own (it refuses
    one passed in ``args``) and deletes it at close; each test then gets a new context: its own
    cookies, storage and cache."""
    executable = chromium_executable()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed: `pip install -e '.[test]'`")
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _page_of(context: Any) -> Any:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.script_errors = errors  # tests assert the console logged no error (a CSP refusal shows here)
    return page


@pytest.fixture
def open_browser(chromium: Any) -> Iterator[Callable[..., Any]]:
    """``open_browser(javascript=True)`` → a page in a new browser context (nothing shared with
    other tests); ``javascript=False`` shows that a page works without it. Closed after the test."""
    contexts: list[Any] = []

    def open_(*, javascript: bool = True) -> Any:
        context = chromium.new_context(viewport={"width": 1280, "height": 860}, java_script_enabled=javascript)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        return _page_of(context)

    try:
        yield open_
    finally:
        for context in contexts:
            context.close()


@pytest.fixture
def browser_page(open_browser: Callable[..., Any]) -> Any:
    """A page in a fresh browser context, JavaScript on."""
    return open_browser()


def save_screenshot(target: Any, name: str) -> Path:
    """Save a page (whole) or one element (a locator) as tests/screenshots/<name>.png, for a person to look at."""
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{re.sub(r'[^a-z0-9_-]+', '-', name.lower())}.png"
    if hasattr(target, "goto"):
        target.screenshot(path=str(path), full_page=True)
    else:
        target.screenshot(path=str(path))
    return path


@pytest.fixture
def screenshot() -> Callable[[Any, str], Path]:
    """``screenshot(page_or_locator, name)``: see ``save_screenshot``."""
    return save_screenshot
