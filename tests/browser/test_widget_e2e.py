"""The real widget against the real Parley server (database, /api/widget/*, /ws/visitor, agent API).

A customer page on its own origin embeds `/widget.js`; the visitor asks a question and gets the
bot's answer, asks for a human, an agent replies through the API, a reload keeps the
conversation, and a network drop loses nothing (what was written while offline arrives once).
"""
from __future__ import annotations

import re
import uuid

from playwright.sync_api import expect
from support.accounts import sign_up
from support.browser import customer_site as _customer_site


def test_visitor_journey_against_the_real_server(server_thread, widget_page, widget_build):
    srv = server_thread
    owner = srv.run(sign_up(srv.server, name="Olivia Owner"))
    token = owner["access_token"]
    status, bot = srv.run(srv.server.call("POST", "/api/chatbots", token=token, json={
        "name": "Shop helper", "allowed_origins": [], "config": {}}))
    assert status == 201, bot
    runner, shop = srv.run(_customer_site(srv.base_url, bot["public_key"]))
    status, out = srv.run(srv.server.call("PATCH", f"/api/chatbots/{bot['id']}", token=token,
                                          json={"allowed_origins": [shop]}))
    assert status == 200, out
    try:
        w = widget_page(shop, "/pricing")
        page = w.page
        # The widget's script came from the server (with CORS), the session from /api/widget/sessions:
        # a visitor id, and no conversation until the visitor speaks.
        vid = page.evaluate(f"localStorage.getItem('parley:{bot['public_key']}:vid')")
        assert re.fullmatch(r"[0-9a-f-]{36}", vid)
        assert page.evaluate(f"localStorage.getItem('parley:{bot['public_key']}:cid')") is None
        assert page.context.cookies() == []

        w.open()
        w.send("What are your opening hours?")
        w.expect_bubble("visitor", "What are your opening hours?")
        cid = page.wait_for_function(f"localStorage.getItem('parley:{bot['public_key']}:cid')").json_value()
        assert re.fullmatch(r"[0-9a-f-]{36}", cid)
        # Without an LLM or knowledge the bot still answers (extractive or "I don't know").
        expect(w.bubbles("bot").first).to_be_visible(timeout=15_000)

        w.q(".pl-human").click()
        expect(w.q(".pl-sub")).not_to_be_empty(timeout=10_000)

        status, msg = srv.run(srv.server.call("POST", f"/api/conversations/{cid}/reply", token=token,
                                              json={"body": "Hi, Olivia here. We open at **9:00**.",
                                                    "client_id": str(uuid.uuid4())}))
        assert status == 201, msg
        agent = w.expect_bubble("agent", "Olivia here")
        expect(agent.locator("strong")).to_have_text("9:00")
        w.shot("e2e-agent-replied")

        # Reload: same conversation, history replayed once.
        page.reload()
        w.wait_ready().open()
        w.expect_bubble("agent", "Olivia here")
        expect(w.bubbles("visitor")).to_have_count(1)
        expect(w.bubbles("agent")).to_have_count(1)
        assert page.evaluate(f"localStorage.getItem('parley:{bot['public_key']}:cid')") == cid

        # Network drop: the visitor writes while offline, the agent writes meanwhile.
        page.context.set_offline(True)
        page.evaluate("window.dispatchEvent(new Event('offline'))")
        expect(w.q(".pl-state")).not_to_be_empty()
        w.send("Sent while offline")
        srv.run(srv.server.call("POST", f"/api/conversations/{cid}/reply", token=token,
                                json={"body": "Anything else?", "client_id": str(uuid.uuid4())}))
        page.context.set_offline(False)
        page.evaluate("window.dispatchEvent(new Event('online'))")
        expect(w.q(".pl-state")).to_be_empty(timeout=15_000)
        w.expect_bubble("agent", "Anything else?")
        expect(w.bubbles("visitor").last).not_to_have_class(re.compile(r"\bpl-pending\b"), timeout=10_000)
        status, transcript = srv.run(srv.server.call("GET", f"/api/conversations/{cid}", token=token))
        assert status == 200, transcript
        bodies = [m["body"] for m in transcript["messages"] if m["author"] == "visitor"]
        assert bodies.count("Sent while offline") == 1
        expect(w.bubbles("visitor").filter(has_text="Sent while offline")).to_have_count(1)
        expect(w.bubbles("agent")).to_have_count(2)
        assert page.parley_errors == []
        w.shot("e2e-after-reconnect")
    finally:
        srv.run(runner.cleanup())


