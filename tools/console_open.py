"""Keep a signed-in Chromium on the console's overview of every server `leadstream bench` starts.

Run it beside a bench to see what an operator watching the console costs the hot path:

    python tools/console_open.py &  leadstream bench --quick --scenario e2e; kill %1

It finds each `leadstream serve` process of the bench (its --port and, from its environment, the
operator key), signs in at /ui/ and leaves the overview open (it refreshes itself every 2 s, as
for a person). Debian's Chromium, driven by Playwright; loopback only.
"""

from __future__ import annotations

import time

import psutil
from playwright.sync_api import sync_playwright


def bench_servers() -> dict[int, tuple[int, str]]:
    """pid -> (port, operator key) of each running `leadstream serve` that has both."""
    found: dict[int, tuple[int, str]] = {}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "serve" not in cmdline or "--port" not in cmdline:
            continue
        try:
            key = proc.environ().get("LEADSTREAM_ADMIN_KEY")
        except psutil.Error:
            continue
        if key:
            found[proc.info["pid"]] = (int(cmdline[cmdline.index("--port") + 1]), key)
    return found


def main() -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        pages = {}
        while True:
            servers = bench_servers()
            for pid, (port, key) in servers.items():
                if pid in pages:
                    continue
                page = browser.new_page()
                try:
                    page.goto(f"http://127.0.0.1:{port}/ui/sign-in", timeout=5000)
                    page.fill("input[name=key]", key)
                    page.click("button[type=submit]")
                    page.wait_for_url(f"http://127.0.0.1:{port}/ui/**", timeout=5000)
                    print(f"watching the overview of pid {pid} on port {port}", flush=True)
                    pages[pid] = page
                except Exception as exc:  # the server may still be starting: try again next round
                    print(f"pid {pid}: {exc.__class__.__name__}, retrying", flush=True)
                    page.close()
            for pid in [p for p in pages if p not in servers]:
                pages.pop(pid).close()
            for page in pages.values():
                page.wait_for_timeout(10)  # let the page's own polling run
            time.sleep(0.5)


if __name__ == "__main__":
    main()
