"""Console pages over plain HTTP: session cookie, CSRF, role gates, escaping, inbox actions, leads CSV."""
from __future__ import annotations

import csv
import io
import re

from support.console import Visitor, make_chatbot, widget_session

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
    assert (status == 403 and "csrf" in text.lower()) or "expired" in text
    status, text, _ = await c.post("/console/canned", {"shortcut": "hi", "body": "Hello!", "_csrf": "forged"})
    assert status == 403
    status, text, _ = await c.post("/console/canned", {"shortcut": "hi", "body": "Hello!"})
    assert status == 200 and "/hi" in text


async def test_agent_cannot_open_admin_pages(server, signup, console_client):
    owner = await signup(server)
    agent = await signup(server, join=owner, role="agent")
    c = console_client()
    await c.sign_in(agent["email"], agent["password"])
    for path in ("/console/team", "/console/keys", "/console/audit", "/console/settings", "/console/billing",
                 "/console/chatbots", "/console/onboarding"):
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
        status, html, _ = await c.get("/console/inbox?tab=all&q=onerror")
        assert status == 200 and HOSTILE not in html
        conv = session["conversation_id"]
        assert f'data-id="{conv}"' in html  # found by full-text search
        status, html, _ = await c.get(f"/console/conversations/{conv}")
        assert HOSTILE not in html
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
        # Refused, never stripped: what the agent typed is what would be sent.
        for action, body in (("reply", "pay\x00 here"), ("note", "VIP\x00"), ("reply", "pay \u202ehere")):
            status, html, _ = await c.post(f"/console/conversations/{conv}/{action}", {"body": body})
            assert status == 422 and "must not contain" in html, (action, repr(body))
        status, html, _ = await c.post("/console/canned", {"shortcut": "nul", "body": "Hello\x00!"})
        assert status == 422 and "must not contain NUL" in html
        status, html, _ = await c.post(f"/console/conversations/{conv}/release", {})
        assert status == 200 and "With the bot" in html
        status, html, _ = await c.post(f"/console/conversations/{conv}/close", {})
        assert status == 200 and "Closed" in html
        status, html, _ = await c.post(f"/console/conversations/{conv}/close", {})
        assert status == 409 and "Close is not possible while the conversation is closed" in html
        status, html, _ = await c.post(f"/console/conversations/{conv}/reopen", {})
        assert status == 200 and "With an agent" in html
    finally:
        await visitor.close()
    assert not any(f.get("message", {}).get("author") == "note" for f in visitor.frames)
    assert not any("pay" in f.get("message", {}).get("body", "") for f in visitor.frames)


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
    assert status == 409 and "A new lead cannot become won" in html  # shown next to the lead
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


async def test_knowledge_text_url_upload_try(server, signup, console_client, monkeypatch):
    import asyncio

    from support.fakes.website import FakeWebsite

    owner = await signup(server)
    bot = await make_chatbot(server, owner["access_token"])
    c = console_client()
    await c.sign_in(owner["email"], owner["password"])
    base = f"/console/knowledge/{bot['id']}"
    status, html, resp = await c.get("/console/knowledge")
    assert str(resp.url).endswith(base)  # one chatbot: straight to it
    status, html, _ = await c.post(f"{base}/text", {"title": "Shipping", "text": "   "})
    assert status == 422 and "Paste some text" in html
    status, html, _ = await c.post(f"{base}/text", {"title": "Shipping policy",
                                                    "text": "# Shipping\n\nParcels to Lisbon take 2 days and cost 6 EUR."})
    assert status == 200 and "Shipping policy" in html
    status, html, _ = await c.post(f"{base}/try", {"query": "how long does shipping to Lisbon take?"})
    assert status == 200 and 'id="passages"' in html and "Parcels to Lisbon take 2 days" in html
    monkeypatch.delenv("PARLEY_FETCH_ALLOW_HOSTS", raising=False)
    status, html, _ = await c.post(f"{base}/import", {"kind": "url", "url": "http://169.254.169.254/latest/meta-data/"})
    assert status == 422 and "cannot be imported" in html
    monkeypatch.setenv("PARLEY_FETCH_ALLOW_HOSTS", "127.0.0.1")
    async with FakeWebsite() as site:
        status, html, _ = await c.post(f"{base}/import", {"kind": "url", "url": site.url("/faq"), "title": "FAQ"})
        assert status == 200 and "Import started" in html
        source_id = re.search(r'data-poll-url="/console/knowledge/sources/([0-9a-f-]{36})/status"', html).group(1)
        for _ in range(100):
            async with c.http.get(f"{server.base_url}/console/knowledge/sources/{source_id}/status",
                                  headers={"Accept": "application/json"}) as r:
                state = await r.json()
            if state["done"]:
                break
            await asyncio.sleep(0.1)
        assert state["status"] == "ready", state
    form = __import__("aiohttp").FormData()
    form.add_field("_csrf", c.csrf)
    form.add_field("title", "Notes")
    form.add_field("file", b"Opening hours: Monday to Friday, 9 to 6.", filename="notes.txt", content_type="text/plain")
    async with c.http.post(server.base_url + f"{base}/upload", data=form) as r:
        html = await r.text()
        assert r.status == 200 and "File added" in html and "Notes" in html
    form = __import__("aiohttp").FormData()
    form.add_field("_csrf", "forged")
    form.add_field("file", b"x", filename="x.txt", content_type="text/plain")
    async with c.http.post(server.base_url + f"{base}/upload", data=form) as r:
        assert r.status == 403
    status, html, _ = await c.get(base)
    assert html.count('class="chunks"') == 3
    delete_id = re.search(r'/console/knowledge/sources/([0-9a-f-]{36})/delete', html).group(1)
    status, html, _ = await c.post(f"/console/knowledge/sources/{delete_id}/delete", {})
    assert status == 200 and "Source deleted" in html and html.count('class="chunks"') == 2


