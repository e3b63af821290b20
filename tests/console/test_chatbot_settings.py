"""Chatbot settings in the console: languages with a greeting and starters per language, the
sections menu, Save always reachable and the preview kept in view (real Chromium)."""
from __future__ import annotations

import re

from playwright.sync_api import expect
from support.accounts import sign_up
from support.console import browser_sign_in, make_chatbot


def _form(html: str) -> dict:
    """The settings form's fields as the page shows them (inputs and textareas)."""
    out = dict(re.findall(r'<input id="f-[^"]+" name="([^"]+)" type="[^"]+" value="([^"]*)"', html))
    out.update(re.findall(r'<textarea id="f-[^"]+" name="([^"]+)"[^>]*>([^<]*)</textarea>', html, re.S))
    return out


async def test_languages_and_texts_per_language_are_edited_and_saved(server, signup, console_client):
    owner = await signup(server)
    bot = await make_chatbot(server, owner["access_token"])
    c = console_client()
    await c.sign_in(owner["email"], owner["password"])
    status, html, _ = await c.get(f"/console/chatbots/{bot['id']}")
    assert status == 200
    fields = _form(html)
    for code in ("en", "es", "fr", "de", "tr"):
        assert f"text_{code}_greeting" in fields and f"text_{code}_starters" in fields
    fields.update({"languages": "en, de", "language": "", "text_de_greeting": "Hallo! Wie können wir helfen?",
                   "text_de_starters": "Öffnungszeiten\nVersand"})
    status, html, resp = await c.post(f"/console/chatbots/{bot['id']}", fields)
    assert status == 200 and "done=saved" in str(resp.url), html[:2000]
    status, stored = await server.call("GET", f"/api/chatbots/{bot['id']}", token=owner["access_token"])
    assert stored["config"]["languages"] == ["en", "de"]
    assert stored["config"]["texts"] == {"de": {"greeting": "Hallo! Wie können wir helfen?",
                                                "starters": ["Öffnungszeiten", "Versand"]}}
    shown = _form(html)
    assert shown["languages"] == "en, de" and shown["text_de_starters"].strip() == "Öffnungszeiten\nVersand"
    assert re.search(r'<details class="lang-texts" id="texts-de"\s+open>', html)
    # a language the widget has no catalog for gets its own texts too
    fields.update({"languages": "en, de, pt-BR", "text_pt-BR_greeting": "Olá!"})
    status, html, resp = await c.post(f"/console/chatbots/{bot['id']}", fields)
    assert status == 200 and "done=saved" in str(resp.url)
    status, stored = await server.call("GET", f"/api/chatbots/{bot['id']}", token=owner["access_token"])
    assert stored["config"]["texts"]["pt-BR"] == {"greeting": "Olá!"}
    assert 'name="text_pt-BR_greeting"' in html


async def test_bad_languages_and_texts_are_shown_on_their_fields(server, signup, console_client):
    owner = await signup(server)
    bot = await make_chatbot(server, owner["access_token"])
    c = console_client()
    await c.sign_in(owner["email"], owner["password"])
    _, html, _ = await c.get(f"/console/chatbots/{bot['id']}")
    fields = _form(html)
    status, html, _ = await c.post(f"/console/chatbots/{bot['id']}", {**fields, "languages": "english!"})
    assert status == 422
    assert re.search(r'id="e-languages">Language codes separated by commas', html)
    status, html, _ = await c.post(f"/console/chatbots/{bot['id']}", {**fields, "text_de_greeting": "Hallo\u202e"})
    assert status == 422 and 'id="e-text_de_greeting"' in html


def test_sections_save_reachable_and_preview_in_view(server_thread, browser):
    srv = server_thread
    owner = srv.run(sign_up(srv.server, name="Sam Settings"))
    bot = srv.run(make_chatbot(srv.server, owner["access_token"], name="Shop helper"))
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    try:
        browser_sign_in(page, srv.base_url, owner["email"], owner["password"], f"/console/chatbots/{bot['id']}")
        menu = page.locator("nav.section-nav a")
        expect(menu).to_have_text(["Assistant", "Languages", "Branding", "Proactive", "Handoff & leads", "Sites",
                                   "Template, embed, key"])
        save = page.locator("#chatbot-form .save-bar button[type=submit]")
        preview = page.locator("#preview-frame")
        for section in ("#s-assistant", "#s-handoff", "#s-sites"):
            page.locator(f"nav.section-nav a[href='{section}']").click()
            page.wait_for_function(
                "(s) => { const r = document.querySelector(s).getBoundingClientRect();"
                " return r.top >= 0 && r.top < innerHeight - 100; }", arg=section)
            for el in (save, preview):
                box = el.bounding_box()
                assert box["y"] >= 0 and box["y"] + min(box["height"], 100) <= 800, (section, box)
        page.locator("#f-miss_threshold").fill("3")
        save.click()
        page.wait_for_url("**done=saved*")
        expect(page.locator("#f-miss_threshold")).to_have_value("3")
    finally:
        ctx.close()
