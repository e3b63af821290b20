"""The console in a real browser against the real server: live inbox, claim/reply, canned replies."""
from __future__ import annotations

from playwright.sync_api import expect
from support.accounts import sign_up
from support.browser import customer_site as _shop_site
from support.console import SCREENSHOTS, Visitor, browser_sign_in, make_chatbot, widget_session

HOSTILE = "<img src=x onerror=alert(1)>"


def test_live_inbox_with_the_widget(server_thread, browser):
    """A visitor writes through the real widget on a customer page; the agent sees it live in the
    inbox, claims it and replies; the visitor gets the reply, never the private note."""
    srv = server_thread
    owner = srv.run(sign_up(srv.server, name="Olivia Owner"))
    # the page's origin must be listed: local hosts are never implicitly allowed
    bot = srv.run(make_chatbot(srv.server, owner["access_token"], name="Shop helper", origins=()))
    runner, shop = srv.run(_shop_site(srv.base_url, bot["public_key"]))
    srv.run(srv.server.call("PATCH", f"/api/chatbots/{bot['id']}", json={"allowed_origins": [shop]},
                            token=owner["access_token"]))
    agent_ctx = browser.new_context(viewport={"width": 1400, "height": 860})
    visitor_ctx = browser.new_context(viewport={"width": 420, "height": 760}, locale="pt-PT")
    page = agent_ctx.new_page()
    shop_page = visitor_ctx.new_page()
    dialogs: list[str] = []
    for p in (page, shop_page):
        p.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    try:
        # a canned reply to insert later with "/"
        browser_sign_in(page, srv.base_url, owner["email"], owner["password"], "/console/canned")
        page.fill("#f-shortcut", "thanks")
        page.fill("#f-body", "Thanks for waiting, {{ I am on it }}!")
        page.click("form[action='/console/canned'] button[type=submit]")
        expect(page.locator("table")).to_contain_text("/thanks")

        agent_ctx.grant_permissions(["notifications"], origin=srv.base_url)
        page.goto(f"{srv.base_url}/console/inbox?tab=all")
        expect(page.locator("#live-state")).to_have_attribute("data-state", "live", timeout=10_000)
        page.check("#notify-toggle")  # opt in to desktop notifications + sound

        # the visitor arrives on the shop and writes something hostile through the widget
        shop_page.goto(f"{shop}/pricing")
        widget = shop_page.locator("parley-chat")
        widget.locator(".pl-launch").click()
        widget.locator(".pl-form textarea").fill(HOSTILE)
        widget.locator(".pl-form textarea").press("Enter")
        row = page.locator("li.conv").first  # the tenant's only conversation
        expect(row).to_be_visible(timeout=10_000)  # appears live
        expect(row).to_contain_text("Shop helper")
        assert page.locator("#inbox-rows img").count() == 0
        conv_id = row.get_attribute("data-id")

        # the visitor asks for a human: the waiting count goes up live and the alert fires
        widget.locator(".pl-human").click()
        expect(page.locator("[data-count='waiting']").first).to_have_text("1", timeout=10_000)
        expect(page.locator("#nav-waiting")).to_have_text("1")
        expect(page.locator("body")).to_have_attribute("data-last-alert", conv_id)
        assert page.evaluate("Notification.permission") == "granted"

        row.locator("a").click()
        page.wait_for_url(f"**/console/conversations/{conv_id}*")
        expect(page.locator("#transcript")).to_contain_text(HOSTILE)
        assert page.locator("#transcript img").count() == 0
        expect(page.locator(".visitor")).to_contain_text(f"{shop}/pricing")
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
        expect(page.locator("#transcript .msg-agent")).to_contain_text("Thanks for waiting")
        expect(box).to_have_value("")
        expect(widget.locator(".pl-log .pl-agent").last).to_contain_text("Thanks for waiting, {{ I am on it }}!",
                                                                         timeout=10_000)

        # a private note is shown to agents, never to the visitor
        box.fill("Customer seems upset, be gentle")
        page.click("#composer button[value='note']")
        expect(page.locator("#transcript .msg-note")).to_contain_text("be gentle")

        # the visitor answers: it streams into the open transcript
        widget.locator(".pl-form textarea").type("Great, thank you!")
        expect(page.locator("#typing")).to_be_visible(timeout=10_000)  # the visitor is typing…
        widget.locator(".pl-form textarea").press("Enter")
        expect(page.locator("#transcript .msg-visitor").last).to_contain_text("Great, thank you!", timeout=10_000)
        expect(widget.locator(".pl-log")).not_to_contain_text("be gentle")

        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "inbox.png"), full_page=True)
        shop_page.screenshot(path=str(SCREENSHOTS / "inbox-visitor-widget.png"))

        # close, then reopen
        page.click("form[data-action='close'] button")
        expect(page.locator("#conv-status")).to_have_text("Closed", timeout=10_000)
        page.click("form[data-action='reopen'] button")
        expect(page.locator("#conv-status")).to_have_text("With an agent", timeout=10_000)
    finally:
        agent_ctx.close()
        visitor_ctx.close()
        srv.run(runner.cleanup())
    assert dialogs == []