async def test_analytics_and_feedback_triage(server, signup, console_client, owner_conn):
    from support.console import seed_analytics

    owner = await signup(server)
    bot = await make_chatbot(server, owner["access_token"])
    seeded = await seed_analytics(owner_conn, owner["tenant_id"], bot["id"])
    c = console_client()
    await c.sign_in(owner["email"], owner["password"])
    for days in (7, 30, 90):
        status, html, _ = await c.get(f"/console/analytics?days={days}")
        assert status == 200
        assert html.count("<svg") == 4 and "Conversations per day" in html and "First human response" in html
    assert "do you ship to brazil" in html  # unanswered question, ranked
    assert "&lt;b&gt;useless&lt;/b&gt; answer" in html and "<b>useless</b>" not in html
    link = re.search(r'href="(/console/analytics/question\?q=do%20you%20ship%20to%20brazil[^"]*)"', html).group(1)
    status, page, _ = await c.get(link.replace("&amp;", "&"))
    assert status == 200 and "/console/conversations/" in page
    message_id = re.search(r'action="/console/feedback/(\d+)/triage"', html).group(1)
    before = html.count('action="/console/feedback/')
    status, html, _ = await c.post(f"/console/feedback/{message_id}/triage", {"done": "1", "back": "days=90"})
    assert status == 200 and "Marked as triaged" in html
    assert html.count('action="/console/feedback/') == before - 1
    assert seeded["down_conversation"] is not None


