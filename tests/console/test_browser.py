"""The console in a real browser against the real server: live inbox, claim/reply, canned replies."""
from __future__ import annotations

from playwright.sync_api import expect

from console.console_helpers import SCREENSHOTS, Visitor, browser_sign_in, make_chatbot, widget_session
from support import _signup

HOSTILE = "<img src=x onerror=alert(1)>"


def test_live_inbox_claim_reply_note(server_thread, browser):
    srv = server_thread
    owner = srv.run(_signup(srv.server, name="Olivia Owner"))
    bot = srv.run(make_chatbot(srv.server, owner["access_token"], name="Shop helper"))
    context = browser.new_context(viewport={"width": 1400, "height": 860})
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    try:
        # a canned reply to insert later with "/"
        browser_sign_in(page, srv.base_url, owner["email"], owner["password"], "/console/canned")
        page.fill("#f-shortcut", "thanks")
        page.fill("#f-body", "Thanks for waiting, {{ I am on it }}!")
        page.click("form[action='/console/canned'] button[type=submit]")
        expect(page.locator("table")).to_contain_text("/thanks")

        context.grant_permissions(["notifications"], origin=srv.base_url)
        page.goto(f"{srv.base_url}/console/inbox?tab=all")
        expect(page.locator("#live-state")).to_have_attribute("data-state", "live", timeout=10_000)
        page.check("#notify-toggle")  # opt in to desktop notifications + sound
        # a visitor arrives while the inbox is open: it shows up without a reload
        session = srv.run(widget_session(srv.server, bot["public_key"], page_url="https://shop.example/pricing",
                                         locale="pt-PT"))
        visitor = srv.run(Visitor.connect(srv.base_url, session["token"]))
        conv_id = session["conversation_id"]
        srv.run(visitor.say(HOSTILE))
        row = page.locator(f"li.conv[data-id='{conv_id}']")
        expect(row).to_be_visible(timeout=10_000)
        expect(row).to_contain_text(HOSTILE)  # rendered as text
        assert page.locator("#inbox-rows img").count() == 0

        # the visitor asks for a human: the waiting count goes up live
        srv.run(visitor.send({"type": "human"}))
        expect(page.locator("[data-count='waiting']").first).to_have_text("1", timeout=10_000)
        expect(page.locator("#nav-waiting")).to_have_text("1")
        expect(page.locator("body")).to_have_attribute("data-last-alert", conv_id)
        assert page.evaluate("Notification.permission") == "granted"

        row.locator("a").click()
        page.wait_for_url(f"**/console/conversations/{conv_id}*")
        expect(page.locator("#transcript")).to_contain_text(HOSTILE)
        assert page.locator("#transcript img").count() == 0
        expect(page.locator(".visitor")).to_contain_text("https://shop.example/pricing")
        expect(page.locator(".visitor")).to_contain_text("pt-PT")

        page.click("form[data-action='claim'] button")
        expect(page.locator("#conv-status")).to_have_text("With an agent", timeout=10_000)

        # reply, with a canned reply inserted by typing "/"
        box = page.locator("#reply-body")
        box.click()
        box.type("/tha")
        expect(page.locator("#canned-menu")).to_be_visible()
        box.press("Enter")
        expect(box).to_have_value("Thanks for waiting, {{ I am on it }}!")
        page.click("#composer button[value='reply']")
        frame = srv.run(visitor.expect(lambda f: f.get("type") == "message" and f["message"]["author"] == "agent"))
        assert frame["message"]["body"] == "Thanks for waiting, {{ I am on it }}!"
        expect(page.locator("#transcript .msg-agent")).to_contain_text("Thanks for waiting")
        expect(box).to_have_value("")

        # a private note is shown to agents, never to the visitor
        box.fill("Customer seems upset, be gentle")
        page.click("#composer button[value='note']")
        expect(page.locator("#transcript .msg-note")).to_contain_text("be gentle")

        # the visitor answers: it streams into the open transcript
        srv.run(visitor.say("Great, thank you!"))
        expect(page.locator("#transcript .msg-visitor").last).to_contain_text("Great, thank you!", timeout=10_000)

        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "inbox.png"), full_page=True)

        # close, then reopen
        page.click("form[data-action='close'] button")
        expect(page.locator("#conv-status")).to_have_text("Closed", timeout=10_000)
        page.click("form[data-action='reopen'] button")
        expect(page.locator("#conv-status")).to_have_text("With an agent", timeout=10_000)
        assert not any(f.get("type") == "message" and f["message"]["author"] == "note" for f in visitor.frames)
        srv.run(visitor.close())
    finally:
        context.close()
    assert dialogs == []


