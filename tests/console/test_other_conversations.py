"""The inbox shows the visitor's other conversations beside the open one (parley.other_visitor_conversations,
the same list the transcript API returns): the same visitor and chatbot only, with a link to each."""
from __future__ import annotations

import json
import re
import uuid

from support.console import ORIGIN, Visitor, make_chatbot


async def _conversation(server, key: str, visitor_id: uuid.UUID, question: str) -> str:
    status, session = await server.call("POST", "/api/widget/sessions", headers={"Origin": ORIGIN}, json={
        "chatbot_key": key, "visitor_id": str(visitor_id), "start": True, "locale": "en-US"})
    assert status == 201, session
    v = await Visitor.connect(server.base_url, session["token"])
    try:
        await v.say(question)
    finally:
        await v.close()
    return session["conversation_id"]


async def test_the_inbox_lists_the_visitors_other_conversations(server, signup, console_client):
    owner = await signup(server)
    bot = await make_chatbot(server, owner["access_token"])
    ada = uuid.uuid4()
    first = await _conversation(server, bot["public_key"], ada, "Do you ship to Portugal?")
    second = await _conversation(server, bot["public_key"], ada, "Where is my parcel?")
    stranger = await _conversation(server, bot["public_key"], uuid.uuid4(), "Someone else's question")
    c = console_client()
    await c.sign_in(owner["email"], owner["password"])
    status, html, _ = await c.get(f"/console/conversations/{second}")
    assert status == 200
    panel = re.search(r'<ul class="other-convs" id="other-conversations">(.*?)</ul>', html, re.S).group(1)
    assert re.findall(r'href="/console/conversations/([0-9a-f-]+)"', panel) == [first]
    assert "Do you ship to Portugal?" in panel and stranger not in panel
    # the pane fragment console.js refreshes carries it too
    status, body, _ = await c.get(f"/console/conversations/{first}/pane", headers={"Accept": "application/json"})
    assert status == 200 and f'href="/console/conversations/{second}"' in json.loads(body)["html"]
    # a first-time visitor: said so
    status, html, _ = await c.get(f"/console/conversations/{stranger}")
    assert "None: this is the visitor's first conversation." in html
