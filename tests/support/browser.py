"""Browser fixtures (Playwright sync API, Debian's chromium, headless) and the widget helper.

Fixtures (the one browser of the suite; every directory uses these)
- `browser`: chromium (`/usr/bin/chromium`, or $PARLEY_CHROMIUM), launched when a test first
  needs it and kept while the tests that follow need it too: it is closed as soon as the next
  test does not use it. While a sync Playwright is alive its event loop counts as "running" in
  this thread, which breaks pytest-asyncio tests and later `sync_playwright()` starts, so no
  other test may ever run beside it; a run of browser tests (a module, a directory) shares one.
- `context`: a fresh browser context per test (no shared storage). Options per test with
  `@pytest.mark.browser_context(locale="de-DE", viewport={"width": 375, "height": 700})`.
- `page`: a page in that context; uncaught page errors are collected in `page.parley_errors`,
  and when the test fails a screenshot is saved to `test-artifacts/screenshots/<test>.png`.
- `widget_page`: `visit(base_url, path="/demo")` (or `visit(full_url)`) opens a page that embeds
  the widget, waits until its launcher is shown, and returns a `WidgetPage` driver.

- `widget_build`: widget/dist/widget.js, (re)built once per run when older than its sources.

The sync API runs in the test's thread; servers under test run in their own threads
(`support.server: server_thread`, `support.fakes.protocol_double`), so any base URL works:

    def test_e2e(server_thread, widget_page):
        w = widget_page(server_thread.base_url, "/demo")
        w.open(); w.send("What are your opening hours?")
        w.expect_bubble("bot", "open")
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WIDGET = ROOT / "widget"
AXE = WIDGET / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = os.environ.get("PARLEY_CHROMIUM", "/usr/bin/chromium")
WAIT_MS = 15_000  # how long a page action or an expect() waits for its condition
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
HOST = "parley-chat"  # the widget's shadow host element

def pytest_configure(config):
    config.addinivalue_line("markers", "browser_context(**options): options for the test's browser context")


def screenshot(page, name: str, **kwargs) -> Path:
    """Save a screenshot of the page (or of `locator=`) as test-artifacts/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / (re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") + ".png")
    target = kwargs.pop("locator", None) or page
    target.screenshot(path=str(path), animations="disabled", **kwargs)
    return path


class _Chromium:
    """The suite's one chromium, started on first use and closed by `pytest_runtest_teardown`."""

    def __init__(self):
        self.playwright = None
        self.browser = None

    def get(self):
        if self.browser is None:
            from playwright.sync_api import sync_playwright

            if not Path(CHROMIUM).exists():
                pytest.fail(f"chromium not found at {CHROMIUM} (scripts/setup.sh --test installs it)")
            self.playwright = sync_playwright().start()
            self.browser = self.playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                          args=CHROMIUM_ARGS)
        return self.browser

    def close(self):
        if self.browser is not None:
            try:
                self.browser.close()
            finally:
                self.browser = None
                self.playwright.stop()
                self.playwright = None


_CHROMIUM = _Chromium()


@pytest.fixture
def browser():
    """The shared chromium (see the module docstring for its lifetime)."""
    return _CHROMIUM.get()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    # After the test's own fixtures are torn down: stop Playwright unless the next test uses it.
    if nextitem is None or "browser" not in nextitem.fixturenames:
        _CHROMIUM.close()


def pytest_sessionfinish(session):
    _CHROMIUM.close()


@pytest.fixture
def context(browser, request):
    options = {"viewport": {"width": 1280, "height": 800}, "locale": "en-US"}
    marker = request.node.get_closest_marker("browser_context")
    if marker:
        options.update(marker.kwargs)
    ctx = browser.new_context(**options)
    # Waits, not sleeps: each ends as soon as its condition holds, so a generous bound costs a passing
    # test nothing and keeps a loaded machine (two workers, PostgreSQL, Chromium on 2 cores) from
    # failing a check at Playwright's 5 s default.
    from playwright.sync_api import expect

    ctx.set_default_timeout(WAIT_MS)
    expect.set_options(timeout=WAIT_MS)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context, request):
    pg = context.new_page()
    pg.parley_errors = []
    pg.on("pageerror", lambda exc: pg.parley_errors.append(str(exc)))
    yield pg
    failed = getattr(request.node, "parley_call_failed", False)
    if failed:
        with contextlib.suppress(Exception):  # a closed page must not hide the test's own failure
            screenshot(pg, request.node.name)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # The `page` fixture screenshots a test whose body failed (a passing test's picture costs
    # 0.1-0.3 s of Chromium time and tells nothing).
    outcome = yield
    if call.when == "call" and outcome.get_result().failed:
        item.parley_call_failed = True


