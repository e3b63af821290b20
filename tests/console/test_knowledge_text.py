"""Knowledge in the console: "try a question" says whether the bot would answer or decline and
shows each passage with its page (no raw scores); a pasted-text source can be read and edited."""
from __future__ import annotations

import html as htmllib
import re

from support.console import make_chatbot

SHIPPING = "# Shipping\n\nParcels to Lisbon take 2 days and cost 6 EUR. Parcels to Porto take 3 days."


async def _source(c, base: str) -> str:
    status, html, _ = await c.post(f"{base}/text", {"title": "Shipping policy", "text": SHIPPING})
    assert status == 200, html[:500]
    return re.search(r'href="/console/knowledge/sources/([0-9a-f-]{36})/text"', html).group(1)


async def test_try_a_question_says_answer_or_decline(server, signup, console_client):
    owner = await signup(server)
    bot = await make_chatbot(server, owner["access_token"])
    c = console_client()
    await c.sign_in(owner["email"], owner["password"])
    base = f"/console/knowledge/{bot['id']}"
    await _source(c, base)
    status, html, _ = await c.post(f"{base}/try", {"query": "how long does shipping to Lisbon take?"})
    assert status == 200
    verdict = htmllib.unescape(re.sub(r"<[^>]+>", "", re.search(r'<p class="verdict[^"]*" id="verdict">(.*?)</p>',
                                                                 html, re.S).group(1)))
    assert verdict.startswith("The bot would answer")
    assert "Parcels to Lisbon take 2 days" in html and "From a text or file source" in html
    assert "score" not in html.split('id="try"')[1].split("</section>")[0]
    status, html, _ = await c.post(f"{base}/try", {"query": "do you sell helicopters on credit?"})
    assert status == 200 and 'class="verdict verdict-decline"' in html
    assert "The bot would decline" in html and "offer a person" in html
    status, out = await server.call("POST", f"/api/chatbots/{bot['id']}/knowledge/search", token=owner["access_token"],
                                    json={"query": "do you sell helicopters on credit?"})
    assert status == 200 and out["answerable"] is False


async def test_a_text_source_is_read_and_edited(server, signup, console_client, owner_conn):
    owner = await signup(server)
    bot = await make_chatbot(server, owner["access_token"])
    c = console_client()
    await c.sign_in(owner["email"], owner["password"])
    base = f"/console/knowledge/{bot['id']}"
    source_id = await _source(c, base)
    status, html, _ = await c.get(f"/console/knowledge/sources/{source_id}/text")
    assert status == 200 and htmllib.unescape(re.search(r'<textarea id="f-text"[^>]*>(.*?)</textarea>', html,
                                                        re.S).group(1)) == SHIPPING
    assert 'id="text-rebuilt"' not in html
    edited = SHIPPING.replace("2 days", "1 day")
    status, html, resp = await c.post(f"/console/knowledge/sources/{source_id}/text",
                                      {"title": "Shipping times", "text": edited})
    assert status == 200 and str(resp.url).endswith(f"{base}?done=edited") and "Shipping times" in html
    status, out = await server.call("GET", f"/api/knowledge/sources/{source_id}/text", token=owner["access_token"])
    assert status == 200 and out == {"title": "Shipping times", "text": edited, "exact": True}
    status, html, _ = await c.post(f"{base}/try", {"query": "how long does shipping to Lisbon take?"})
    assert "Parcels to Lisbon take 1 day" in html
    status, html, _ = await c.post(f"/console/knowledge/sources/{source_id}/text", {"title": "x", "text": "  "})
    assert status == 422 and "Paste some text" in html
    # the source list does not carry the text
    status, listed = await server.call("GET", f"/api/chatbots/{bot['id']}/knowledge/sources",
                                       token=owner["access_token"])
    assert status == 200 and "Parcels" not in str(listed)
    # a source added before texts were kept: rebuilt from its passages, and said so
    await owner_conn.execute("UPDATE parley.knowledge_sources SET options = options - 'text' WHERE id = $1",
                             source_id)
    status, html, _ = await c.get(f"/console/knowledge/sources/{source_id}/text")
    assert status == 200 and 'id="text-rebuilt"' in html and "Parcels to Lisbon take 1 day" in html


async def test_agents_read_only_and_other_kinds_refused(server, signup, console_client):
    owner = await signup(server)
    agent = await signup(server, join=owner, role="agent")
    bot = await make_chatbot(server, owner["access_token"])
    c = console_client()
    await c.sign_in(owner["email"], owner["password"])
    source_id = await _source(c, f"/console/knowledge/{bot['id']}")
    a = console_client()
    await a.sign_in(agent["email"], agent["password"])
    status, html, _ = await a.get(f"/console/knowledge/sources/{source_id}/text")
    assert status == 200 and '<pre class="source-text" id="source-text">' in html and "<textarea" not in html
    status, html, _ = await a.post(f"/console/knowledge/sources/{source_id}/text", {"title": "x", "text": "pwned"})
    assert status == 403
    other = await signup(server)
    status, out = await server.call("GET", f"/api/knowledge/sources/{source_id}/text", token=other["access_token"])
    assert status == 404, out
