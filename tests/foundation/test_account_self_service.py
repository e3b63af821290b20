"""The signed-in person's own account: e-mail verification and change, profile, change password,
leaving a workspace, deleting the account, and the sole-owner rule under all of them."""
from __future__ import annotations

import uuid

import asyncpg
import pytest
from support.mail import token_from


def _email() -> str:
    return f"p-{uuid.uuid4().hex[:10]}@example.test"


async def _me(server, person):
    status, body = await server.call("GET", "/api/me", token=person["access_token"])
    assert status == 200, body
    return body


async def _login(server, email, password):
    return await server.call("POST", "/api/auth/login", json={"email": email, "password": password})


async def test_sign_up_mails_a_verification_link_that_never_blocks_sign_in(mail_server, inbox, signup, owner_conn):
    server = mail_server
    user = await signup(server)
    message = (await inbox.wait(1, subject="Confirm your email"))[0]
    assert message["To"] == user["email"]
    assert "/console/verify-email?token=" in message.get_payload(decode=True).decode()
    # Unverified: everything works, the account says so.
    assert (await _me(server, user))["user"]["email_verified_at"] is None
    assert (await _login(server, user["email"], user["password"]))[0] == 200
    # Resend: at most one link a minute; the new link replaces the old one.
    status, body = await server.call("POST", "/api/me/verification", token=user["access_token"])
    assert (status, body["error"]["code"]) == (429, "too_many_attempts")
    await owner_conn.execute("UPDATE parley.email_verifications SET created_at = now() - interval '2 minutes'")
    status, _ = await server.call("POST", "/api/me/verification", token=user["access_token"])
    assert status == 202
    first, second = (token_from(m) for m in await inbox.wait(2, subject="Confirm your email"))
    status, body = await server.call("POST", "/api/auth/verify-email", json={"token": first})
    assert (status, body["error"]["code"]) == (400, "invalid_verification_token")
    status, body = await server.call("POST", "/api/auth/verify-email", json={"token": second})
    assert status == 200 and body["email_verified_at"], body
    assert (await _me(server, user))["user"]["email_verified_at"]
    # Single use; nothing left to verify.
    status, body = await server.call("POST", "/api/auth/verify-email", json={"token": second})
    assert (status, body["error"]["code"]) == (400, "invalid_verification_token")
    status, body = await server.call("POST", "/api/me/verification", token=user["access_token"])
    assert (status, body["error"]["code"]) == (409, "already_verified")
    # Expired links fail.
    await owner_conn.execute("UPDATE parley.users SET email_verified_at = NULL WHERE id = $1",
                             uuid.UUID(user["user_id"]))
    await owner_conn.execute("UPDATE parley.email_verifications SET created_at = now() - interval '2 minutes'")
    assert (await server.call("POST", "/api/me/verification", token=user["access_token"]))[0] == 202
    third = token_from((await inbox.wait(3, subject="Confirm your email"))[2])
    await owner_conn.execute("UPDATE parley.email_verifications SET expires_at = now() - interval '1 second'")
    assert (await server.call("POST", "/api/auth/verify-email", json={"token": third}))[0] == 400
    actions = {r["action"] for r in await owner_conn.fetch(
        "SELECT action FROM parley.audit_log WHERE actor_id = $1", user["user_id"])}
    assert {"account.verification_requested", "account.email_verified"} <= actions


