"""Console → Account: the verification banner and link page, profile, password, leaving, deleting;
and the team page saying plainly when an invitation was not emailed."""
from __future__ import annotations

import re
import uuid

import pytest
from support.console import ConsoleClient
from support.mail import token_from
from support.server import free_port, start_server


@pytest.fixture
async def clients():
    """`make(server)` -> a ConsoleClient on that server; all closed after the test."""
    made = []

    def make(srv):
        made.append(ConsoleClient(srv.base_url))
        return made[-1]

    yield make
    for c in made:
        await c.close()


async def test_unverified_banner_resend_and_verify_page(mail_server, inbox, signup, clients, owner_conn):
    server = mail_server
    owner = await signup(server)
    c = clients(server)
    await c.sign_in(owner["email"], owner["password"])
    status, html, _ = await c.get("/console/inbox")
    assert status == 200 and 'id="verify-banner"' in html
    first = token_from((await inbox.wait(1, subject="Confirm your email"))[0])  # the sign-up's
    status, html, _ = await c.post("/console/account/verification")
    assert status == 429 and "less than a minute ago" in html
    await owner_conn.execute("UPDATE parley.email_verifications SET created_at = now() - interval '2 minutes'")
    status, html, resp = await c.post("/console/account/verification")
    assert status == 200 and "on its way" in html and str(resp.url).endswith("done=verification")
    # the resend's link (mails need not arrive in the order they were sent)
    (token,) = {token_from(m) for m in await inbox.wait(2, subject="Confirm your email")} - {first}
    # The emailed link opens a page whose button confirms (a scanner's GET uses nothing up).
    status, html, _ = await c.get(f"/console/verify-email?token={token}")
    assert status == 200 and "Confirm" in html
    assert await owner_conn.fetchval("SELECT email_verified_at FROM parley.users WHERE id = $1",
                                     uuid.UUID(owner["user_id"])) is None
    csrf = re.search(r'name="_csrf" value="([^"]+)"', html).group(1)
    status, html, _ = await c.post("/console/verify-email", {"token": token, "_csrf": csrf})
    assert status == 200 and 'id="verified"' in html and owner["email"] in html
    status, html, _ = await c.post("/console/verify-email", {"token": token, "_csrf": csrf})
    assert status == 400 and "invalid, used or expired" in html
    status, html, _ = await c.get("/console/inbox")
    assert 'id="verify-banner"' not in html


async def test_profile_password_and_delete_from_the_account_page(server, signup, clients):
    owner = await signup(server)
    agent = await signup(server, join=owner, role="agent")
    c = clients(server)
    await c.sign_in(owner["email"], owner["password"])
    status, html, _ = await c.get("/console/account")
    assert status == 200 and owner["email"] in html and "not verified yet" in html
    status, html, _ = await c.post("/console/account/profile", {"name": "Grace Hopper", "email": owner["email"]})
    assert status == 200 and 'value="Grace Hopper"' in html and "Profile saved" in html
    status, html, _ = await c.post("/console/account/profile", {"name": "bad\u202ename", "email": owner["email"]})
    assert status == 422 and "One line" in html
    status, html, _ = await c.post("/console/account/password", {"current_password": "wrong one",
                                                                 "new_password": "new secret 123",
                                                                 "confirm": "new secret 123"})
    assert status == 403 and "not right" in html
    status, html, _ = await c.post("/console/account/password", {"current_password": owner["password"],
                                                                 "new_password": "new secret 123",
                                                                 "confirm": "other"})
    assert status == 422 and "differ" in html
    status, html, _ = await c.post("/console/account/password", {"current_password": owner["password"],
                                                                 "new_password": "new secret 123",
                                                                 "confirm": "new secret 123"})
    assert status == 200 and "Password changed. 1 other session signed out." in html  # the signup's session
    # The sole owner can neither leave nor delete the account: the page says why.
    status, html, _ = await c.post("/console/account/leave")
    assert status == 409 and "make someone else an owner" in html
    status, html, _ = await c.post("/console/account/delete", {"password": "new secret 123"})
    assert status == 409 and "make someone else an owner" in html
    # An agent leaves from the same page, and another deletes the account.
    a = clients(server)
    await a.sign_in(agent["email"], agent["password"])
    status, html, resp = await a.post("/console/account/leave")
    assert status == 200 and str(resp.url).endswith("/console/workspaces")
    status, html, resp = await a.post("/console/account/delete", {"password": agent["password"]})
    assert status == 200 and "Your account is deleted" in html and "/console/sign-in" in str(resp.url)
    status, _ = await server.call("POST", "/api/auth/login", json={"email": agent["email"],
                                                                   "password": agent["password"]})
    assert status == 401


async def test_invite_says_plainly_when_it_was_not_mailed(server, settings, inbox, signup, clients):
    owner = await signup(server)
    c = clients(server)
    await c.sign_in(owner["email"], owner["password"])
    # No SMTP on this server: the API and the page both say so, and show the link.
    status, body = await server.call("POST", "/api/invites", json={"email": "api@example.com"},
                                     token=owner["access_token"])
    assert status == 201 and body["mail"] == "not_configured"
    status, html, _ = await c.post("/console/team/invites", {"email": "new@example.com", "role": "agent"})
    assert status == 200 and 'id="invite-not-mailed"' in html and "no mail server (SMTP) configured" in html
    assert "/console/accept-invite?token=" in html
    # SMTP configured and working: sent.
    settings.extra["smtp_url"] = inbox.url
    mailing = await start_server(settings)
    try:
        status, body = await mailing.call("POST", "/api/invites", json={"email": "sent@example.com"},
                                          token=owner["access_token"])
        assert status == 201 and body["mail"] == "sent"
        assert (await inbox.wait(1, subject="invited"))[0]["To"] == "sent@example.com"
    finally:
        await mailing.close()
    # SMTP configured but nobody answers: failed, and the page says the send failed.
    settings.extra["smtp_url"] = f"smtp://127.0.0.1:{free_port()}"
    broken = await start_server(settings)
    try:
        b = clients(broken)
        await b.sign_in(owner["email"], owner["password"])
        status, html, _ = await b.post("/console/team/invites", {"email": "lost@example.com", "role": "agent"})
        assert status == 200 and 'id="invite-not-mailed"' in html and "could not be emailed" in html
    finally:
        await broken.close()
