"""Pytest fixtures around the fakes. Import them into a test module (or a conftest.py)::

    from tests.fakes.fixtures import fake_anthropic, fake_openai, fake_website  # noqa: F401

Each yields a started server (random port on 127.0.0.1) and closes it after the test.
"""
from __future__ import annotations

import pytest_asyncio

from tests.fakes.llm_servers import FakeAnthropicServer, FakeOpenAIServer
from tests.fakes.website import FakeWebsite


@pytest_asyncio.fixture
async def fake_website():
    """The Acme help site (see tests.fakes.website)."""
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
