"""Channel tests: an SMTP sink (`support.fakes.smtp`), a webhook sink standing in for Slack, the fake
Telegram Bot API with two bots, workspaces signed up through the API."""
import pytest
from pyapp.context import SETTINGS
from pyapp.db import create_pool
from support.fakes.smtp import SmtpSink
from support.fakes.telegram import OTHER_TOKEN, TOKEN, FakeTelegram
from support.outbox import make_workspace, sink  # noqa: F401 (fixtures)


@pytest.fixture
async def smtp():
    s = SmtpSink().start()
    yield s
    s.stop()


@pytest.fixture
async def tg(monkeypatch):
    fake = await FakeTelegram().start()
    fake.add_bot(TOKEN, 123456789, "parley_support_bot")
    fake.add_bot(OTHER_TOKEN, 987654321, "other_bot")
    monkeypatch.setenv("PARLEY_TELEGRAM_API", fake.url)
    yield fake
    await fake.close()


@pytest.fixture
def public_url(monkeypatch, server):
    """The server has a public URL: connecting a bot sets its webhook (and Telegram learns the secret token)."""
    monkeypatch.setattr(server.app[SETTINGS], "public_url", "https://parley.example")


@pytest.fixture
async def jobs_pool(settings):
    """A pool as the jobs process (parley_jobs), for a drainer the test runs."""
    pool = await create_pool(settings.jobs_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
async def ws(server, signup, settings, owner_conn):
    w = await make_workspace(server, signup, settings, owner_conn)
    yield w
    await w.close()


@pytest.fixture
async def ws2(server, signup, settings, owner_conn):
    w = await make_workspace(server, signup, settings, owner_conn)
    yield w
    await w.close()
