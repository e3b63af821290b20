"""Alert channel tests: an SMTP sink (`support.fakes.smtp`), a webhook sink standing in for Slack."""
import pytest
from support.fakes.smtp import SmtpSink
from support.outbox import sink  # noqa: F401 (fixtures)


@pytest.fixture
async def smtp():
    s = SmtpSink().start()
    yield s
    s.stop()
