"""Sign in with OpenID Connect, end to end against a fake identity provider on 127.0.0.1:
the browser flow through the console (redirects, the binding cookie, PKCE, state, nonce), the
id_token checks, linking rules, key rotation, and a workspace that requires SSO.
"""
from __future__ import annotations

import re
import time
import uuid
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest
from support.console import ConsoleClient
from support.fakes.oidc_provider import FakeIdentityProvider
from support.server import free_port, start_server

LINK_RE = re.compile(r'href="(/console/sso/test\?link=1[^"]*)"')


@pytest.fixture
async def idp():
    provider = await FakeIdentityProvider().start()
    yield provider
    await provider.close()


@pytest.fixture
async def sso_server(settings, idp):
    port = free_port()
    settings.public_url = f"http://127.0.0.1:{port}"
    settings.extra["oidc_providers"] = [idp.config()]
    srv = await start_server(settings, port)
    yield srv
    await srv.close()


@pytest.fixture
async def browser(sso_server):
    client = ConsoleClient(sso_server.base_url)
    yield client
    await client.close()


async def sso_sign_in(client: ConsoleClient, path: str = "/console/sso/test"):
    """Follow the whole dance like a browser: Parley → provider → Parley's callback → console."""
    return await client.get(path)


async def access_token(client: ConsoleClient) -> str:
    await client.get("/console/account")
    status, body, _ = await client.post("/console/session/token", headers={"Accept": "application/json"},
                                        data={"_csrf": client.csrf})
    assert status == 200, body
    import json
    return json.loads(body)["token"]


async def test_provider_buttons_and_sign_in_links_a_verified_account(sso_server, browser, idp, signup, owner_conn):
    person = await signup(sso_server, email="person@example.test")
    status, page, _ = await browser.get("/console/sign-in")
    assert "Sign in with Test IdP" in page

    status, page, resp = await sso_sign_in(browser)
    assert status == 200, page[:400]
    assert urlsplit(str(resp.url)).path.startswith("/console/"), resp.url
    assert "/console/sign-in" not in str(resp.url)

    # PKCE: the verifier never travelled through the browser; the provider got one matching the challenge.
    [token_request] = idp.token_requests
    assert token_request["code_verifier"] and token_request["grant_type"] == "authorization_code"
    identity = await owner_conn.fetchrow("SELECT user_id, provider, email FROM parley.user_identities")
    assert str(identity["user_id"]) == person["user_id"] and identity["provider"] == "test"
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.sso_sessions WHERE user_id = $1",
                                     uuid.UUID(person["user_id"])) == 1
    actions = {r["action"] for r in await owner_conn.fetch(
        "SELECT action FROM parley.audit_log WHERE tenant_id = $1", uuid.UUID(person["tenant_id"]))}
    assert {"auth.identity_linked", "auth.sign_in"} <= actions

    token = await access_token(browser)
    status, ids = await sso_server.call("GET", "/api/me/identities", token=token)
    assert status == 200 and [i["provider"] for i in ids["identities"]] == ["test"]
    status, providers = await sso_server.call("GET", "/api/auth/sso/providers")
    assert providers == {"providers": [{"id": "test", "label": "Test IdP"}]}


async def test_new_person_gets_an_account_without_a_password(sso_server, browser, idp, owner_conn):
    idp.user = {"sub": "new-1", "email": "newcomer@example.test", "email_verified": True, "name": "New Comer"}
    status, page, resp = await sso_sign_in(browser)
    assert status == 200 and str(resp.url).endswith("/console/workspaces"), resp.url
    user = await owner_conn.fetchrow("SELECT name, email_verified_at, password_hash FROM parley.users "
                                     "WHERE email = 'newcomer@example.test'")
    assert user["name"] == "New Comer" and user["email_verified_at"] is not None
    # No password opens it.
    status, _out = await sso_server.call("POST", "/api/auth/login",
                                         json={"email": "newcomer@example.test", "password": user["password_hash"]})
    assert status == 401
    # Its only way in cannot be unlinked.
    await browser.get("/console/account")
    status, page, _ = await browser.post("/console/account/sso/test/unlink")
    assert status == 409 and "only way to sign in" in unescape(page)
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.user_identities") == 1