async def test_chatbot_settings_preview_and_onboarding(server, signup, console_client, monkeypatch):
    from aiohttp import web

    owner = await signup(server)
    c = console_client()
    await c.sign_in(owner["email"], owner["password"])
    # onboarding 1: create the chatbot
    status, html, _ = await c.get("/console/onboarding")
    assert status == 200 and 'id="step-chatbot"' in html
    status, html, _ = await c.post("/console/chatbots", {"name": "", "from": "onboarding"})
    assert status == 422 and "Name the chatbot" in html
    status, html, resp = await c.post("/console/chatbots", {"name": "Acme support", "from": "onboarding"})
    assert status == 200 and "step=knowledge" in str(resp.url) and 'id="step-knowledge"' in html
    bot_id = re.search(r"chatbot=([0-9a-f-]{36})", str(resp.url)).group(1)
    # 2: knowledge
    status, html, _ = await c.post("/console/onboarding/knowledge", {"chatbot": bot_id, "text": "", "url": ""})
    assert status == 422 and "Paste some text" in html
    status, html, resp = await c.post("/console/onboarding/knowledge",
                                      {"chatbot": bot_id, "text": "We open 9 to 5 on weekdays."})
    assert status == 200 and 'id="step-embed"' in html
    key = re.search(r'data-chatbot=&#34;(pk_[A-Za-z0-9_-]+)&#34;|data-chatbot="(pk_[A-Za-z0-9_-]+)"', html)
    key = key.group(1) or key.group(2)
    # 4: install check against a local page (allowed for the fetcher only in tests)
    monkeypatch.setenv("PARLEY_FETCH_ALLOW_HOSTS", "127.0.0.1")
    pages = {"/with": f'<html><body><p>Hi</p><script src="{server.base_url}/widget.js" data-chatbot="{key}" async>'
                      '</script></body></html>',
             "/other": '<html><body><script src="https://x.example/widget.js" data-chatbot="pk_someoneelse1234567">'
                       '</script></body></html>',
             "/without": "<html><body>nothing here</body></html>"}
    async def serve(request):
        return web.Response(text=pages["/" + request.match_info["name"]], content_type="text/html")

    site = web.Application()
    site.router.add_get("/{name}", serve)
    runner = web.AppRunner(site)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = runner.addresses[0][1]
    try:
        status, html, _ = await c.post("/console/onboarding/install-check",
                                       {"chatbot": bot_id, "url": f"http://127.0.0.1:{port}/with"})
        assert status == 200 and "Found it" in html
        status, html, _ = await c.post("/console/onboarding/install-check",
                                       {"chatbot": bot_id, "url": f"http://127.0.0.1:{port}/other"})
        assert "with another key" in html
        status, html, _ = await c.post("/console/onboarding/install-check",
                                       {"chatbot": bot_id, "url": f"http://127.0.0.1:{port}/without"})
        assert "does not load the widget yet" in html
    finally:
        await runner.cleanup()
    monkeypatch.delenv("PARLEY_FETCH_ALLOW_HOSTS")
    status, html, _ = await c.post("/console/onboarding/install-check",
                                   {"chatbot": bot_id, "url": "http://169.254.169.254/latest/meta-data/"})
    assert status == 422 and "could not read that page" in html

    # settings: errors next to the fields, then a valid save
    form = {"name": "Acme support", "primary_color": "red", "position": "left", "allowed_origins": "not an origin",
            "starters": "Shipping?\nReturns?", "nudge_0_after_seconds": "abc", "lead_mode": "after_messages",
            "lead_after": "3", "language": "english please"}
    status, html, _ = await c.post(f"/console/chatbots/{bot_id}", form)
    assert status == 422
    for msg in ("A colour like #4f46e5", "One origin per line", "A whole number", "A language code"):
        assert msg in html, msg
    form.update(primary_color="#ff5500", allowed_origins="https://shop.example\nhttps://www.shop.example",
                nudge_0_after_seconds="20", nudge_0_url_pattern="/pricing", nudge_0_text="Questions about <plans>?",
                language="pt-BR", greeting="Olá! <b>Como</b> posso ajudar?")
    status, html, _ = await c.post(f"/console/chatbots/{bot_id}", form)
    assert status == 200 and "Saved." in html
    status, body = await server.call("GET", f"/api/chatbots/{bot_id}", token=owner["access_token"])
    cfg = body["config"]
    assert cfg["branding"]["primary_color"] == "#ff5500" and cfg["branding"]["position"] == "left"
    assert cfg["starters"] == ["Shipping?", "Returns?"] and cfg["nudges"][0]["url_pattern"] == "/pricing"
    assert body["allowed_origins"] == ["https://shop.example", "https://www.shop.example"]
    assert "&lt;b&gt;Como&lt;/b&gt;" in html
    # the preview sandbox serves the draft's public config and never creates a conversation
    preview = re.search(r'id="preview-frame" src="(/console/preview/[^"]+)"', html).group(1)
    status, page_html, resp = await c.get(preview)
    assert status == 200 and 'data-chatbot="' in page_html and resp.headers["X-Frame-Options"] == "SAMEORIGIN"
    async with c.http.post(server.base_url + preview + "/api/widget/sessions", json={}) as r:
        session = await r.json()
        assert r.status == 201 and session["config"]["branding"]["primary_color"] == "#ff5500"
    async with c.http.post(server.base_url + f"/console/chatbots/{bot_id}/preview-url",
                           data={"_csrf": c.csrf, "name": "Acme support", "primary_color": "#00aa00",
                                 "lead_mode": "never"}) as r:
        draft = (await r.json())["url"]
    async with c.http.post(server.base_url + draft + "/api/widget/sessions", json={}) as r:
        assert (await r.json())["config"]["branding"]["primary_color"] == "#00aa00"
    async with c.http.get(server.base_url + preview.replace("/console/preview/", "/console/preview/x")) as r:
        assert r.status == 404  # forged drafts are refused
    status, body = await server.call("GET", "/api/conversations", token=owner["access_token"])
    assert body["conversations"] == []
    # rotate and delete
    status, html, _ = await c.post(f"/console/chatbots/{bot_id}/rotate-key", {})
    assert status == 200 and "New key issued" in html and key not in html
    status, html, _ = await c.post(f"/console/chatbots/{bot_id}/delete", {"confirm": "nope"})
    assert status == 422 and "Type the chatbot" in html
    status, html, _ = await c.post(f"/console/chatbots/{bot_id}/delete", {"confirm": "Acme support"})
    assert status == 200 and "Chatbot deleted" in html


