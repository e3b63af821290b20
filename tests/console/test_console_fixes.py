"""Console fixes of issue 15 item 7, each checked on the page a user sees."""
from __future__ import annotations

import re

from support.console import make_chatbot, widget_session


async def test_favicon_is_served(server, console_client):
    c = console_client()
    async with c.http.get(server.base_url + "/favicon.ico") as r:
        body = await r.read()
        assert r.status == 200 and r.content_type == "image/x-icon"
    assert body[:4] == b"\x00\x00\x01\x00" and b"PNG" in body[:40]


async def test_page_counts_are_not_replaced_by_the_navigation(server, signup, console_client):
    owner = await signup(server)
    bot = await make_chatbot(server, owner["access_token"])
    for email in ("ada@example.com", "bob@example.com"):
        session = await widget_session(server, bot["public_key"])
        status, out = await server.call("POST", f"/api/conversations/{session['conversation_id']}/lead",
                                        json={"name": "X", "email": email}, token=owner["access_token"])
        assert status == 201, out
    c = console_client()
    await c.sign_in(owner["email"], owner["password"])
    status, html, _ = await c.get("/console/leads")
    assert status == 200 and re.search(r'<span class="n">2</span> new', html), html
    status, html, _ = await c.get("/console/billing")
    meters = dict(re.findall(r"<tr><td>([^<]+)</td><td>([^<]*)</td>", html))
    assert meters["Seats"] == "1" and meters["Chatbots"] == "1", meters


async def test_hide_powered_by_is_offered_only_where_the_plan_allows_it(server, signup, console_client, owner_conn):
    owner = await signup(server)
    bot = await make_chatbot(server, owner["access_token"])
    c = console_client()
    await c.sign_in(owner["email"], owner["password"])
    status, html, _ = await c.get(f"/console/chatbots/{bot['id']}")
    box = re.search(r'<input type="checkbox" name="hide_powered_by"[^>]*>', html).group(0)
    assert status == 200 and "disabled" in box and 'id="hide-branding-plan"' in html
    await owner_conn.execute("UPDATE parley.tenants SET plan = 'starter' WHERE id = $1", owner["tenant_id"])
    status, html, _ = await c.get(f"/console/chatbots/{bot['id']}")
    box = re.search(r'<input type="checkbox" name="hide_powered_by"[^>]*>', html).group(0)
    assert status == 200 and "disabled" not in box and 'id="hide-branding-plan"' not in html


async def test_chatbot_language_is_a_select(server, signup, console_client):
    owner = await signup(server)
    bot = await make_chatbot(server, owner["access_token"], config={"language": "de"})
    c = console_client()
    await c.sign_in(owner["email"], owner["password"])
    _, html, _ = await c.get(f"/console/chatbots/{bot['id']}")
    menu = re.search(r'<select id="f-language" name="language".*?</select>', html, re.S).group(0)
    options = re.findall(r'<option value="([^"]*)"\s*(selected)?', menu)
    assert [v for v, _ in options] == ["", "en", "es", "fr", "de", "tr"]
    assert [v for v, sel in options if sel] == ["de"]