def test_streamed_grounded_answer_against_the_real_server(server_thread, widget_page, widget_build, monkeypatch):
    """With an LLM configured, the visitor sees the answer grow in one bubble, then the stored reply."""
    from support.fakes.llm_servers import FakeOpenAIServer, Reply

    srv = server_thread
    fake = FakeOpenAIServer(default_reply=Reply.text("We open at nine every weekday [1].", delay=0.35))
    srv.run(fake.start())
    monkeypatch.setenv("PARLEY_LLM", "openai")
    monkeypatch.setenv("PARLEY_LLM_URL", fake.base_url)
    monkeypatch.setenv("PARLEY_LLM_KEY", "test-key")
    monkeypatch.setenv("PARLEY_LLM_MODEL", "fake-model")
    owner = srv.run(sign_up(srv.server, name="Olivia Owner"))
    token = owner["access_token"]
    status, bot = srv.run(srv.server.call("POST", "/api/chatbots", token=token, json={
        "name": "Shop helper", "allowed_origins": [], "config": {"language": "en"}}))
    assert status == 201, bot
    status, src = srv.run(srv.server.call(
        "POST", f"/api/chatbots/{bot['id']}/knowledge/sources", token=token,
        json={"kind": "text", "title": "Opening hours",
              "text": "# Opening hours\n\nThe shop opens at nine in the morning every weekday and closes at six."}))
    assert status == 201, src
    runner, shop = srv.run(_customer_site(srv.base_url, bot["public_key"]))
    status, out = srv.run(srv.server.call("PATCH", f"/api/chatbots/{bot['id']}", token=token,
                                          json={"allowed_origins": [shop]}))
    assert status == 200, out
    try:
        w = widget_page(shop, "/pricing")
        w.open()
        w.send("When do you open?")
        # Mid-stream: the bot bubble holds the first words but not yet the last ones.
        last_bot = ("(r) => { const b = r.querySelectorAll('.pl-log .pl-m.pl-bot:not(.pl-greet)');"
                    " return b.length ? b[b.length - 1].textContent : ''; }")
        seen_partial = False
        for _ in range(300):  # polls every 50 ms for at most 15 s; chunks arrive every 350 ms
            text = w.eval(last_bot)
            if "We open" in text and "weekday" not in text:
                seen_partial = True
                break
            if "weekday" in text:
                break
            w.page.wait_for_timeout(50)
        assert seen_partial, "the answer never showed up part-way through (not streamed)"
        w.expect_bubble("bot", "every weekday")
        # The last delta can land before the reply is stored; the stored message replaces the
        # streaming bubble, so wait for that before reading the transcript.
        expect(w.q(".pl-log .pl-streaming")).to_have_count(0, timeout=10_000)
        w.shot("e2e-streamed-answer")
        expect(w.bubbles("bot").filter(has_text="every weekday")).to_have_count(1)
        assert len(fake.requests) == 1
        cid = w.page.evaluate(f"localStorage.getItem('parley:{bot['public_key']}:cid')")
        status, transcript = srv.run(srv.server.call("GET", f"/api/conversations/{cid}", token=token))
        replies = [m for m in transcript["messages"] if m["author"] == "bot"]
        assert len(replies) == 1 and "every weekday" in replies[0]["body"]
        assert replies[0]["meta"].get("stream_id")
    finally:
        srv.run(runner.cleanup())
        srv.run(fake.close())
