"""Signing out ends the session even while another tab refreshes it.

parley.end_session revoked the session's refresh tokens without locking the person first. A refresh
in flight (rotate_session: the person FOR SHARE, the old token used, its successor inserted) made a
token the sign-out's UPDATE could not see, so the session went on after the sign-out answered 204:
11 rounds in 30 from two processes (bench/races.py logout_vs_refresh). Now the sign-out locks the
person first, like rotate_session and a password change: it waits for the refresh and ends the new
token too."""
from __future__ import annotations

import asyncio
import hashlib

import pytest
from support.waits import blocked_on_lock


@pytest.mark.parametrize("everywhere", [False, True])
async def test_sign_out_while_the_session_refreshes(rows, owner_conn, connect, everywhere):
    person = await rows.tenant()
    old_hash = await owner_conn.fetchval("SELECT token_hash FROM parley.refresh_tokens WHERE family_id = $1",
                                         person.session_id)
    refresh, sign_out = await connect(), await connect()
    await refresh.execute("BEGIN")
    await refresh.execute("SELECT parley.begin_auth_request(NULL, NULL, NULL, NULL)")
    rotated = await refresh.fetchval("SELECT parley.rotate_session($1, $2, 3600)", old_hash,
                                     hashlib.sha256(b"the successor").digest())
    assert rotated["status"] == "ok"  # the successor exists, not yet committed

    await sign_out.execute("BEGIN")
    await sign_out.execute("SELECT parley.begin_auth_request(NULL, NULL, $1, $2)", person.user_id,
                           person.session_id)
    ending = asyncio.create_task(sign_out.fetchval("SELECT parley.end_session($1)", everywhere))
    await blocked_on_lock(owner_conn, sign_out.get_server_pid())
    await refresh.execute("COMMIT")
    await ending
    await sign_out.execute("COMMIT")

    live = await owner_conn.fetch("SELECT token_hash FROM parley.refresh_tokens WHERE family_id = $1"
                                  " AND revoked_at IS NULL", person.session_id)
    assert live == []
