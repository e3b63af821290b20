"""Sign-in abuse limits (backoff per email and address, per-address throttle) and the password-reset flow by email."""
from __future__ import annotations

import asyncio
import email
import logging
import re
import threading
import uuid
from urllib.parse import unquote

import pytest
from aiosmtpd.controller import Controller
from support.server import free_port, start_server

from pyapp.accounts.common import MAIL_TASKS
from pyapp.security import sha256


def _email() -> str:
    return f"p-{uuid.uuid4().hex[:10]}@example.test"


async def _login(server, email_, password, headers=None):
    return await server.call("POST", "/api/auth/login", json={"email": email_, "password": password}, headers=headers)


async def test_backoff_after_five_failures(server, signup, owner_conn):
    """Failures slow down that email from that address (no account lock: tests/hardening/test_sessions.py)."""
    user = await signup(server)
    # A success in between resets the count.
    for _ in range(3):
        assert (await _login(server, user["email"], "wrong password"))[0] == 401
    assert (await _login(server, user["email"], user["password"]))[0] == 200
    for _ in range(5):
        status, body = await _login(server, user["email"], "wrong password")
        assert (status, body["error"]["code"]) == (401, "invalid_credentials")
    status, body = await _login(server, user["email"].upper(), user["password"])
    assert (status, body["error"]["code"]) == (429, "too_many_attempts")
    failures = await owner_conn.fetch(
        "SELECT details->>'reason' AS reason FROM parley.audit_log WHERE action = 'auth.sign_in_failed' "
        "AND actor_id = $1 ORDER BY id", user["user_id"])
    assert [f["reason"] for f in failures] == ["invalid"] * 8
    # The backoff runs out: the right password works again and the count starts over.
    await owner_conn.execute("UPDATE parley.sign_in_failures SET blocked_until = now() - interval '1 second'")
    status, _ = await _login(server, user["email"], user["password"])
    assert status == 200
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.sign_in_failures") == 0


@pytest.fixture
async def proxied_server(settings):
    """A server behind a (trusted) proxy, so tests can speak from several client addresses."""
    settings.extra["trust_proxy"] = True
    srv = await start_server(settings)
    yield srv
    await srv.close()


async def test_ip_throttle(proxied_server, signup, owner_conn):
    server = proxied_server
    user = await signup(server)
    here, there = {"X-Forwarded-For": "203.0.113.5"}, {"X-Forwarded-For": "198.51.100.7"}
    for _ in range(20):
        status, body = await _login(server, _email(), "guess guess", headers=here)
        assert status == 401, body
    status, body = await _login(server, _email(), "guess guess", headers=here)
    assert (status, body["error"]["code"]) == (429, "too_many_attempts")
    status, body = await _login(server, user["email"], user["password"], headers=here)
    assert (status, body["error"]["code"]) == (429, "too_many_attempts")
    status, body = await server.call("POST", "/api/auth/forgot", json={"email": user["email"]}, headers=here)
    assert status == 429
    # What the client itself puts in front of the proxy's entry does not change its address.
    spoofed = {"X-Forwarded-For": f"192.0.2.{uuid.uuid4().int % 250}, 203.0.113.5"}
    status, body = await _login(server, user["email"], user["password"], headers=spoofed)
    assert (status, body["error"]["code"]) == (429, "too_many_attempts")
    # Another address is not affected.
    status, body = await _login(server, user["email"], user["password"], headers=there)
    assert status == 200, body
    attempts = await owner_conn.fetchval(
        "SELECT sum(attempts) FROM parley.login_throttle WHERE ip = '203.0.113.5'::inet")
    assert attempts == 20


class Inbox:
    """Messages an aiosmtpd server on 127.0.0.1 received."""

    def __init__(self):
        self.messages: list[email.message.Message] = []
        self.arrived = threading.Event()

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content))
        self.arrived.set()
        return "250 OK"

    async def wait(self, count: int = 1, timeout: float = 10) -> None:
        while len(self.messages) < count:
            self.arrived.clear()
            if len(self.messages) >= count:
                break
            assert await asyncio.to_thread(self.arrived.wait, timeout), "no email arrived"


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


def _token_from(message) -> str:
    body = message.get_payload(decode=True).decode()
    match = re.search(r"\?token=(\S+)", body)
    assert match, body
    return unquote(match.group(1))


async def test_forgot_and_reset_by_email(mail_server, inbox, signup, owner_conn):
    server = mail_server
    user = await signup(server)
    unknown = await server.call("POST", "/api/auth/forgot", json={"email": _email()})
    known = await server.call("POST", "/api/auth/forgot", json={"email": user["email"].upper()})
    assert unknown == known == (202, {"status": "accepted"})
    await inbox.wait(1)
    assert len(inbox.messages) == 1  # nothing for the unknown address (its request came first)
    message = inbox.messages[0]
    assert message["To"] == user["email"] and "Reset" in message["Subject"]
    assert message["From"] == "Parley <no-reply@parley.test>"
    token = _token_from(message)
    assert "/console/reset-password?token=" in message.get_payload(decode=True).decode()

    status, _ = await server.call("POST", "/api/auth/reset", json={"token": token, "password": "a brand new secret"})
    assert status == 204
    status, body = await server.call("GET", "/api/members", token=user["access_token"])
    assert (status, body["error"]["code"]) == (401, "session_revoked")
    status, _ = await server.call("POST", "/api/auth/refresh", json={"refresh_token": user["refresh_token"]})
    assert status == 401
    assert (await _login(server, user["email"], user["password"]))[0] == 401
    assert (await _login(server, user["email"], "a brand new secret"))[0] == 200
    status, body = await server.call("POST", "/api/auth/reset", json={"token": token, "password": "yet another one"})
    assert (status, body["error"]["code"]) == (400, "invalid_reset_token")
    actions = await owner_conn.fetch("SELECT action FROM parley.audit_log WHERE actor_id = $1 ORDER BY id",
                                     user["user_id"])
    names = [a["action"] for a in actions]
    assert "auth.password_reset_requested" in names and "auth.password_reset" in names


async def test_reset_token_expires_and_old_links_die(mail_server, inbox, signup, owner_conn):
    server = mail_server
    user = await signup(server)
    for _ in range(2):
        await server.call("POST", "/api/auth/forgot", json={"email": user["email"]})
    await inbox.wait(2)
    first, second = (_token_from(m) for m in inbox.messages)  # in arrival order, whichever was made first
    await owner_conn.execute("UPDATE parley.password_resets SET expires_at = now() - interval '1 second' "
                             "WHERE token_hash = $1", sha256(first))
    status, body = await server.call("POST", "/api/auth/reset", json={"token": first, "password": "long enough 1"})
    assert (status, body["error"]["code"]) == (400, "invalid_reset_token")
    status, _ = await server.call("POST", "/api/auth/reset", json={"token": second, "password": "long enough 2"})
    assert status == 204
    status, body = await server.call("POST", "/api/auth/reset", json={"token": "made-up", "password": "long enough 3"})
    assert status == 400


async def test_without_mailer_the_log_says_so_without_the_token(server, signup, caplog):
    user = await signup(server)
    with caplog.at_level(logging.INFO):
        status, _ = await server.call("POST", "/api/auth/forgot", json={"email": user["email"]})
        assert status == 202
        pending = set(server.app[MAIL_TASKS])  # mail goes out after the response, on this loop
        if pending:
            await asyncio.wait(pending)
    messages = [r.getMessage() for r in caplog.records]
    assert any("no mailer configured" in m for m in messages)
    assert not any("token" in m.lower() or user["email"] in m for m in messages)