async def test_profile_name_and_email_change_by_reverification(mail_server, inbox, signup, owner_conn):
    server = mail_server
    user = await signup(server)
    other = await signup(server)
    status, body = await server.call("PATCH", "/api/me", json={"name": "Ada Lovelace"}, token=user["access_token"])
    assert status == 200 and body["user"]["name"] == "Ada Lovelace" and body["pending_email"] is None
    for bad in ({"name": "evil\u202eexe"}, {"name": "x" * 201}, {"email": "nope"}, {"user_id": user["user_id"]}):
        status, body = await server.call("PATCH", "/api/me", json=bad, token=user["access_token"])
        assert (status, body["error"]["code"]) == (422, "validation_failed"), (bad, body)
    status, body = await server.call("PATCH", "/api/me", json={"email": other["email"].upper()},
                                     token=user["access_token"])
    assert (status, body["error"]["code"]) == (409, "email_taken")
    new = _email()
    await owner_conn.execute("UPDATE parley.email_verifications SET created_at = now() - interval '2 minutes'")
    status, body = await server.call("PATCH", "/api/me", json={"email": new}, token=user["access_token"])
    assert status == 200 and body["pending_email"] == new and body["user"]["email"] == user["email"]
    # Nothing changes until the new address proves itself.
    assert (await _me(server, user))["user"]["email"] == user["email"]
    # Three links: both sign-ups' and the change's (to the new address).
    change = [m for m in await inbox.wait(3, subject="Confirm your email") if m["To"] == new]
    status, body = await server.call("POST", "/api/auth/verify-email", json={"token": token_from(change[0])})
    assert status == 200 and body["email"] == new and body["email_verified_at"]
    assert (await _login(server, new, user["password"]))[0] == 200
    assert (await _login(server, user["email"], user["password"]))[0] == 401
    actions = [r["action"] for r in await owner_conn.fetch(
        "SELECT action FROM parley.audit_log WHERE actor_id = $1 ORDER BY id", user["user_id"])]
    assert "account.email_change_requested" in actions and "account.email_changed" in actions
    assert "account.profile_updated" in actions


async def test_change_password_needs_the_current_one_and_ends_other_sessions(server, signup, owner_conn):
    user = await signup(server)
    status, other = await _login(server, user["email"], user["password"])
    assert status == 200
    status, body = await server.call("POST", "/api/me/password", token=user["access_token"],
                                     json={"current_password": "not it at all", "new_password": "a new secret 1"})
    assert (status, body["error"]["code"]) == (403, "wrong_password")
    status, body = await server.call("POST", "/api/me/password", token=user["access_token"],
                                     json={"current_password": user["password"], "new_password": "short"})
    assert status == 422
    status, body = await server.call("POST", "/api/me/password", token=user["access_token"],
                                     json={"current_password": user["password"], "new_password": "a new secret 1"})
    assert status == 200 and body == {"sessions_ended": 1}
    # The other session is over at once; this one goes on.
    status, body = await server.call("GET", "/api/members", token=other["access_token"])
    assert (status, body["error"]["code"]) == (401, "session_revoked")
    assert (await server.call("POST", "/api/auth/refresh", json={"refresh_token": other["refresh_token"]}))[0] == 401
    assert (await server.call("GET", "/api/members", token=user["access_token"]))[0] == 200
    assert (await server.call("POST", "/api/auth/refresh", json={"refresh_token": user["refresh_token"]}))[0] == 200
    assert (await _login(server, user["email"], user["password"]))[0] == 401
    assert (await _login(server, user["email"], "a new secret 1"))[0] == 200
    actions = [r["action"] for r in await owner_conn.fetch(
        "SELECT action FROM parley.audit_log WHERE actor_id = $1 ORDER BY id", user["user_id"])]
    assert "auth.password_check_failed" in actions and "auth.password_changed" in actions


async def test_guessing_the_current_password_backs_off_like_sign_in(server, signup):
    user = await signup(server)
    for _ in range(5):
        status, _ = await server.call("POST", "/api/me/password", token=user["access_token"],
                                      json={"current_password": "guess guess", "new_password": "a new secret 1"})
        assert status == 403
    status, body = await server.call("POST", "/api/me/password", token=user["access_token"],
                                     json={"current_password": user["password"], "new_password": "a new secret 1"})
    assert (status, body["error"]["code"]) == (429, "too_many_attempts")


