"""Sign-in abuse limits (backoff per email and address, per-address throttle) and the password-reset flow by email."""
from __future__ import annotations

import asyncio
import logging
import uuid
from urllib.parse import quote, unquote

import pytest
from pyapp.accounts.common import MAIL_TASKS
from pyapp.security import sha256
from support.mail import token_from
from support.server import start_server


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


async def test_forgot_and_reset_by_email(mail_server, inbox, signup, owner_conn):
    server = mail_server
    user = await signup(server)
    unknown = await server.call("POST", "/api/auth/forgot", json={"email": _email()})
    known = await server.call("POST", "/api/auth/forgot", json={"email": user["email"].upper()})
    assert unknown == known == (202, {"status": "accepted"})
    resets = await inbox.wait(1, subject="Reset")
    assert len(resets) == 1  # nothing for the unknown address (its request came first)
    message = resets[0]
    assert message["To"] == user["email"] and "Reset" in message["Subject"]
    assert message["From"] == "Parley <no-reply@parley.test>"
    token = token_from(message)
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
    first, second = (token_from(m) for m in await inbox.wait(2, subject="Reset"))  # in arrival order, whichever was made first
    await owner_conn.execute("UPDATE parley.password_resets SET expires_at = now() - interval '1 second' "
                             "WHERE token_hash = $1", sha256(first))
    status, body = await server.call("POST", "/api/auth/reset", json={"token": first, "password": "long enough 1"})
    assert (status, body["error"]["code"]) == (400, "invalid_reset_token")
    status, _ = await server.call("POST", "/api/auth/reset", json={"token": second, "password": "long enough 2"})
    assert status == 204
    status, body = await server.call("POST", "/api/auth/reset", json={"token": "made-up", "password": "long enough 3"})
    assert status == 400


async def _mail_flushed(server) -> None:
    pending = set(server.app[MAIL_TASKS])  # mail goes out after the response, on this loop
    if pending:
        await asyncio.wait(pending)


async def test_without_mailer_the_log_carries_the_link_and_nothing_else_does(server, signup, caplog):
    """No SMTP: the reset link is in one WARNING line of parley.mailer (so a fresh install can
    recover an account), and in no other log record; the request itself logs no token."""
    user = await signup(server)
    with caplog.at_level(logging.DEBUG):
        status, _ = await server.call("POST", "/api/auth/forgot", json={"email": user["email"]})
        assert status == 202
        await _mail_flushed(server)
    lines = [r for r in caplog.records if "Reset" in r.getMessage()]
    assert len(lines) == 1
    line = lines[0]
    assert (line.name, line.levelno) == ("parley.mailer", logging.WARNING)
    assert user["email"] in line.getMessage() and "/console/reset-password?token=" in line.getMessage()
    token = line.getMessage().split("?token=", 1)[1].split()[0]
    # The logged link is a working one...
    with caplog.at_level(logging.DEBUG):
        status, _ = await server.call("POST", "/api/auth/reset", json={"token": unquote(token),
                                                                      "password": "from the log 123"})
        assert status == 204
        # ...and a bad token in a request is not logged either (error logs).
        status, _ = await server.call("POST", "/api/auth/reset", json={"token": "forged-token-abc",
                                                                      "password": "from the log 123"})
        assert status == 400
    others = [r for r in caplog.records if r is not line]
    for record in others:
        text = record.getMessage() + str(record.args or "")
        assert unquote(token) not in text and token not in text and "forged-token-abc" not in text, record


async def test_with_smtp_no_token_reaches_any_log(mail_server, inbox, signup, caplog):
    server = mail_server
    user = await signup(server)
    with caplog.at_level(logging.DEBUG):
        status, _ = await server.call("POST", "/api/auth/forgot", json={"email": user["email"]})
        assert status == 202
        message = (await inbox.wait(1, subject="Reset"))[0]
        await _mail_flushed(server)
    token = token_from(message)
    for record in caplog.records:
        if record.name == "mail.log":
            continue  # the test's own SMTP server (aiosmtpd) logging what it received
        text = record.getMessage()
        assert token not in text and quote(token) not in text and "?token=" not in text, record