def test_inbox_with_a_protocol_visitor(server_thread, browser):
    """The same loop over the raw protocol (POST /api/widget/sessions + /ws/visitor)."""
    srv = server_thread
    owner = srv.run(sign_up(srv.server))
    bot = srv.run(make_chatbot(srv.server, owner["access_token"]))
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    try:
        browser_sign_in(page, srv.base_url, owner["email"], owner["password"], "/console/inbox")
        expect(page.locator("#live-state")).to_have_attribute("data-state", "live", timeout=10_000)
        session = srv.run(widget_session(srv.server, bot["public_key"]))
        visitor = srv.run(Visitor.connect(srv.base_url, session["token"]))
        conv_id = session["conversation_id"]
        srv.run(visitor.say("Hello there"))
        row = page.locator(f"li.conv[data-id='{conv_id}']")
        expect(row).to_be_visible(timeout=10_000)
        row.locator("a").click()
        page.fill("#reply-body", "Hi! An agent here.")
        page.click("#composer button[value='reply']")
        frame = srv.run(visitor.expect(lambda f: f.get("type") == "message" and f["message"]["author"] == "agent"))
        assert frame["message"]["body"] == "Hi! An agent here."
        expect(page.locator("#conv-status")).to_have_text("With an agent", timeout=10_000)  # reply claims
        page.fill("#reply-body", "internal: check the order")
        page.click("#composer button[value='note']")
        expect(page.locator("#transcript .msg-note")).to_contain_text("check the order")
        srv.run(visitor.say("thanks!"))
        expect(page.locator("#transcript .msg-visitor").last).to_contain_text("thanks!", timeout=10_000)
        assert not any(f.get("type") == "message" and f["message"]["author"] == "note" for f in visitor.frames)
        srv.run(visitor.close())
    finally:
        context.close()


def test_knowledge_try_question_and_analytics(server_thread, browser):
    import asyncpg
    from support.console import seed_analytics

    srv = server_thread
    owner = srv.run(sign_up(srv.server))
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
    owner = srv.run(sign_up(srv.server))
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
        expect(page.locator("#preview-frame")).not_to_have_attribute("src", first_src, timeout=15_000)
        expect(frame.locator("parley-chat .pl-log")).to_contain_text("Olá, tudo bem?", timeout=15_000)
        frame.locator("parley-chat .pl-form textarea").fill("Is this live?")
        frame.locator("parley-chat .pl-form textarea").press("Enter")
        expect(frame.locator("parley-chat .pl-log")).to_contain_text("This is a preview", timeout=10_000)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "chatbot-settings.png"), full_page=True)
    finally:
        context.close()
    _status, body = srv.run(srv.server.call("GET", "/api/conversations", token=owner["access_token"]))
    assert body["conversations"] == []  # the preview never creates a conversation


def test_phone_width_nav_and_onboarding_step(server_thread, browser):
    """At 375 px the navigation collapses behind a Menu button (links in a column once opened, no
    sideways scrolling); the current onboarding step is legible."""
    srv = server_thread
    owner = srv.run(sign_up(srv.server, name="Pat Phone"))
    ctx = browser.new_context(viewport={"width": 375, "height": 740})
    page = ctx.new_page()
    try:
        browser_sign_in(page, srv.base_url, owner["email"], owner["password"], "/console/onboarding")
        nav, toggle = page.locator("nav.mainnav"), page.locator("button.nav-toggle")
        expect(toggle).to_be_visible()
        expect(nav).to_be_hidden()
        assert page.locator("header.topbar").bounding_box()["height"] < 100  # not six rows of links (was 217 px)
        toggle.click()
        expect(toggle).to_have_attribute("aria-expanded", "true")
        links = page.locator("nav.mainnav a")
        expect(links.first).to_be_visible()
        boxes = [links.nth(i).bounding_box() for i in range(3)]
        assert boxes[0]["x"] == boxes[1]["x"] == boxes[2]["x"] and boxes[0]["y"] < boxes[1]["y"] < boxes[2]["y"]
        assert page.evaluate("document.documentElement.scrollWidth") <= 375  # nothing scrolls sideways
        assert page.evaluate("document.querySelector('nav.mainnav').scrollWidth") <= 375
        page.screenshot(path=str(SCREENSHOTS / "console-phone-nav-open.png"))
        toggle.click()
        expect(nav).to_be_hidden()
        current = page.locator(".steps li[aria-current] a")
        colour, background = page.evaluate(
            """(a) => [getComputedStyle(a).color, getComputedStyle(a.closest('li')).backgroundColor]""",
            current.element_handle())
        assert colour != background, (colour, background)
        # a wide screen shows the navigation and no button
        page.set_viewport_size({"width": 1280, "height": 800})
        expect(nav).to_be_visible()
        expect(toggle).to_be_hidden()
    finally:
        ctx.close()