def test_knowledge_try_question_and_analytics(server_thread, browser):
    import asyncpg

    from console.console_helpers import seed_analytics

    srv = server_thread
    owner = srv.run(_signup(srv.server))
    bot = srv.run(make_chatbot(srv.server, owner["access_token"], name="Demo Co assistant"))

    async def seed():
        conn = await asyncpg.connect(srv.settings.admin_url)
        try:
            return await seed_analytics(conn, owner["tenant_id"], bot["id"])
        finally:
            await conn.close()

    srv.run(seed())
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        browser_sign_in(page, srv.base_url, owner["email"], owner["password"], f"/console/knowledge/{bot['id']}")
        page.fill("#f-title", "Returns policy")
        page.fill("#f-text", "# Returns\n\nYou can return any unused mug within 30 days for a full refund.")
        page.click("form[action$='/text'] button[type=submit]")
        expect(page.locator("#sources")).to_contain_text("Returns policy")
        expect(page.locator("#sources .chunks").first).not_to_have_text("0")
        page.fill("#f-query", "can I return a mug?")
        page.click("#try button[type=submit]")
        expect(page.locator("#passages .passage").first).to_contain_text("within 30 days for a full refund")

        page.goto(f"{srv.base_url}/console/analytics?days=30")
        expect(page.locator("figure.chart svg")).to_have_count(4)
        expect(page.locator("#unanswered-questions")).to_contain_text("do you ship to brazil")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "analytics.png"), full_page=True)
        page.click("#unanswered-questions a")
        expect(page.locator("table")).to_contain_text("Open conversation")
    finally:
        context.close()


def test_chatbot_settings_live_preview(server_thread, browser):
    srv = server_thread
    owner = srv.run(_signup(srv.server))
    bot = srv.run(make_chatbot(srv.server, owner["access_token"], name="Preview bot",
                               config={"greeting": "Hello from the preview", "starters": ["Pricing?"]}))
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        browser_sign_in(page, srv.base_url, owner["email"], owner["password"], f"/console/chatbots/{bot['id']}")
        frame = page.frame_locator("#preview-frame")
        expect(frame.locator("parley-chat .pl-panel")).to_be_visible(timeout=10_000)
        expect(frame.locator("parley-chat .pl-log")).to_contain_text("Hello from the preview")
        first_src = page.get_attribute("#preview-frame", "src")
        page.fill("#f-greeting", "Olá, tudo bem?")
        expect(page.locator("#preview-frame")).not_to_have_attribute("src", first_src, timeout=5000)
        expect(frame.locator("parley-chat .pl-log")).to_contain_text("Olá, tudo bem?", timeout=10_000)
        frame.locator("parley-chat .pl-form textarea").fill("Is this live?")
        frame.locator("parley-chat .pl-form textarea").press("Enter")
        expect(frame.locator("parley-chat .pl-log")).to_contain_text("This is a preview", timeout=10_000)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "chatbot-settings.png"), full_page=True)
    finally:
        context.close()
    status, body = srv.run(srv.server.call("GET", "/api/conversations", token=owner["access_token"]))
    assert body["conversations"] == []  # the preview never creates a conversation
