"""Widget-only browser tests against the protocol double (no database, no Parley server)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from browser.conftest import *  # noqa: F401,F403  (context, page, widget_page, screenshot)
from browser.conftest import CHROMIUM, CHROMIUM_ARGS, WidgetPage

WIDGET = Path(__file__).resolve().parents[2] / "widget"
AXE = WIDGET / "node_modules" / "axe-core" / "axe.min.js"


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


@pytest.fixture(scope="package")
def browser():
    """One chromium for this directory's tests (they are all sync), closed when they are done so
    later asyncio tests don't meet Playwright's loop."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"chromium not found at {CHROMIUM} (scripts/setup.sh --test installs it)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def widget_build() -> Path:
    return build_widget()


@pytest.fixture(scope="session")
def double_server(widget_build):
    from widget.protocol_double import ProtocolDouble

    d = ProtocolDouble().start()
    yield d
    d.stop()


@pytest.fixture
def double(double_server):
    """The protocol double, reset to its defaults for this test."""
    double_server.reset()
    return double_server


@pytest.fixture
def visit(double, widget_page):
    """visit(path="/", head=..., body=..., script_attrs=...) -> WidgetPage on a fresh host page."""

    def go(path: str = "/", *, wait: bool = True, **page_kw) -> WidgetPage:
        url = double.page(path, **page_kw)
        return widget_page(url, wait=wait)

    return go
