"""Console fixtures: cookie-keeping HTTP clients and one chromium per module."""
from __future__ import annotations

import pytest

from console.console_helpers import CHROMIUM_ARGS, ConsoleClient


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
        b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


