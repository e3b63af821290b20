"""Real Chromium with a German locale, a chatbot with no language set (= auto): the widget speaks
German, and so does the bot, which takes the visitor's language from the conversation."""
from __future__ import annotations

import pytest
from browser.test_widget_e2e import _customer_site
from playwright.sync_api import expect
from support.accounts import sign_up
from support.browser import shop_chatbot


@pytest.mark.browser_context(locale="de-DE")
def test_de_browser_gets_german_with_auto(server_thread, widget_page, widget_build):
    srv = server_thread
    owner = srv.run(sign_up(srv.server, name="Olivia Owner"))
    token = owner["access_token"]
    status, bot = srv.run(srv.server.call("POST", "/api/chatbots", token=token, json={
        "name": "Shop helper", "allowed_origins": [], "config": {"language": "auto"}}))
    assert status == 201, bot
    runner, shop = srv.run(_customer_site(srv.base_url, bot["public_key"]))
    srv.run(srv.server.call("PATCH", f"/api/chatbots/{bot['id']}", token=token, json={"allowed_origins": [shop]}))
    try:
        w = widget_page(shop, "/pricing")
        assert w.page.evaluate("navigator.language") == "de-DE"
        w.open()
        expect(w.q(".pl")).to_have_attribute("lang", "de")
        expect(w.input).to_have_attribute("placeholder", "Nachricht eingeben…")
        w.send("Wie schnell fliegt eine Schwalbe?")
        w.expect_bubble("bot", "Das weiß ich leider nicht", timeout=15_000)
        w.shot("language-auto-de")
    finally:
        srv.run(runner.cleanup())




TWO = {"languages": ["en", "de"], "language": "auto", "greeting": "Hi! Ask us anything.", "starters": ["Opening hours"],
       "texts": {"de": {"greeting": "Hallo! Fragen Sie uns.", "starters": ["Öffnungszeiten"]}}}


@pytest.mark.parametrize("config,starters,question", [
    # a German browser gets the chatbot's German greeting and starters
    pytest.param(TWO, ["Öffnungszeiten"], None, marks=pytest.mark.browser_context(locale="de-DE"), id="de-DE"),
    # a language the chatbot does not speak gets its first one, and so does the bot's own text
    pytest.param({**TWO, "languages": ["de", "en"]}, ["Öffnungszeiten"], "Quelle est la vitesse d'une hirondelle ?",
                 marks=pytest.mark.browser_context(locale="fr-FR"), id="fr-FR"),
])
def test_the_greeting_and_starters_of_the_visitors_language(server_thread, widget_page, widget_build, config,
                                                             starters, question):
    srv = server_thread
    owner = srv.run(sign_up(srv.server, name="Olivia Owner"))
    _, runner, shop = shop_chatbot(srv, owner["access_token"], config)
    try:
        w = widget_page(shop, "/pricing")
        w.open()
        expect(w.q(".pl")).to_have_attribute("lang", "de")
        expect(w.q(".pl-greet")).to_have_text("Hallo! Fragen Sie uns.")
        expect(w.q(".pl-chips .pl-chip")).to_have_text(starters)
        if question:
            w.send(question)
            w.expect_bubble("bot", "Das weiß ich leider nicht", timeout=15_000)
        w.shot(f"language-greeting-{w.page.evaluate('navigator.language')}")
    finally:
        srv.run(runner.cleanup())
