"""Real Chromium, real server: page views start no conversation; the first message does; when the
workspace's open-conversation limit is reached the widget still renders, says so and takes a lead."""
from __future__ import annotations

import re

import psycopg
from browser.test_widget_e2e import _customer_site
from playwright.sync_api import expect
from support.accounts import sign_up
from support.browser import WidgetPage, wait_for


def _shop(srv):
    owner = srv.run(sign_up(srv.server, name="Olivia Owner"))
    token = owner["access_token"]
    status, bot = srv.run(srv.server.call("POST", "/api/chatbots", token=token, json={
        "name": "Shop helper", "allowed_origins": [], "config": {"language": "en"}}))
    assert status == 201, bot
    runner, shop = srv.run(_customer_site(srv.base_url, bot["public_key"]))
    status, out = srv.run(srv.server.call("PATCH", f"/api/chatbots/{bot['id']}", token=token,
                                          json={"allowed_origins": [shop]}))
    assert status == 200, out
    return owner, bot, runner, shop


def _inbox(srv, token) -> list[dict]:
    status, out = srv.run(srv.server.call("GET", "/api/conversations", token=token))
    assert status == 200, out
    return out["conversations"]


def test_five_page_loads_create_no_conversation_the_first_message_does(server_thread, widget_page, widget_build):
    srv = server_thread
    owner, bot, runner, shop = _shop(srv)
    try:
        w = widget_page(shop, "/pricing")
        for _ in range(4):
            w.page.reload()
            w.wait_ready()
        w.open()  # opening the chat is not speaking either
        expect(w.q(".pl-human")).to_be_visible()
        assert _inbox(srv, owner["access_token"]) == []

        w.send("Do you ship to Norway?")
        w.expect_bubble("visitor", "Do you ship to Norway?")
        expect(w.bubbles("bot").first).to_be_visible(timeout=15_000)
        key = f"parley:{bot['public_key']}:cid"
        cid = w.page.wait_for_function(f"localStorage.getItem('{key}')").json_value()
        inbox = _inbox(srv, owner["access_token"])
        assert [c["id"] for c in inbox] == [cid]
        # A reload resumes it (no second conversation), history included.
        w.page.reload()
        w.wait_ready().open()
        w.expect_bubble("visitor", "Do you ship to Norway?")
        assert len(_inbox(srv, owner["access_token"])) == 1
        assert w.page.parley_errors == []
    finally:
        srv.run(runner.cleanup())


def test_limit_reached_widget_renders_says_so_and_takes_a_lead(server_thread, widget_page, widget_build):
    srv = server_thread
    owner, _bot, runner, shop = _shop(srv)
    with psycopg.connect(srv.settings.admin_url, autocommit=True) as conn:
        conn.execute("INSERT INTO parley.tenant_limits (tenant_id, max_open_conversations) VALUES (%s, 1)",
                     (owner["tenant_id"],))
    try:
        first = widget_page(shop, "/pricing")
        first.open()
        first.send("First!")
        expect(first.bubbles("bot").first).to_be_visible(timeout=15_000)

        # Another visitor (fresh storage) while the workspace is at its limit.
        other_ctx = first.page.context.browser.new_context(locale="en-US")
        try:
            page = other_ctx.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(shop + "/pricing")
            w = WidgetPage(page).wait_ready().open()
            w.send("Hello?")
            expect(w.bubbles("system").filter(has_text="can't start a new chat")).to_be_visible(timeout=10_000)
            expect(w.bubbles("visitor").last).to_have_class(re.compile(r"\bpl-failed\b"))
            form = w.q("form.pl-card")
            expect(form).to_be_visible()
            form.locator("input[name=name]").fill("Grace")
            form.locator("input[name=email]").fill("grace@example.com")
            form.locator("button[type=submit]").click()
            expect(w.q(".pl-log .pl-sys").last).to_have_text("Thanks, we have your details.")
            w.shot("limit-reached-lead")
            # The form is answered in the page at once; the stored lead follows its frame.
            def stored():
                status, out = srv.run(srv.server.call("GET", "/api/leads", token=owner["access_token"]))
                assert status == 200, out
                return [lead for lead in out["leads"] if lead["email"] == "grace@example.com"]

            leads = wait_for(page, stored, timeout=10, what="the lead")
            assert leads[0]["conversation_id"] is None
            assert len(_inbox(srv, owner["access_token"])) == 1
            assert errors == []
        finally:
            other_ctx.close()
    finally:
        srv.run(runner.cleanup())
