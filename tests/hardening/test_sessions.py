"""Findings 5 and 7: sign-in throttling that cannot be turned against an account, and parallel refreshes."""
from __future__ import annotations

import asyncio
import uuid

import pytest
from support.server import start_server


async def test_parallel_refreshes_share_one_new_pair(server, signup, owner_conn):
    user = await signup(server)
    old = user["refresh_token"]
    results = await asyncio.gather(*[server.call("POST", "/api/auth/refresh", json={"refresh_token": old})
                                     for _ in range(5)])
    assert [s for s, _ in results] == [200] * 5, results
    assert len({b["refresh_token"] for _, b in results}) == 1  # the same new refresh token for all five
    new = results[0][1]
    for _, body in results:
        status, _ = await server.call("GET", "/api/me", token=body["access_token"])
        assert status == 200
    # The new token rotates normally.
    status, newer = await server.call("POST", "/api/auth/refresh", json={"refresh_token": new["refresh_token"]})
    assert status == 200
    # Once the successor has been used, the old token coming back is reuse, grace window or not.
    status, body = await server.call("POST", "/api/auth/refresh", json={"refresh_token": old})
    assert (status, body["error"]["code"]) == (401, "refresh_reused")
    status, body = await server.call("GET", "/api/me", token=newer["access_token"])
    assert (status, body["error"]["code"]) == (401, "session_revoked")


async def test_reuse_after_the_grace_window_still_revokes(server, signup, owner_conn):
    user = await signup(server)
    old = user["refresh_token"]
    status, first = await server.call("POST", "/api/auth/refresh", json={"refresh_token": old})
    assert status == 200
    status, again = await server.call("POST", "/api/auth/refresh", json={"refresh_token": old})
    assert status == 200 and again["refresh_token"] == first["refresh_token"]  # inside the window
    # Move the rotation out of the window (instead of waiting for it).
    await owner_conn.execute("UPDATE parley.refresh_tokens SET used_at = used_at - interval '1 minute'"
                             " WHERE user_id = $1 AND used_at IS NOT NULL", uuid.UUID(user["user_id"]))
    status, body = await server.call("POST", "/api/auth/refresh", json={"refresh_token": old})
    assert (status, body["error"]["code"]) == (401, "refresh_reused")
    status, body = await server.call("POST", "/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert status == 401
    status, body = await server.call("GET", "/api/me", token=first["access_token"])
    assert (status, body["error"]["code"]) == (401, "session_revoked")


@pytest.fixture
async def proxied(settings):
    """A server behind a trusted proxy: tests speak from several client addresses."""
    settings.extra["trust_proxy"] = True
    srv = await start_server(settings)
    yield srv
    await srv.close()


async def _login(server, email, password, ip):
    return await server.call("POST", "/api/auth/login", json={"email": email, "password": password},
                             headers={"X-Forwarded-For": ip})


async def _unblock(owner_conn):
    """Let the current backoff run out (instead of waiting for it)."""
    await owner_conn.execute("UPDATE parley.sign_in_failures SET blocked_until = now() - interval '1 second'")


async def test_failures_elsewhere_never_lock_the_owner_out(proxied, signup, owner_conn):
    user = await signup(proxied)
    attacker, owner_ip = "203.0.113.66", "198.51.100.20"
    statuses = [(await _login(proxied, user["email"], f"guess {i}", attacker))[0] for i in range(6)]
    assert statuses == [401] * 5 + [429]
    # The right password from the attacker's address is refused too while in backoff ...
    status, body = await _login(proxied, user["email"], user["password"], attacker)
    assert (status, body["error"]["code"]) == (429, "too_many_attempts")
    # ... but the account is not locked: its owner signs in from their own address.
    status, _ = await _login(proxied, user["email"].upper(), user["password"], owner_ip)
    assert status == 200
    # The backoff grows: after it runs out, one more failure blocks again, for longer.
    await _unblock(owner_conn)
    assert (await _login(proxied, user["email"], "guess 7", attacker))[0] == 401
    first = await owner_conn.fetchval("SELECT extract(epoch FROM blocked_until - last_failed_at) FROM "
                                      "parley.sign_in_failures")
    assert (await _login(proxied, user["email"], "guess 8", attacker))[0] == 429
    await _unblock(owner_conn)
    assert (await _login(proxied, user["email"], "guess 9", attacker))[0] == 401
    second = await owner_conn.fetchval("SELECT extract(epoch FROM blocked_until - last_failed_at) FROM "
                                       "parley.sign_in_failures")
    assert second == 2 * first
    # Nothing account-wide was set.
    assert await owner_conn.fetchval("SELECT locked_until FROM parley.users WHERE id = $1",
                                     uuid.UUID(user["user_id"])) is None
    # A success from that address clears its backoff.
    await _unblock(owner_conn)
    assert (await _login(proxied, user["email"], user["password"], attacker))[0] == 200
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.sign_in_failures") == 0


async def test_unknown_and_known_emails_answer_alike(proxied, signup, owner_conn):
    user = await signup(proxied)
    unknown = f"nobody-{uuid.uuid4().hex[:8]}@example.test"
    known_answers, unknown_answers = [], []
    for i in range(7):
        known_answers.append(await _login(proxied, user["email"], f"guess {i}", "203.0.113.10"))
        unknown_answers.append(await _login(proxied, unknown, f"guess {i}", "203.0.113.11"))
    assert known_answers == unknown_answers
    assert [s for s, _ in known_answers] == [401] * 5 + [429] * 2
    # IPv6: one client holds a whole /64, so the backoff covers it.
    for i in range(5):
        await _login(proxied, unknown, "x", f"2001:db8:1:2::{i + 1}")
    status, body = await _login(proxied, unknown, "x", "2001:db8:1:2:ffff::9")
    assert (status, body["error"]["code"]) == (429, "too_many_attempts")
    status, _ = await _login(proxied, unknown, "x", "2001:db8:1:3::1")
    assert status == 401