async def test_sign_up_off_refuses_unknown_people(settings, sso_server, browser, idp, owner_conn):
    settings.extra["oidc_sign_up"] = False
    idp.user = {"sub": "stranger", "email": "stranger@example.test", "email_verified": True}
    status, page, _resp = await sso_sign_in(browser)
    assert status == 403 and "does not create one" in unescape(page)
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.users WHERE email = 'stranger@example.test'") == 0


async def test_an_unverified_email_never_takes_over_an_account(sso_server, browser, idp, signup, owner_conn):
    await signup(sso_server, email="victim@example.test")
    idp.user = {"sub": "attacker", "email": "victim@example.test", "email_verified": False}
    status, page, _resp = await sso_sign_in(browser)
    assert status == 403 and "does not vouch" in unescape(page)
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.user_identities") == 0
    assert "parley_console" not in {c.key for c in browser.http.cookie_jar}


@pytest.mark.parametrize("tamper, expected", [
    ("unpublished_key", "does not publish"),
    ("aud", "audience"),
    ("iss", "issuer"),
    ("expired", "expired"),
    ("nonce", "nonce"),
    ("alg_none", "algorithm"),
])
async def test_a_bad_id_token_signs_nobody_in(sso_server, browser, idp, signup, owner_conn, tamper, expected):
    await signup(sso_server, email="person@example.test")
    if tamper == "unpublished_key":
        idp.sign_with_unpublished_key = True
    elif tamper == "aud":
        idp.claims_hook = lambda c: {**c, "aud": "someone-else"}
    elif tamper == "iss":
        idp.claims_hook = lambda c: {**c, "iss": "https://evil.example"}
    elif tamper == "expired":
        idp.claims_hook = lambda c: {**c, "iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600}
    elif tamper == "nonce":
        idp.claims_hook = lambda c: {**c, "nonce": "not-the-one-we-sent"}
    elif tamper == "alg_none":
        idp.unsigned = True
    status, page, _resp = await sso_sign_in(browser)
    assert status == 401, page[:300]
    assert expected in unescape(page).lower()
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.sso_sessions") == 0
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.user_identities") == 0


async def test_state_is_single_use_and_bound_to_the_browser(sso_server, browser, idp, signup, owner_conn):
    await signup(sso_server, email="person@example.test")
    # Stop at the provider's redirect back, to replay it.
    status, _, start = await browser.get("/console/sso/test", allow_redirects=False)
    assert status == 303
    authorize = start.headers["Location"]
    query = parse_qs(urlsplit(authorize).query)
    assert query["code_challenge_method"] == ["S256"] and "code_verifier" not in query
    assert query["nonce"][0] and query["state"][0]
    async with browser.http.get(authorize, allow_redirects=False) as r:
        callback = r.headers["Location"]

    path = urlsplit(callback).path + "?" + urlsplit(callback).query
    # A browser without the binding cookie gets nowhere (and spends nothing).
    bare = ConsoleClient(sso_server.base_url)
    try:
        status, page, _ = await bare.get(path)
        assert status == 400, page[:300]
    finally:
        await bare.close()
    # A browser with a binding of its own (it started a sign-in too) cannot use this state:
    # SQL refuses the mismatch and spends the state, so the planted link is dead for everyone.
    other = ConsoleClient(sso_server.base_url)
    try:
        await other.get("/console/sso/test", allow_redirects=False)
        status, page, _ = await other.get(path)
        assert status == 400 and "another browser" in unescape(page), page[:300]
    finally:
        await other.close()
    status, page, _ = await browser.get(path)
    assert status == 400 and "start again" in unescape(page)
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.sso_sessions") == 0

    # A fresh dance works once; its callback replayed is refused.
    status, _, start = await browser.get("/console/sso/test", allow_redirects=False)
    async with browser.http.get(start.headers["Location"], allow_redirects=False) as r:
        callback = r.headers["Location"]
    path = urlsplit(callback).path + "?" + urlsplit(callback).query
    status, page, resp = await browser.get(path)
    assert status == 200 and "/console/sign-in" not in str(resp.url)
    status, page, _ = await browser.get(path)
    assert status == 400
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.sso_sessions") == 1


async def test_keys_rotate_and_userinfo_supplies_a_missing_email(sso_server, browser, idp, signup, owner_conn):
    await signup(sso_server, email="person@example.test")
    status, _, resp = await sso_sign_in(browser)
    assert status == 200 and idp.jwks_fetches == 1
    idp.rotate()
    idp.email_in_id_token = False
    second = ConsoleClient(sso_server.base_url)
    try:
        status, page, resp = await sso_sign_in(second)
        assert status == 200 and "/console/sign-in" not in str(resp.url), page[:300]
    finally:
        await second.close()
    assert idp.jwks_fetches == 2  # the unknown kid refreshed the keys once
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.sso_sessions") == 2


async def test_linking_from_the_account_page(sso_server, browser, idp, signup, owner_conn):
    me = await signup(sso_server, email="me@example.test")
    other = await signup(sso_server, email="other@example.test")
    idp.user = {"sub": "shared-sub", "email": "someone@elsewhere.test", "email_verified": True}
    await browser.sign_in(me["email"], me["password"])
    # Without the session's CSRF token a link cannot be started (a planted link links nothing).
    status, page, _ = await browser.get("/console/sso/test?link=1")
    assert status == 403
    status, page, _ = await browser.get("/console/account")
    link = unescape(LINK_RE.search(page).group(1))
    status, page, _resp = await browser.get(link)
    assert status == 200 and "The identity is linked" in page, page[:300]
    row = await owner_conn.fetchrow("SELECT user_id FROM parley.user_identities WHERE subject = 'shared-sub'")
    assert str(row["user_id"]) == me["user_id"]

    # The same identity cannot be linked to another person.
    second = ConsoleClient(sso_server.base_url)
    try:
        await second.sign_in(other["email"], other["password"])
        status, page, _ = await second.get("/console/account")
        status, page, _ = await second.get(unescape(LINK_RE.search(page).group(1)))
        assert status == 409 and "another account" in unescape(page)
    finally:
        await second.close()

    # Unlinking works while a password remains.
    status, page, _ = await browser.post("/console/account/sso/test/unlink")
    assert status == 200 and "unlinked" in page
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.user_identities") == 0


async def test_a_workspace_that_requires_sso_turns_password_sessions_away(sso_server, browser, idp, signup):
    owner = await signup(sso_server, email="owner@example.test")
    agent = await signup(sso_server, email="agent@example.test")  # with a workspace of its own
    status, invite = await sso_server.call("POST", "/api/invites", json={"email": agent["email"], "role": "agent"},
                                           token=owner["access_token"])
    status, _ = await sso_server.call("POST", "/api/invites/accept", json={"token": invite["token"]},
                                      token=agent["access_token"])
    status, switched = await sso_server.call("POST", "/api/auth/switch", json={"tenant_id": owner["tenant_id"]},
                                             token=agent["access_token"])
    own_token, agent = agent["access_token"], {**agent, "access_token": switched["access_token"]}
    # From a password session the owner cannot turn it on (they would lock themselves out).
    status, out = await sso_server.call("PUT", "/api/tenant/sso", json={"required": True}, token=owner["access_token"])
    assert status == 409 and out["error"]["code"] == "sso_session_required"

    idp.user = {"sub": "owner-sub", "email": "owner@example.test", "email_verified": True}
    status, _, _ = await sso_sign_in(browser)
    sso_token = await access_token(browser)
    status, out = await sso_server.call("PUT", "/api/tenant/sso", json={"required": True}, token=sso_token)
    assert status == 200 and out == {"required": True, "this_session_is_sso": True}

    for who in (owner, agent):  # password sessions of this workspace: refused
        status, out = await sso_server.call("GET", "/api/conversations", token=who["access_token"])
        assert status == 403 and out["error"]["code"] == "sso_required"
    status, out = await sso_server.call("GET", "/api/conversations", token=sso_token)
    assert status == 200

    # The agent's own other workspace does not require it (same password session).
    status, out = await sso_server.call("GET", "/api/conversations", token=own_token)
    assert status == 200

    # Agents cannot change it; API keys cannot either.
    status, out = await sso_server.call("PUT", "/api/tenant/sso", json={"required": False}, token=agent["access_token"])
    assert status == 403
    status, out = await sso_server.call("PUT", "/api/tenant/sso", json={"required": False}, token=sso_token)
    assert status == 200 and out["required"] is False
