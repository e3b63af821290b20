"""Console pages over plain HTTP: session cookie, CSRF, role gates, escaping, inbox actions, leads CSV."""
from __future__ import annotations

import csv
import io
import re

from tests.console.conftest import Visitor, make_chatbot, widget_session

HOSTILE = "<img src=x onerror=alert(1)>"


async def test_sign_in_and_inbox(server, signup, console_client):
    owner = await signup(server)
    c = console_client()
    html = await c.sign_in(owner["email"], owner["password"])
    assert "Inbox" in html and c.csrf
    # wrong password: error next to the form, no cookie
    d = console_client()
    status, text, _ = await d.get("/console/sign-in")
    token = re.search(r'name="_csrf" value="([^"]+)"', text).group(1)
    status, text, _ = await d.post("/console/sign-in", {"email": owner["email"], "password": "nope-nope", "_csrf": token})
    assert status == 401 and "Wrong email or password" in text
    status, text, resp = await d.get("/console/inbox")
    assert "/console/sign-in" in str(resp.url)


async def test_cookie_does_not_authenticate_api(server, signup, console_client):
    owner = await signup(server)
    c = console_client()
    await c.sign_in(owner["email"], owner["password"])
    async with c.http.get(server.base_url + "/api/members") as r:
        assert r.status == 401


async def test_csrf_missing_or_wrong_is_refused(server, signup, console_client):
    owner = await signup(server)
    c = console_client()
    await c.sign_in(owner["email"], owner["password"])
    status, text, _ = await c.post("/console/canned", {"shortcut": "hi", "body": "Hello!"}, csrf=False)
    assert status == 403 and "csrf" in text.lower() or "expired" in text
    status, text, _ = await c.post("/console/canned", {"shortcut": "hi", "body": "Hello!", "_csrf": "forged"})
    assert status == 403
    status, text, _ = await c.post("/console/canned", {"shortcut": "hi", "body": "Hello!"})
    assert status == 200 and "/hi" in text


async def test_agent_cannot_open_admin_pages(server, signup, console_client):
    owner = await signup(server)
    agent = await signup(server, join=owner, role="agent")
    c = console_client()
    await c.sign_in(agent["email"], agent["password"])
    for path in ("/console/team", "/console/keys", "/console/audit", "/console/settings", "/console/billing"):
        status, text, _ = await c.get(path)
        assert status == 403, (path, status)
        assert "Not allowed" in text
    status, text, _ = await c.get("/console/leads")
    assert status == 200
    assert 'href="/console/team"' not in text  # not even offered in the navigation


async def test_inbox_actions_and_escaping(server, signup, console_client):
    owner = await signup(server)
    bot = await make_chatbot(server, owner["access_token"])
    session = await widget_session(server, bot["public_key"])
    visitor = await Visitor.connect(server.base_url, session["token"])
    try:
        await visitor.say(HOSTILE)
        c = console_client()
        await c.sign_in(owner["email"], owner["password"])
        status, html, _ = await c.get("/console/inbox?tab=all")
        assert status == 200
        assert HOSTILE not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
        conv = session["conversation_id"]
        status, html, _ = await c.get(f"/console/conversations/{conv}")
        assert "&lt;img src=x onerror=alert(1)&gt;" in html and "https://shop.example/pricing" in html
        status, html, _ = await c.post(f"/console/conversations/{conv}/claim", {"tab": "all"})
        assert status == 200 and "With an agent" in html
        status, html, _ = await c.post(f"/console/conversations/{conv}/reply", {"body": "Hi, I'm here to help"})
        assert status == 200
        frame = await visitor.expect(lambda f: f.get("type") == "message" and f["message"]["author"] == "agent")
        assert frame["message"]["body"] == "Hi, I'm here to help"
        status, html, _ = await c.post(f"/console/conversations/{conv}/note", {"body": "VIP customer"})
        assert status == 200 and "VIP customer" in html
        status, html, _ = await c.post(f"/console/conversations/{conv}/reply", {"body": "   "})
        assert status == 422 and "Write something first" in html
        status, html, _ = await c.post(f"/console/conversations/{conv}/release", {})
        assert status == 200 and "With the bot" in html
        status, html, _ = await c.post(f"/console/conversations/{conv}/close", {})
        assert status == 200 and "Closed" in html
        status, html, _ = await c.post(f"/console/conversations/{conv}/close", {})
        assert status == 409 and "already closed" in html
        status, html, _ = await c.post(f"/console/conversations/{conv}/reopen", {})
        assert status == 200 and "With an agent" in html
    finally:
        await visitor.close()
    assert not any(f.get("message", {}).get("author") == "note" for f in visitor.frames)


