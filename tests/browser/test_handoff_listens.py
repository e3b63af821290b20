"""Real Chromium, real server, no AI model: the bot does not know, offers a person (with a button),
and the visitor's "yes" in the widget's language hands the conversation to the team."""
from __future__ import annotations

import pytest
from browser.test_widget_e2e import _customer_site
from playwright.sync_api import expect
from support.accounts import sign_up


@pytest.mark.parametrize("lang,question,yes,offer,waiting", [
    ("en", "What is the airspeed of a swallow?", "Yes please", "talk to a person", "Connecting you with a person"),
    ("de", "Wie schnell fliegt eine Schwalbe?", "Ja, gerne", "mit einer Person", "Wir verbinden Sie"),
])
def test_yes_after_the_offer_hands_off(server_thread, widget_page, widget_build, lang, question, yes, offer,
                                       waiting):
    srv = server_thread
    owner = srv.run(sign_up(srv.server, name="Olivia Owner"))
    token = owner["access_token"]
    status, bot = srv.run(srv.server.call("POST", "/api/chatbots", token=token, json={
        "name": "Shop helper", "allowed_origins": [], "config": {"language": lang}}))
    assert status == 201, bot
    runner, shop = srv.run(_customer_site(srv.base_url, bot["public_key"]))
    status, out = srv.run(srv.server.call("PATCH", f"/api/chatbots/{bot['id']}", token=token,
                                          json={"allowed_origins": [shop]}))
    assert status == 200, out
    try:
        w = widget_page(shop, "/pricing")
        w.open()
        w.send(question)
        reply = w.expect_bubble("bot", offer, timeout=15_000)
        expect(reply.locator(".pl-offer")).to_be_visible()
        w.send(yes)
        expect(w.q(".pl-sub")).to_contain_text(waiting, timeout=10_000)
        expect(w.q(".pl-log .pl-offer")).to_have_count(0)  # no button once a person is asked for
        status, inbox = srv.run(srv.server.call("GET", "/api/conversations?status=waiting_human", token=token))
        assert status == 200 and len(inbox["conversations"]) == 1, inbox
        w.shot(f"handoff-yes-{lang}")
        assert w.page.parley_errors == []
    finally:
        srv.run(runner.cleanup())


def test_the_offer_button_hands_off(server_thread, widget_page, widget_build):
    srv = server_thread
    owner = srv.run(sign_up(srv.server, name="Olivia Owner"))
    token = owner["access_token"]
    _status, bot = srv.run(srv.server.call("POST", "/api/chatbots", token=token, json={
        "name": "Shop helper", "allowed_origins": [], "config": {"language": "en"}}))
    runner, shop = srv.run(_customer_site(srv.base_url, bot["public_key"]))
    srv.run(srv.server.call("PATCH", f"/api/chatbots/{bot['id']}", token=token, json={"allowed_origins": [shop]}))
    try:
        w = widget_page(shop, "/pricing")
        w.open()
        w.send("What is the airspeed of a swallow?")
        reply = w.expect_bubble("bot", "talk to a person", timeout=15_000)
        reply.locator(".pl-offer").click()
        expect(w.q(".pl-sub")).to_contain_text("Connecting you with a person", timeout=10_000)
    finally:
        srv.run(runner.cleanup())
