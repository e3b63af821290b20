"""Issue 15 item 7, reproduced in real Chromium as a user meets it: Leads' "N new" beside a lead a
visitor just left through the widget, and Billing's seat and chatbot counts for a workspace with
several of each (both were reported blank or 0; over plain HTTP they were right)."""
from __future__ import annotations

import re

from playwright.sync_api import expect
from support.accounts import sign_up
from support.browser import SCREENSHOTS, shop_chatbot, wait_for
from support.console import browser_sign_in


def test_leads_and_billing_counts_in_a_browser(server_thread, widget_page, widget_build, browser):
    srv = server_thread
    owner = srv.run(sign_up(srv.server, name="Olivia Owner", plan="starter"))
    token = owner["access_token"]
    srv.run(sign_up(srv.server, join=owner, role="agent", name="Andy Agent"))
    _, runner, shop = shop_chatbot(srv, token, {"language": "en"})
    status, second = srv.run(srv.server.call("POST", "/api/chatbots", token=token, json={"name": "Docs helper"}))
    assert status == 201, second
    try:
        w = widget_page(shop, "/pricing")
        w.open()
        w.q(".pl-human").click()  # nobody online: the widget offers the lead form
        form = w.q("form.pl-card")
        expect(form).to_be_visible(timeout=10_000)
        form.locator("input[name=name]").fill("Ana")
        form.locator("input[name=email]").fill("ana@example.test")
        form.locator("button[type=submit]").click()

        def stored():
            status, out = srv.run(srv.server.call("GET", "/api/leads", token=token))
            return status == 200 and out["leads"]

        wait_for(w.page, stored, timeout=10, what="the lead")
    finally:
        srv.run(runner.cleanup())
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    try:
        browser_sign_in(page, srv.base_url, owner["email"], owner["password"], "/console/leads")
        expect(page.locator("table").get_by_text("ana@example.test")).to_be_visible()
        new = page.locator("a[href='/console/leads?status=new'] .n")
        expect(new).to_have_text("1")
        page.goto(f"{srv.base_url}/console/billing")
        meters = page.locator("#meters tr")
        expect(meters.filter(has_text="Seats").locator("td").nth(1)).to_have_text(re.compile(r"^2\b"))
        expect(meters.filter(has_text="Chatbots").locator("td").nth(1)).to_have_text(re.compile(r"^2\b"))
        page.screenshot(path=str(SCREENSHOTS / "console-billing-counts.png"))
    finally:
        ctx.close()
