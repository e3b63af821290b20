"""Browser fixtures (Playwright sync API, Debian's chromium, headless) and the widget helper.

Fixtures
- `browser`: one chromium per test module (`/usr/bin/chromium`, or $PARLEY_CHROMIUM).
- `context`: a fresh browser context per test (no shared storage). Options per test with
  `@pytest.mark.browser_context(locale="de-DE", viewport={"width": 375, "height": 700})`.
- `page`: a page in that context; uncaught page errors are collected in `page.parley_errors`,
  and a screenshot is saved to `test-artifacts/screenshots/<test>.png` when the test ends.
- `widget_page`: `visit(base_url, path="/demo")` (or `visit(full_url)`) opens a page that embeds
  the widget, waits until its launcher is shown, and returns a `WidgetPage` driver.

The sync API runs in the test's thread; servers under test run in their own threads
(`tests/conftest.py: server_thread`, `tests/widget/protocol_double.py`), so any base URL works:

    def test_e2e(server_thread, widget_page):
        w = widget_page(server_thread.base_url, "/demo")
        w.open(); w.send("What are your opening hours?")
        w.expect_bubble("bot", "open")

Other directories reuse these with `from browser.conftest import *` in their conftest.py
(`tests/` is on pythonpath).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("PARLEY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
HOST = "parley-chat"  # the widget's shadow host element

__all__ = ["browser", "context", "page", "widget_page", "WidgetPage", "screenshot", "pytest_configure",
           "CHROMIUM", "CHROMIUM_ARGS", "HOST"]


def pytest_configure(config):
    config.addinivalue_line("markers", "browser_context(**options): options for the test's browser context")


def screenshot(page, name: str, **kwargs) -> Path:
    """Save a screenshot of the page (or of `locator=`) as test-artifacts/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / (re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") + ".png")
    target = kwargs.pop("locator", None) or page
    target.screenshot(path=str(path), animations="disabled", **kwargs)
    return path


@pytest.fixture(scope="module")
def browser():
    """Module-scoped on purpose: while a sync Playwright is alive its event loop counts as
    "running" in this thread, which breaks pytest-asyncio tests (and other sync_playwright()
    starts) in later modules. A module's last test closes it."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"chromium not found at {CHROMIUM} (scripts/setup.sh --test installs it)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def context(browser, request):
    options = {"viewport": {"width": 1280, "height": 800}, "locale": "en-US"}
    marker = request.node.get_closest_marker("browser_context")
    if marker:
        options.update(marker.kwargs)
    ctx = browser.new_context(**options)
    ctx.set_default_timeout(5000)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context, request):
    pg = context.new_page()
    pg.parley_errors = []
    pg.on("pageerror", lambda exc: pg.parley_errors.append(str(exc)))
    yield pg
    try:
        screenshot(pg, request.node.name)
    except Exception:  # a closed page must not turn a pass into an error
        pass


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

    def wait_ready(self, timeout: float = 10_000) -> "WidgetPage":
        self.launcher.wait_for(state="visible", timeout=timeout)
        return self

    def open(self) -> "WidgetPage":
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

    def expect_bubble(self, author: str, text: str | re.Pattern, timeout: float = 10_000):
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
