"""Outgoing email behind one small interface: SMTP when PARLEY_SMTP_URL is set, a log line otherwise.

Without SMTP (a fresh install) the LogMailer writes each message's subject, recipient and action
link (reset, invite, verification) to the server log at WARNING, one line on logger
`parley.mailer`, so an operator can pass the link on. That line is the only place a link or token
is ever logged; with SMTP configured nothing of the message reaches the log. Production should
configure SMTP (docs/operations.md).

URL forms: smtp://[user:password@]host[:port] (STARTTLS when the server offers it and
`?starttls=1`), smtps://… for implicit TLS; `?from=Name <addr>` sets the sender
(default PARLEY_MAIL_FROM or no-reply@<host of the public URL>). smtplib runs in a worker
thread so a slow mail server never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import smtplib
import ssl
from email.message import EmailMessage
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger("parley.mailer")


class Mailer(Protocol):
    async def send(self, to: str, subject: str, body: str, *, link: str | None = None) -> None:
        """Send one message; `link` is the action link inside `body` (reset, invite, verification), if any."""
        ...


class LogMailer:
    """No mail server configured: log the message's subject, recipient and action link, never its body."""

    async def send(self, to: str, subject: str, body: str, *, link: str | None = None) -> None:
        log.warning("mail not sent (PARLEY_SMTP_URL unset): %r to %s; action link: %s", subject, to, link or "(none)")


class SmtpMailer:
    def __init__(self, url: str, default_from: str, timeout: float = 15.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise ValueError("PARLEY_SMTP_URL must start with smtp:// or smtps://")
        query = parse_qs(parts.query)
        self.host = parts.hostname or "127.0.0.1"
        self.implicit_tls = parts.scheme == "smtps"
        self.port = parts.port or (465 if self.implicit_tls else 25)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.starttls = query.get("starttls", ["0"])[0] in ("1", "true", "yes")
        self.sender = query.get("from", [default_from])[0]
        self.timeout = timeout

    async def send(self, to: str, subject: str, body: str, *, link: str | None = None) -> None:
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = to
        msg["Subject"] = subject
        msg.set_content(body)
        await asyncio.to_thread(self._send, msg)

    def _send(self, msg: EmailMessage) -> None:
        context = ssl.create_default_context()
        if self.implicit_tls:
            client: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        else:
            client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        with client:
            if self.starttls:
                client.starttls(context=context)
            if self.username:
                client.login(self.username, self.password or "")
            client.send_message(msg)


def mailer_for(settings) -> Mailer:
    """The mailer the settings ask for (Settings.extra["smtp_url"] overrides PARLEY_SMTP_URL)."""
    url = settings.extra.get("smtp_url") or os.environ.get("PARLEY_SMTP_URL")
    if not url:
        return LogMailer()
    host = urlsplit(settings.base_url).hostname or "localhost"
    return SmtpMailer(url, os.environ.get("PARLEY_MAIL_FROM") or f"Parley <no-reply@{host}>")
