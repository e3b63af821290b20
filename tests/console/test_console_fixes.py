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
