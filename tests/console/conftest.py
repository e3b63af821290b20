"""Console fixtures: cookie-keeping HTTP clients, and chromium launched like tests/browser does.

The browser is module-scoped here (not session-scoped like tests/browser's): sync Playwright
keeps an event loop running in the main thread, which would break the async tests that run
after the browser tests in the same session.
"""
from __future__ import annotations

import pytest

from browser.conftest import CHROMIUM, CHROMIUM_ARGS
from console.console_helpers import ConsoleClient


@pytest.fixture
async def console_client(server):
    clients = []

    def make():
        client = ConsoleClient(server.base_url)
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()