class WidgetPage:
    """Drives the embedded widget through its (open) shadow root. Playwright CSS locators pierce
    open shadow roots, so `w.q(".pl-launch")` finds elements inside the widget."""

    def __init__(self, page):
        self.page = page

    def q(self, css: str):
        return self.page.locator(f"{HOST} {css}")

    @property
    def host(self):
        return self.page.locator(HOST)

    @property
    def launcher(self):
        return self.q(".pl-launch")

    @property
    def panel(self):
        return self.q(".pl-panel")

    @property
    def input(self):
        return self.q(".pl-form textarea")

    def wait_ready(self, timeout: float = 10_000) -> WidgetPage:
        self.launcher.wait_for(state="visible", timeout=timeout)
        return self

    def open(self) -> WidgetPage:
        if not self.panel.is_visible():
            self.launcher.click()
        self.panel.wait_for(state="visible")
        self.settle()
        return self

    def settle(self) -> None:
        """Wait for the widget's CSS animations (panel slide-in) to finish."""
        self.eval("(r) => Promise.all(r.getAnimations().map(a => a.finished))")

    def close(self) -> None:
        self.q(".pl-head .pl-x").click()
        self.panel.wait_for(state="hidden")

    def send(self, text: str) -> None:
        self.input.fill(text)
        self.input.press("Enter")

    def bubbles(self, author: str | None = None):
        """Message elements: author in visitor | bot | agent | system (None: all)."""
        if author == "system":
            return self.q(".pl-log .pl-sys")
        return self.q(f".pl-log .pl-m.pl-{author}:not(.pl-greet)" if author else ".pl-log .pl-m:not(.pl-greet)")

    def expect_bubble(self, author: str, text: str | re.Pattern, timeout: float = WAIT_MS):
        from playwright.sync_api import expect

        loc = self.bubbles(author).filter(has_text=text).last
        expect(loc).to_be_visible(timeout=timeout)
        return loc

    def eval(self, js: str, arg=None):
        """Evaluate `js` (a function of (root, arg)) against the widget's shadow root."""
        return self.page.evaluate(f"([a]) => ({js})(document.querySelector('{HOST}').shadowRoot, a)", [arg])

    def active_class(self) -> str | None:
        """className of the focused element inside the widget (None if focus is outside it)."""
        return self.eval("(r) => r.activeElement ? (r.activeElement.className || r.activeElement.tagName) : null")

    def shot(self, name: str) -> Path:
        return screenshot(self.page, name)


@pytest.fixture
def widget_page(page):
    """visit(base_url, path="/demo") or visit(full_url) -> WidgetPage, launcher visible."""

    def visit(base_url: str, path: str | None = None, *, wait: bool = True) -> WidgetPage:
        url = base_url.rstrip("/") + path if path is not None else base_url
        page.goto(url)
        w = WidgetPage(page)
        return w.wait_ready() if wait else w

    return visit


def wait_for(page, predicate, timeout: float = WAIT_MS / 1000, what: str = "condition"):
    """Poll a Python predicate while letting Playwright dispatch events (as long as an expect() waits)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        out = predicate()
        if out:
            return out
        page.wait_for_timeout(25)
    raise AssertionError(f"timed out waiting for {what}")


def build_widget() -> Path:
    """widget/dist/widget.js, (re)built when missing or older than its sources."""
    out = WIDGET / "dist" / "widget.js"
    sources = [WIDGET / "build.mjs", WIDGET / "package.json", *(WIDGET / "src").rglob("*")]
    newest = max(p.stat().st_mtime for p in sources if p.is_file())
    if out.exists() and out.stat().st_mtime >= newest and AXE.exists():
        return out
    npm = shutil.which("npm")
    assert npm, "npm is needed to build the widget"
    if not (WIDGET / "node_modules" / "esbuild").exists() or not AXE.exists():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=WIDGET, check=True)
    subprocess.run([npm, "run", "--silent", "build"], cwd=WIDGET, check=True)
    return out


@pytest.fixture(scope="session")
def widget_build() -> Path:
    return build_widget()


async def customer_site(api_base: str, key: str):
    """A shop page on another origin embedding the widget like a business would."""
    from aiohttp import web

    html = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Shop</title></head>'
            f'<body><h1>Pricing</h1><p><a href="#plans">Plans</a></p>'
            f'<script src="{api_base}/widget.js" data-chatbot="{key}" async></script></body></html>')

    async def page(request):
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/pricing", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def shop_chatbot(srv, token: str, config: dict, name: str = "Shop helper"):
    """A chatbot made through the API (`srv` a server_thread, `token` an admin's) and embedded on a
    shop page of another origin that its allowed origins list. Returns (chatbot, runner, shop URL);
    the caller cleans up the runner."""
    status, bot = srv.run(srv.server.call("POST", "/api/chatbots", token=token, json={
        "name": name, "allowed_origins": [], "config": config}))
    assert status == 201, bot
    runner, shop = srv.run(customer_site(srv.base_url, bot["public_key"]))
    status, out = srv.run(srv.server.call("PATCH", f"/api/chatbots/{bot['id']}", token=token,
                                          json={"allowed_origins": [shop]}))
    assert status == 200, out
    return bot, runner, shop
