"""Real Chromium: the lead form the chatbot asked for is still there after a reload, until filled in."""
from __future__ import annotations

from browser.test_widget_e2e import _customer_site
from playwright.sync_api import expect
from support.accounts import sign_up
from support.browser import wait_for


def test_lead_form_after_reload(server_thread, widget_page, widget_build):
    srv = server_thread
    owner = srv.run(sign_up(srv.server, name="Olivia Owner"))
    token = owner["access_token"]
    status, bot = srv.run(srv.server.call("POST", "/api/chatbots", token=token, json={
        "name": "Shop helper", "allowed_origins": [],
        "config": {"language": "en", "lead_capture": {"mode": "after_messages", "after": 1}}}))
    assert status == 201, bot
    runner, shop = srv.run(_customer_site(srv.base_url, bot["public_key"]))
    srv.run(srv.server.call("PATCH", f"/api/chatbots/{bot['id']}", token=token, json={"allowed_origins": [shop]}))
    try:
        w = widget_page(shop, "/pricing")
        w.open()
        w.send("Hello")
        form = w.q("form.pl-card")
        expect(form).to_be_visible(timeout=10_000)
        w.page.reload()
        w.wait_ready().open()
        expect(form).to_be_visible(timeout=10_000)
        form.locator("input[name=name]").fill("Ana")
        form.locator("input[name=email]").fill("ana@example.test")
        form.locator("button[type=submit]").click()
        expect(w.q(".pl-log .pl-sys").last).to_have_text("Thanks, we have your details.")
        def stored():
            status, out = srv.run(srv.server.call("GET", "/api/leads", token=token))
            return status == 200 and [lead for lead in out["leads"] if lead["email"] == "ana@example.test"]

        wait_for(w.page, stored, timeout=10, what="the lead")
        cid = w.page.evaluate(f"localStorage.getItem('parley:{bot['public_key']}:cid')")
        w.page.reload()
        w.wait_ready().open()
        w.expect_bubble("visitor", "Hello")
        # Frames arrive in order: once this reply shows, a lead_request sent on resume would have too.
        status, out = srv.run(srv.server.call("POST", f"/api/conversations/{cid}/reply", token=token,
                                              json={"body": "Thanks Ana!", "client_id": "agent-1"}))
        assert status == 201, out
        w.expect_bubble("agent", "Thanks Ana!")
        expect(form).to_have_count(0)
        assert w.page.parley_errors == []
    finally:
        srv.run(runner.cleanup())
