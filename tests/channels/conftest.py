"""Channel tests: an SMTP sink (`support.fakes.smtp`), a webhook sink standing in for Slack, the fake
Telegram Bot API with two bots, workspaces signed up through the API."""
import pytest
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
async def ws(server, signup, settings, owner_conn):
    w = await make_workspace(server, signup, settings, owner_conn)
    yield w
    await w.close()


@pytest.fixture
async def ws2(server, signup, settings, owner_conn):
    w = await make_workspace(server, signup, settings, owner_conn)
    yield w
    await w.close()
