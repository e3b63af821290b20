"""Alert adapters: e-mail (SMTP through pyapp.mailer) and Slack incoming webhooks.

Like every adapter they know nothing about tenants or the database: the drainer hands them the
destination (for Slack its sealed URL, opened, as the one secret) and the delivery.
"""

from __future__ import annotations

import smtplib
import time

import aiohttp

from pyapp.channels.alert_text import alert_text
from pyapp.mailer import LogMailer, Mailer
from pyapp.net import FetchRefused, guarded_session
from pyapp.outbox.senders import Delivery, Destination, Result, elapsed_ms, http_result


class EmailSender:
    def __init__(self, mailer: Mailer, console_url: str = ""):
        self.mailer = mailer
        self.console_url = console_url

    async def send(self, destination: Destination, delivery: Delivery) -> Result:
        if isinstance(self.mailer, LogMailer):
            return Result("failed", error="No mail server is configured (PARLEY_SMTP_URL).")
        to = delivery.payload.get("to") or [destination.target]
        subject, body = alert_text(delivery.payload, self.console_url)
        started = time.monotonic()
        request = {"to_domains": sorted({str(a).rsplit("@", 1)[-1] for a in to}), "subject": subject}
        try:
            for address in to:
                await self.mailer.send(str(address), subject, body)
        except smtplib.SMTPResponseException as exc:
            return Result(
                "retry" if exc.smtp_code < 500 else "failed",
                status_code=exc.smtp_code,
                latency_ms=elapsed_ms(started),
                request=request,
                error=f"SMTP {exc.smtp_code}",
            )
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            return Result("retry", latency_ms=elapsed_ms(started), request=request, error=f"SMTP: {type(exc).__name__}")
        return Result("delivered", latency_ms=elapsed_ms(started), request=request)

    async def close(self) -> None:
        return None


class SlackSender:
    """POST {"text": ...} to the channel's incoming-webhook URL (its secret: never logged or stored plain)."""

    def __init__(self, *, allow_hosts=None, timeout: float = 15.0, console_url: str = ""):
        self.allow_hosts = allow_hosts
        self.timeout = timeout
        self.console_url = console_url
        self._session: aiohttp.ClientSession | None = None

    async def send(self, destination: Destination, delivery: Delivery) -> Result:
        if not destination.secrets:
            return Result("retry", error="The Slack webhook URL cannot be opened (key-encryption key missing?).")
        subject, body = alert_text(delivery.payload, self.console_url)
        if self._session is None or self._session.closed:
            self._session = guarded_session(
                allow_hosts=self.allow_hosts, timeout=aiohttp.ClientTimeout(total=self.timeout)
            )
        started = time.monotonic()
        request = {"url": destination.target, "text_chars": len(body)}
        try:
            async with self._session.post(
                destination.secrets[0], json={"text": f"*{subject}*\n{body}"}, allow_redirects=False
            ) as resp:
                text = (await resp.content.read(2000)).decode("utf-8", "replace")
                status = resp.status
        except FetchRefused as exc:
            return Result(
                "failed",
                latency_ms=elapsed_ms(started),
                request=request,
                error="refused: address not allowed",
                pause_reason=f"The Slack URL is not allowed: {exc.code}",
            )
        except TimeoutError:
            return Result("retry", latency_ms=elapsed_ms(started), request=request, error="no answer in time")
        except (aiohttp.ClientError, OSError) as exc:
            return Result("retry", latency_ms=elapsed_ms(started), request=request, error=type(exc).__name__)
        return http_result(status, started, request, response=text)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
