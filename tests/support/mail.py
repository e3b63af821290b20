"""A real SMTP server (aiosmtpd) on 127.0.0.1 and a Parley server that mails through it."""
from __future__ import annotations

import asyncio
import email
import re
import threading
from urllib.parse import unquote

import pytest
from aiosmtpd.controller import Controller

from support.server import free_port, start_server


class Inbox:
    """Messages an aiosmtpd server on 127.0.0.1 received."""

    def __init__(self):
        self.messages: list[email.message.Message] = []
        self.arrived = threading.Event()
        self.url = ""

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content))
        self.arrived.set()
        return "250 OK"

    def about(self, subject: str) -> list[email.message.Message]:
        """Messages whose subject contains `subject`, in arrival order."""
        return [m for m in self.messages if subject in m["Subject"]]

    async def wait(self, count: int = 1, timeout: float = 10, subject: str = "") -> list[email.message.Message]:
        """Wait until `count` messages (about `subject`, if given) arrived; returns them."""
        while len(self.about(subject)) < count:
            self.arrived.clear()
            if len(self.about(subject)) >= count:
                break
            assert await asyncio.to_thread(self.arrived.wait, timeout), "no email arrived"
        return self.about(subject)


def token_from(message) -> str:
    """The token of the action link in a message's body."""
    body = message.get_payload(decode=True).decode()
    match = re.search(r"\?token=(\S+)", body)
    assert match, body
    return unquote(match.group(1))


@pytest.fixture
def inbox():
    box = Inbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    box.url = f"smtp://127.0.0.1:{controller.port}?from=Parley%20%3Cno-reply%40parley.test%3E"
    yield box
    controller.stop()


@pytest.fixture
async def mail_server(settings, inbox):
    settings.extra["smtp_url"] = inbox.url
    srv = await start_server(settings)
    yield srv
    await srv.close()