async def test_leads_filters_status_and_csv(server, signup, console_client):
    owner = await signup(server)
    bot = await make_chatbot(server, owner["access_token"])
    for name, email in (("Ada", "ada@example.com"), ("=HYPERLINK(\"x\")", "evil@example.com")):
        session = await widget_session(server, bot["public_key"])
        status, out = await server.call("POST", f"/api/conversations/{session['conversation_id']}/lead",
                                        json={"name": name, "email": email}, token=owner["access_token"])
        assert status == 201, out
    c = console_client()
    await c.sign_in(owner["email"], owner["password"])
    status, html, _ = await c.get("/console/leads?q=ada")
    assert status == 200 and "ada@example.com" in html and "evil@example.com" not in html
    lead_id = re.search(r'data-id="([0-9a-f-]{36})"', html).group(1)
    status, html, _ = await c.post(f"/console/leads/{lead_id}/status", {"status": "won"})
    assert status == 409  # new → won is not a valid move
    status, html, _ = await c.post(f"/console/leads/{lead_id}/status", {"status": "contacted"})
    assert status == 200 and "Lead updated" in html
    status, text, resp = await c.get("/console/leads.csv")
    assert status == 200 and resp.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    by_email = {r["email"]: r for r in rows}
    assert by_email["ada@example.com"]["status"] == "contacted"
    assert by_email["evil@example.com"]["name"].startswith("'=")
    status, text, _ = await c.get("/console/leads?status=bogus")
    assert status == 200 and "Choose one of" in text


async def test_team_keys_audit_settings(server, signup, console_client):
    owner = await signup(server)
    c = console_client()
    await c.sign_in(owner["email"], owner["password"])
    status, html, _ = await c.post("/console/team/invites", {"email": "not-an-email", "role": "agent"})
    assert status == 422 and "Enter an email address" in html
    status, html, _ = await c.post("/console/team/invites", {"email": "new@example.com", "role": "admin"})
    assert status == 200 and "/console/accept-invite?token=" in html and "new@example.com" in html
    status, html, _ = await c.post("/console/keys", {"name": "", "scopes": "read"})
    assert status == 422 and "Name the key" in html
    status, html, _ = await c.post("/console/keys", {"name": "CRM sync", "scopes": ["read", "write"]})
    assert status == 200
    key = re.search(r'id="api-key-value">(prl_[^<]+)<', html).group(1)
    status, body = await server.call("GET", "/api/leads", token=key)
    assert status == 200, body
    status, html, _ = await c.get("/console/keys")
    assert key not in html and "CRM sync" in html  # shown once only
    key_id = re.search(r'/console/keys/([0-9a-f-]{36})/revoke', html).group(1)
    status, html, _ = await c.post(f"/console/keys/{key_id}/revoke", {})
    assert status == 200 and "revoked" in html
    status, body = await server.call("GET", "/api/leads", token=key)
    assert status == 401
    status, html, _ = await c.get("/console/audit?action=api_key.insert")
    assert status == 200 and "api_key.insert" in html
    status, html, _ = await c.post("/console/settings", {"name": "", "bot_minutes": "abc", "human_minutes": ""})
    assert status == 422 and "Minutes, a whole number" in html and "Give the workspace a name" in html
    status, html, _ = await c.post("/console/settings", {"name": "Acme <Support>", "bot_minutes": "45"})
    assert status == 200 and "Acme &lt;Support&gt;" in html and 'value="45"' in html
    status, html, _ = await c.get("/console/billing")
    assert status == 200 and "seats" in html
