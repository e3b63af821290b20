"""Embedding: shadow DOM, sessions, storage, isolation from host CSS, theming, layout, JS API."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect
from support.browser import wait_for
from support.fakes.protocol_double import KEY


def test_renders_in_shadow_dom_with_session_and_hello(double, visit, context):
    w = visit("/")
    page = w.page
    info = page.evaluate("""() => {
        const host = document.querySelector('parley-chat');
        return {shadow: !!host.shadowRoot, lightChildren: host.children.length,
                lightWidget: document.querySelectorAll('.pl, .pl-launch, .pl-panel').length,
                cookie: document.cookie, storage: Object.keys(localStorage)}
    }""")
    assert info["shadow"] and info["lightChildren"] == 0 and info["lightWidget"] == 0
    conv = double.conversation
    assert info["cookie"] == "" and context.cookies() == []
    assert info["storage"] == [f"parley:{KEY}:cid"]
    assert page.evaluate(f"localStorage.getItem('parley:{KEY}:cid')") == conv.id

    path, body, headers = double.session_requests[0]
    assert path == "/api/widget/sessions"
    assert body["chatbot_key"] == KEY and body["conversation_id"] is None
    assert body["page_url"] == double.site_url + "/" and body["locale"] == "en-US" and "referrer" in body
    assert headers["Origin"] == double.site_url and "Cookie" not in headers

    # The token goes in the first frame, not the URL; a fresh page asks for the whole history.
    expect(w.launcher).to_have_attribute("aria-label", "Open chat")
    wait_for(page, lambda: double.hellos, timeout=10, what="the socket's hello")  # the socket opens after the launcher
    assert double.hellos[0]["type"] == "hello"
    assert double.hellos[0]["last_seen_id"] == 0 and double.hellos[0]["token"] in double.tokens

    w.open()
    expect(w.q(".pl-head h2")).to_have_text("Acme support")
    expect(w.q(".pl-greet")).to_contain_text("Hi! Ask me anything about Acme Bikes.")
    expect(w.q(".pl-greet strong")).to_have_text("Acme Bikes")
    expect(w.q(".pl-by")).to_have_text("Powered by Parley")
    assert page.parley_errors == []
    w.shot("embed-open-panel")


def test_demo_page_template(double, widget_page):
    from support.browser import WIDGET

    template = (WIDGET / "demo.html").read_text()
    assert "{{API_BASE}}/widget.js" in template and 'data-chatbot="{{CHATBOT_KEY}}"' in template
    w = widget_page(double.site_url, "/demo")
    expect(w.launcher).to_be_visible()
    w.page.get_by_role("button", name="Ask us anything").click()
    expect(w.panel).to_be_visible()
    w.settle()
    w.send("How much is shipping?")
    w.expect_bubble("bot", "Thanks for asking")
    assert w.page.parley_errors == []
    w.shot("demo-page")


@pytest.mark.browser_context(viewport={"width": 390, "height": 760}, is_mobile=True, has_touch=True)
def test_demo_page_on_a_phone(double, widget_page):
    w = widget_page(double.site_url, "/demo")
    w.shot("demo-page-phone-closed")
    w.open()
    w.shot("demo-page-phone-open")
    assert w.panel.bounding_box()["width"] == 390
