"""A person's users row is locked before their e-mailed links (parley.use_emailed_link) and their
refresh tokens (parley.rotate_session), sql/22_sessions.sql. Using a link used to lock the link
first and the person second, while requesting a link or changing the password lock the person and
then write the links, so two at once for one person deadlocked; so did a refresh and a password
change. Each test lines the two up in the order that deadlocked (a third session holds the link or
token, the path using it queues first, the other path second, then it is let go) and shows both
finish, one after the other."""
from __future__ import annotations

import asyncio
import hashlib
import uuid

import asyncpg
from support.waits import blocked_on_lock


def sha256(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


async def _in_tx(conn: asyncpg.Connection, *statements: tuple[str, tuple]):
    """Run the statements in one transaction on `conn`; the last one's value."""
    async with conn.transaction():
        for sql, args in statements:
            value = await conn.fetchval(sql, *args)
    return value


async def _race(settings, owner_conn, connect, links: str, token: bytes, first, second):
    """With `token`'s link of table `links` held by another session: `first` (using the link) starts
    and waits, then `second` starts and waits, then the link is let go; both results."""
    holder = await connect(settings.admin_url)
    await holder.execute("BEGIN")
    assert len(await holder.fetch(f"SELECT 1 FROM {links} WHERE token_hash = $1 FOR UPDATE", sha256(token))) == 1
    first_conn, second_conn = await connect(), await connect()
    first_task = asyncio.create_task(first(first_conn))
    await blocked_on_lock(owner_conn, first_conn.get_server_pid())
    second_task = asyncio.create_task(second(second_conn))
    await blocked_on_lock(owner_conn, second_conn.get_server_pid())
    await holder.execute("COMMIT")
    return await asyncio.gather(first_task, second_task)


async def test_using_an_email_change_link_while_asking_for_another(settings, owner_conn, rows, connect):
    person = await rows.tenant()
    new, newer = (f"{name}-{uuid.uuid4().hex[:8]}@example.test" for name in ("new", "newer"))
    signed_in = ("SELECT parley.begin_auth_request('127.0.0.1', 'r', $1, $2)", (person.user_id, person.session_id))
    anonymous = ("SELECT parley.begin_auth_request(NULL, NULL, NULL, NULL)", ())
    await _in_tx(await connect(), signed_in,
                 ("SELECT parley.request_email_verification($1, $2)", (sha256(b"change-link"), new)))
    # Sent two minutes ago: a second request is not refused as too soon.
    await owner_conn.execute("UPDATE parley.email_verifications SET created_at = now() - interval '2 minutes'"
                             " WHERE user_id = $1", person.user_id)

    clicked, requested = await _race(
        settings, owner_conn, connect, "parley.email_verifications", b"change-link",
        lambda conn: _in_tx(conn, anonymous, ("SELECT parley.verify_email($1)", (sha256(b"change-link"),))),
        lambda conn: _in_tx(conn, signed_in,
                            ("SELECT parley.request_email_verification($1, $2)", (sha256(b"newer-link"), newer))))

    assert clicked["email"] == new  # the link queued first went first
    assert (requested["email"], requested["change"]) == (newer, True)
    assert await owner_conn.fetchval("SELECT email FROM parley.users WHERE id = $1", person.user_id) == new
    assert await owner_conn.fetch(
        "SELECT email FROM parley.email_verifications WHERE user_id = $1 AND used_at IS NULL",
        person.user_id) == [(newer,)]


async def test_resetting_the_password_while_changing_it(settings, owner_conn, rows, connect):
    person = await rows.tenant()  # its password hash is 'not-a-hash'
    anonymous = ("SELECT parley.begin_auth_request(NULL, NULL, NULL, NULL)", ())
    await _in_tx(await connect(), anonymous,
                 ("SELECT parley.request_password_reset($1, $2)", (person.email, sha256(b"reset-link"))))

    reset, changed = await _race(
        settings, owner_conn, connect, "parley.password_resets", b"reset-link",
        lambda conn: _in_tx(conn, anonymous, ("SELECT parley.reset_password($1, 'reset-hash')", (sha256(b"reset-link"),))),
        lambda conn: _in_tx(conn, ("SELECT parley.begin_auth_request('127.0.0.1', 'r', $1, $2)",
                                   (person.user_id, person.session_id)),
                            ("SELECT parley.change_password('not-a-hash', true, 'changed-hash')", ())))

    assert reset == person.user_id
    # The reset went first: the password the change had verified is no longer the account's.
    assert changed["status"] == "invalid"
    assert await owner_conn.fetchval("SELECT password_hash FROM parley.users WHERE id = $1", person.user_id) == "reset-hash"


async def test_changing_the_password_while_another_session_refreshes(settings, owner_conn, rows, connect):
    """Not a link, the same kind of pair: a refresh locked its token and then inserted the next one
    (its foreign key takes KEY SHARE on the person), while a password change locks the person and
    then ends the other sessions (their tokens): they deadlocked. A refresh now locks the person
    first (FOR SHARE), so the change waits for it and ends the token it made too."""
    person = await rows.tenant()  # its password hash is 'not-a-hash'
    other = await owner_conn.fetchval("SELECT (parley.open_session($1, $2, 3600) ->> 'session_id')::uuid",
                                      person.user_id, sha256(b"other-refresh"))

    refreshed, changed = await _race(
        settings, owner_conn, connect, "parley.refresh_tokens", b"other-refresh",
        lambda conn: _in_tx(conn, ("SELECT parley.begin_auth_request(NULL, NULL, NULL, NULL)", ()),
                            ("SELECT parley.rotate_session($1, $2, 3600)",
                             (sha256(b"other-refresh"), sha256(b"other-refresh-2")))),
        lambda conn: _in_tx(conn, ("SELECT parley.begin_auth_request('127.0.0.1', 'r', $1, $2)",
                                   (person.user_id, person.session_id)),
                            ("SELECT parley.change_password('not-a-hash', true, 'changed-hash')", ())))

    assert refreshed["session_id"] == str(other)  # the refresh queued first went first...
    assert (changed["status"], changed["sessions_ended"]) == ("ok", 1)  # ...and its session ended after
    assert await owner_conn.fetchval(
        "SELECT revoked_at IS NOT NULL FROM parley.refresh_tokens WHERE token_hash = $1", sha256(b"other-refresh-2"))
