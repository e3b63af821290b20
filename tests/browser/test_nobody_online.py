"""Real Chromium: a visitor asks for a person while no member of the team is online (no inbox or
event stream open): the widget says so and offers the lead form; the lead reaches the team. With an
agent's inbox socket open, the same request just waits for the person."""
from __future__ import annotations

import json

from playwright.sync_api import expect
from support.accounts import sign_up
from support.browser import shop_chatbot, wait_for
from support.realtime import agent


def test_nobody_online_offers_the_lead_form(server_thread, widget_page, widget_build):
    srv = server_thread
    owner = srv.run(sign_up(srv.server, name="Olivia Owner"))
    token = owner["access_token"]
    _, runner, shop = shop_chatbot(srv, token, {"language": "en"})
    try:
        w = widget_page(shop, "/pricing")
        w.open()
        w.q(".pl-human").click()
        expect(w.q(".pl-sub")).to_contain_text("Connecting you with a person", timeout=10_000)
        expect(w.q(".pl-log .pl-sys").first).to_have_text(
            "No one from the team is available right now. Leave your details and we will get back to you.")
        form = w.q("form.pl-card")
        expect(form).to_be_visible()
        w.shot("nobody-online")
        # after a reload, still waiting with nobody online: said again, once, with the form
        w.page.reload()
        w.wait_ready().open()
        expect(w.q(".pl-log .pl-sys")).to_have_text(
            ["No one from the team is available right now. Leave your details and we will get back to you."],
            timeout=10_000)
        expect(form).to_be_visible()
        form.locator("input[name=name]").fill("Ana")
        form.locator("input[name=email]").fill("ana@example.test")
        form.locator("button[type=submit]").click()

        def stored():
            status, out = srv.run(srv.server.call("GET", "/api/leads", token=token))
            return status == 200 and [lead for lead in out["leads"] if lead["email"] == "ana@example.test"]

        wait_for(w.page, stored, timeout=10, what="the lead")
        # once the details are in, a reload says it again but does not ask for them again
        w.page.reload()
        w.wait_ready().open()
        expect(w.q(".pl-log .pl-sys")).to_have_text(
            ["No one from the team is available right now. Leave your details and we will get back to you."],
            timeout=10_000)
        expect(form).to_have_count(0)
        # the team still sees the request in the inbox
        status, inbox = srv.run(srv.server.call("GET", "/api/conversations?status=waiting_human", token=token))
        assert status == 200 and len(inbox["conversations"]) == 1, inbox
        assert w.page.parley_errors == []
    finally:
        srv.run(runner.cleanup())


def test_with_an_agent_online_the_visitor_waits(server_thread, widget_page, widget_build):
    srv = server_thread
    owner = srv.run(sign_up(srv.server, name="Olivia Owner"))
    token = owner["access_token"]
    _, runner, shop = shop_chatbot(srv, token, {"language": "en"})
    inbox = srv.run(agent(srv.server, token))  # the console's inbox socket
    try:
        w = widget_page(shop, "/pricing")
        w.open()
        w.q(".pl-human").click()
        expect(w.q(".pl-sub")).to_contain_text("Connecting you with a person", timeout=10_000)
        # the agent saw the request; by then the visitor's status frame has arrived too
        srv.run(inbox.expect_event("human_requested"))
        expect(w.q(".pl-sub")).to_contain_text("Connecting you with a person")
        expect(w.q(".pl-log .pl-sys")).to_have_count(0)
        expect(w.q("form.pl-card")).to_have_count(0)
        assert json.dumps(w.page.parley_errors) == "[]"
    finally:
        srv.run(inbox.close())
        srv.run(runner.cleanup())