async def test_session_refresh_sign_out_and_cookie_flags(settings, signup):
    import asyncio

    from support.console import ConsoleClient
    from support.server import start_server

    settings.access_token_ttl = 30  # within REFRESH_MARGIN at once: refreshed on every request
    settings.extra["trust_proxy"] = True  # so X-Forwarded-Proto: https marks the cookie Secure
    srv = await start_server(settings)
    c = ConsoleClient(srv.base_url)
    try:
        owner = await signup(srv)
        status, text, _ = await c.get("/console/sign-in")
        token = re.search(r'name="_csrf" value="([^"]+)"', text).group(1)
        async with c.http.post(srv.base_url + "/console/sign-in", allow_redirects=False,
                               data={"email": owner["email"], "password": owner["password"], "_csrf": token}) as r:
            assert r.status == 303
            cookie = r.cookies["parley_console"]
            assert cookie["httponly"] and cookie["path"] == "/console" and cookie["samesite"] == "Lax"
            assert not cookie["secure"]  # plain http here; Secure when the request is https
        https = ConsoleClient(srv.base_url)
        status, text, _ = await https.get("/console/sign-in")
        token2 = re.search(r'name="_csrf" value="([^"]+)"', text).group(1)
        async with https.http.post(srv.base_url + "/console/sign-in", allow_redirects=False,
                                   headers={"X-Forwarded-Proto": "https"},
                                   data={"email": owner["email"], "password": owner["password"], "_csrf": token2}) as r:
            assert r.status == 303 and r.cookies["parley_console"]["secure"]
        await https.close()
        first = c.http.cookie_jar.filter_cookies(__import__("yarl").URL(srv.base_url + "/console/"))["parley_console"].value
        # parallel requests with an expiring access token share one refresh rotation
        results = await asyncio.gather(*[c.get("/console/inbox") for _ in range(6)])
        assert all(status == 200 and "Inbox" in text for status, text, _ in results)
        second = c.http.cookie_jar.filter_cookies(__import__("yarl").URL(srv.base_url + "/console/"))["parley_console"].value
        assert second != first
        status, text, resp = await c.get("/console/leads")
        assert status == 200 and "/console/leads" in str(resp.url)
        # sign out: the cookie goes, and the old cookie no longer works
        status, text, resp = await c.post("/console/sign-out", {})
        assert "/console/sign-in" in str(resp.url) and "You are signed out" in text
        stale = ConsoleClient(srv.base_url)
        stale.http.cookie_jar.update_cookies({"parley_console": second})
        status, text, resp = await stale.get("/console/inbox")
        assert "/console/sign-in" in str(resp.url)
        await stale.close()
    finally:
        await c.close()
        await srv.close()


async def test_invite_sign_up_and_accept(server, signup, console_client):
    owner = await signup(server)
    c = console_client()
    await c.sign_in(owner["email"], owner["password"])
    status, html, _ = await c.post("/console/team/invites", {"email": "newbie@example.com", "role": "agent"})
    link = re.search(r'id="invite-link">([^<]+)<', html).group(1).replace("&amp;", "&")
    path = link[link.index("/console/"):]
    newbie = console_client()
    status, html, _ = await newbie.get(path)
    assert status == 200 and "Create an account" in html
    nxt = re.search(r'href="/console/sign-up\?next=([^"]+)"', html).group(1)
    status, html, _ = await newbie.get(f"/console/sign-up?next={nxt}")
    token = re.search(r'name="_csrf" value="([^"]+)"', html).group(1)
    next_value = re.search(r'name="next" value="([^"]*)"', html).group(1).replace("&amp;", "&")
    status, html, resp = await newbie.post("/console/sign-up", {"_csrf": token, "next": next_value, "name": "New Bie",
                                                               "email": "newbie@example.com", "password": "short"})
    assert status == 422 and "At least 8 characters" in html
    status, html, resp = await newbie.post("/console/sign-up", {"_csrf": token, "next": next_value, "name": "New Bie",
                                                               "email": "newbie@example.com",
                                                               "password": "a good long password"})
    assert status == 200 and "/console/accept-invite" in str(resp.url) and "Join" in html
    newbie.csrf = re.search(r'name="_csrf" value="([^"]+)"', html).group(1)
    invite_token = re.search(r'name="token" value="([^"]+)"', html).group(1)
    status, html, resp = await newbie.post("/console/accept-invite", {"token": invite_token})
    assert status == 200 and "/console/inbox" in str(resp.url)
    status, html, _ = await c.get("/console/team")
    assert "newbie@example.com" in html and "New Bie" in html


async def test_unknown_console_page_is_html(server, signup, console_client):
    owner = await signup(server)
    c = console_client()
    await c.sign_in(owner["email"], owner["password"])
    status, html, resp = await c.get("/console/no-such-page")
    assert status == 404 and resp.content_type == "text/html" and "Not found" in html
    status, html, _ = await c.get("/console/conversations/not-a-uuid")
    assert status == 404 and "Not found" in html
    status, html, resp = await c.get("/console")
    assert status == 200 and str(resp.url).endswith("/console/inbox")
