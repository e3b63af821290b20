"""Pytest fixtures around the fakes (a plugin of tests/conftest.py: every test can ask for them).

Each yields a started server (random port on 127.0.0.1) and closes it after the test; the
protocol double (widget tests) lives for the session and is reset per test.
"""
from __future__ import annotations

import pytest
import pytest_asyncio

from support.fakes.llm_servers import FakeAnthropicServer, FakeOpenAIServer
from support.fakes.website import FakeWebsite


@pytest_asyncio.fixture
async def fake_website():
    """The Acme help site (see support.fakes.website)."""
    async with FakeWebsite() as site:
        yield site


@pytest_asyncio.fixture
async def fake_openai():
    """OpenAI-compatible chat + embeddings fake, API key ``test-key``."""
    async with FakeOpenAIServer(api_key="test-key") as server:
        yield server


@pytest_asyncio.fixture
async def fake_anthropic():
    """Anthropic Messages fake, API key ``test-key``."""
    async with FakeAnthropicServer(api_key="test-key") as server:
        yield server


@pytest.fixture(scope="session")
def double_server(widget_build, pg_server, database_stock):
    from support.database import admin_url
    from support.fakes.protocol_double import ProtocolDouble, widget_actions

    # Read from a copy, never the template: copies of it are made meanwhile (support.database).
    dbname = database_stock.take()
    try:
        actions = widget_actions(admin_url(pg_server, dbname))
    finally:
        database_stock.give_back(dbname)
    d = ProtocolDouble(actions).start()
    yield d
    d.stop()


@pytest.fixture
def double(double_server):
    """The protocol double (a stand-in Parley server for the widget), reset to its defaults."""
    double_server.reset()
    return double_server


@pytest.fixture
def visit(double, widget_page):
    """visit(path="/", head=..., body=..., script_attrs=...) -> WidgetPage on a fresh host page."""

    def go(path: str = "/", *, wait: bool = True, **page_kw):
        url = double.page(path, **page_kw)
        return widget_page(url, wait=wait)

    return go
