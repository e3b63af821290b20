"""An SMTP server on 127.0.0.1 (aiosmtpd) that keeps what it receives, for alert and notice tests."""
from __future__ import annotations

import asyncio
from email import message_from_bytes, policy

from aiosmtpd.controller import Controller


class SmtpSink:
    def __init__(self):
        self.messages = []
        self._loop = asyncio.get_running_loop()
        self._arrived = asyncio.Condition()
        from support.server import free_port

        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd handler hook (its thread)
        msg = message_from_bytes(envelope.content, policy=policy.default)
        asyncio.run_coroutine_threadsafe(self._add(envelope.rcpt_tos, msg), self._loop)
        return "250 OK"

    async def _add(self, rcpt, msg):
        async with self._arrived:
            self.messages.append((list(rcpt), msg))
            self._arrived.notify_all()

    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?from=Parley%20%3Cparley@example.test%3E"

    async def wait_for(self, n: int, timeout: float = 20):
        async with asyncio.timeout(timeout):
            async with self._arrived:
                await self._arrived.wait_for(lambda: len(self.messages) >= n)
        return self.messages

    def stop(self):
        self.controller.stop()