async def test_leave_and_delete_account_keep_an_owner(server, signup, owner_conn):
    owner = await signup(server)
    agent = await signup(server, join=owner, role="agent")
    # The sole owner can neither leave nor delete their account...
    status, body = await server.call("DELETE", f"/api/members/{owner['user_id']}", token=owner["access_token"])
    assert (status, body["error"]["code"]) == (409, "last_owner")
    assert "make someone else an owner" in body["error"]["message"]
    status, body = await server.call("POST", "/api/me/delete", json={"password": owner["password"]},
                                     token=owner["access_token"])
    assert (status, body["error"]["code"]) == (409, "last_owner")
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.users WHERE id = $1", uuid.UUID(owner["user_id"]))
    # ...a wrong password deletes nothing either...
    status, body = await server.call("POST", "/api/me/delete", json={"password": "not the password"},
                                     token=agent["access_token"])
    assert (status, body["error"]["code"]) == (403, "wrong_password")
    # ...an agent may leave, or delete their account outright.
    status, _ = await server.call("POST", "/api/me/delete", json={"password": agent["password"]},
                                  token=agent["access_token"])
    assert status == 204
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.users WHERE id = $1",
                                     uuid.UUID(agent["user_id"])) == 0
    assert (await _login(server, agent["email"], agent["password"]))[0] == 401
    status, body = await server.call("GET", "/api/me", token=agent["access_token"])
    assert status == 401
    audit = await owner_conn.fetchval(
        "SELECT count(*) FROM parley.audit_log WHERE action = 'account.deleted' AND actor_id = $1 AND tenant_id = $2",
        agent["user_id"], uuid.UUID(owner["tenant_id"]))
    assert audit == 1
    # With another owner, the first may delete the account; the workspace keeps its owner.
    second = await signup(server, join=owner, role="agent")
    assert (await server.call("PATCH", f"/api/members/{second['user_id']}", json={"role": "owner"},
                              token=owner["access_token"]))[0] == 200
    status, _ = await server.call("POST", "/api/me/delete", json={"password": owner["password"]},
                                  token=owner["access_token"])
    assert status == 204
    status, body = await server.call("GET", "/api/members", token=second["access_token"])
    assert [m["email"] for m in body["members"]] == [second["email"]]


async def test_sole_owner_of_a_deleted_workspace_may_go(server, signup):
    owner = await signup(server)
    assert (await server.call("DELETE", "/api/tenant", token=owner["access_token"]))[0] == 204
    status, _ = await server.call("POST", "/api/me/delete", json={"password": owner["password"]},
                                  token=owner["access_token"])
    assert status == 204


async def test_sole_owner_rule_attacked_in_sql_as_parley_app(server, signup, settings):
    """Straight DML as parley_app in the owner's own tenant transaction: the trigger refuses."""
    owner = await signup(server)
    me = await _me(server, owner)
    user_id = uuid.UUID(owner["user_id"])
    conn = await asyncpg.connect(settings.app_url)
    try:
        assert await conn.fetchval("SELECT current_user") == "parley_app"
        for statement in ("DELETE FROM parley.members WHERE user_id = $1",
                          "UPDATE parley.members SET role = 'agent' WHERE user_id = $1",
                          "SELECT parley.remove_member($1)"):
            with pytest.raises(asyncpg.PostgresError) as caught:
                async with conn.transaction():
                    await conn.fetchval("SELECT parley.begin_request($1, 'user', $2, $3, NULL, NULL, 'owner')",
                                        uuid.UUID(owner["tenant_id"]), owner["user_id"], uuid.UUID(me["session_id"]))
                    await conn.execute(statement, user_id)
            assert "needs at least one owner" in str(caught.value), (statement, caught.value)
        # Deleting the person directly is not the app's to do at all.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM parley.users WHERE id = $1", user_id)
        # The definer functions without a signed-in session refuse.
        with pytest.raises(asyncpg.PostgresError) as caught:
            await conn.execute("SELECT parley.delete_account('x', true)")
        assert "Sign in first" in str(caught.value)
    finally:
        await conn.close()
    status, body = await server.call("GET", "/api/members", token=owner["access_token"])
    assert status == 200 and [m["role"] for m in body["members"]] == ["owner"]
