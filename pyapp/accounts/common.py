"""What the account handlers share: the tenant-less auth transaction, token minting, mail."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal
from urllib.parse import quote

import asyncpg
from aiohttp import web

from pyapp.api import Call
from pyapp.context import REQUEST_ID, SETTINGS, client_ip
from pyapp.db import acquire
from pyapp.mailer import LogMailer, Mailer, mailer_for
from pyapp.passwords import Passwords
from pyapp.security import issue_access_token

log = logging.getLogger("parley.accounts")

PASSWORDS = web.AppKey("passwords", Passwords)
MAILER = web.AppKey("mailer", Mailer)
MAIL_TASKS: web.AppKey[set[asyncio.Task]] = web.AppKey("mail_tasks")

# Console pages the emailed links open (the console reads the token from the query string).
RESET_PATH = "/console/reset-password"
INVITE_PATH = "/console/accept-invite"
VERIFY_PATH = "/console/verify-email"

# What became of a message the sender waits for: sent, no SMTP configured (logged), or refused.
MailStatus = Literal["sent", "not_configured", "failed"]


@asynccontextmanager
async def auth_tx(call: Call, *, signed_in: bool = False) -> AsyncIterator[asyncpg.Connection]:
    """A transaction for the account steps that have no tenant yet.

    Its first statement is parley.begin_auth_request, which records ip and request id for the
    audit trail and, for a signed-in person, checks that the session is alive.
    """
    async with acquire(call.pool) as conn, conn.transaction():
        await conn.execute(
            "SELECT parley.begin_auth_request($1, $2, $3, $4)",
            client_ip(call.request),
            call.request.get(REQUEST_ID),
            call.user_id if signed_in else None,
            call.session_id if signed_in else None,
        )
        yield conn


def access_token(call: Call, session: dict) -> tuple[str, int]:
    """An access JWT for the session's user and workspace; `sid` is the refresh-token family."""
    settings = call.settings
    tenant = session.get("tenant")
    token, _ = issue_access_token(
        settings.secret_key,
        user_id=session["user"]["id"],
        tenant_id=tenant["id"] if tenant else None,
        session_id=session["session_id"],
        ttl=settings.access_token_ttl,
    )
    return token, settings.access_token_ttl


def passwords(call: Call) -> Passwords:
    return call.request.app[PASSWORDS]


def link(call: Call, path: str, token: str) -> str:
    return f"{call.settings.base_url}{path}?token={quote(token)}"


def send_later(call: Call, to: str, subject: str, body: str, link: str) -> None:
    """Send mail after the response: whether a message goes out must not show in response time."""
    app = call.request.app
    task = asyncio.create_task(_deliver(app[MAILER], to, subject, body, link))
    app[MAIL_TASKS].add(task)
    task.add_done_callback(app[MAIL_TASKS].discard)


async def send_now(call: Call, to: str, subject: str, body: str, link: str) -> MailStatus:
    """Send mail before answering, for a sender who must hear whether it went out (an admin's invite)."""
    mailer = call.request.app[MAILER]
    if isinstance(mailer, LogMailer):
        await mailer.send(to, subject, body, link=link)
        return "not_configured"
    return "sent" if await _deliver(mailer, to, subject, body, link) else "failed"


async def _deliver(mailer: Mailer, to: str, subject: str, body: str, link: str) -> bool:
    try:
        await mailer.send(to, subject, body, link=link)
    except Exception as exc:  # the body carries a token: log the failure, never the message
        log.error("sending %r failed: %s", subject, type(exc).__name__)
        return False
    return True


def setup(app: web.Application) -> None:
    settings = app[SETTINGS]
    app[PASSWORDS] = Passwords(fast=bool(settings.extra.get("argon2_fast")))
    app[MAILER] = mailer_for(settings)
    app[MAIL_TASKS] = set()

    async def warm_passwords(app: web.Application) -> None:
        await app[PASSWORDS].warm()

    async def flush_mail(app: web.Application) -> None:
        tasks = app[MAIL_TASKS]
        if tasks:
            await asyncio.wait(set(tasks), timeout=10)

    app.on_startup.append(warm_passwords)
    app.on_shutdown.append(flush_mail)
