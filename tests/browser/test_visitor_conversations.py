"""Real Chromium: a visitor starts a new conversation, lists both, and goes back to the first."""
from __future__ import annotations

from browser.test_widget_e2e import _customer_site
from playwright.sync_api import expect
from support.accounts import sign_up


def test_previous_conversations_and_start_new(server_thread, widget_page, widget_build):
    srv = server_thread
    owner = srv.run(sign_up(srv.server, name="Olivia Owner"))
    token = owner["access_token"]
    status, bot = srv.run(srv.server.call("POST", "/api/chatbots", token=token, json={
        "name": "Shop helper", "allowed_origins": [], "config": {"language": "en"}}))
    assert status == 201, bot
    runner, shop = srv.run(_customer_site(srv.base_url, bot["public_key"]))
    srv.run(srv.server.call("PATCH", f"/api/chatbots/{bot['id']}", token=token, json={"allowed_origins": [shop]}))
    key = f"parley:{bot['public_key']}:cid"
    try:
        w = widget_page(shop, "/pricing")
        w.open()
        w.send("First question about sizes")
        expect(w.bubbles("bot").first).to_be_visible(timeout=15_000)
        first = w.page.wait_for_function(f"localStorage.getItem('{key}')").json_value()

        w.q(".pl-fresh").click()
        expect(w.bubbles("visitor")).to_have_count(0)
        assert w.page.evaluate(f"localStorage.getItem('{key}')") is None
        w.send("Second question about delivery")
        expect(w.bubbles("bot").first).to_be_visible(timeout=15_000)
        second = w.page.wait_for_function(f"localStorage.getItem('{key}') !== {first!r}"
                                          f" && localStorage.getItem('{key}')").json_value()
        assert second != first
        status, inbox = srv.run(srv.server.call("GET", "/api/conversations", token=token))
        assert sorted(c["id"] for c in inbox["conversations"]) == sorted([first, second])

        w.q(".pl-hist").click()
        items = w.q(".pl-conv")
        expect(items).to_have_count(2)
        expect(items.first).to_contain_text("Second question")
        items.filter(has_text="First question").click()
        w.expect_bubble("visitor", "First question about sizes")
        expect(w.bubbles("visitor")).to_have_count(1)
        assert w.page.evaluate(f"localStorage.getItem('{key}')") == first
        w.shot("visitor-conversations")
        # The list is the visitor's own: another visitor (fresh storage) sees none of these.
        status, other = srv.run(srv.server.call("POST", "/api/widget/sessions", headers={"Origin": shop},
                                                json={"chatbot_key": bot["public_key"]}))
        status, listed = srv.run(srv.server.call("POST", "/api/widget/conversations", headers={"Origin": shop},
                                                 json={"token": other["token"]}))
        assert status == 200 and listed == {"conversations": []}
        assert w.page.parley_errors == []
    finally:
        srv.run(runner.cleanup())
