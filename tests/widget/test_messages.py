"""Messages: sending, streaming, markdown-lite safety, agents, system notes, typing, unread, dedupe."""
from __future__ import annotations

import re

from playwright.sync_api import expect
from support.browser import wait_for


def test_send_gets_streamed_bot_reply_with_citations_and_thumbs(double, visit):
    w = visit("/").open()
    w.send("What are your opening hours?")
    mine = w.expect_bubble("visitor", "What are your opening hours?")
    reply = w.expect_bubble("bot", "Thanks for asking! See our docs.")
    expect(reply.locator(".pl-b strong")).to_have_text("our docs")
    expect(reply.locator(".pl-cites a")).to_have_attribute("href", "https://example.com/docs")
    expect(reply.locator(".pl-cites a")).to_have_text("Docs")
    expect(reply.locator(".pl-fb button")).to_have_count(2)
    expect(w.bubbles("bot")).to_have_count(1)
    expect(mine).not_to_have_class(re.compile("pl-pending"))
    expect(w.q(".pl-chips")).to_be_hidden()  # starters go away once the visitor has spoken
    sent = double.frames_of("message")
    assert len(sent) == 1 and sent[0]["body"] == "What are your opening hours?"
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", sent[0]["client_id"])

    reply.locator(".pl-up").click()
    wait_for(w.page, lambda: double.frames_of("feedback"), what="feedback frame")
    bot_id = double.conversation.messages[-1]["id"]
    assert double.frames_of("feedback") == [{"type": "feedback", "message_id": bot_id, "value": "up"}]
    expect(reply.locator(".pl-up")).to_have_attribute("aria-pressed", "true")
    expect(reply.locator(".pl-down")).to_be_disabled()
    w.shot("messages-streamed-reply")


def test_stream_grows_one_bubble_and_final_message_replaces_it(double, visit):
    double.auto_reply = False
    w = visit("/").open()
    w.send("hello")
    w.expect_bubble("visitor", "hello")
    double.push({"type": "typing", "author": "bot", "on": True})
    expect(w.q(".pl-typing")).to_be_visible()
    expect(w.q(".pl-typing")).to_have_text("Typing…")
    double.push({"type": "stream", "stream_id": "s1", "delta": "Our shop opens "})
    streaming = w.q(".pl-m.pl-streaming")
    expect(streaming).to_have_count(1)
    expect(streaming.locator(".pl-b")).to_have_text("Our shop opens ")
    expect(w.q(".pl-typing")).to_be_hidden()
    expect(w.q(".pl-log")).to_have_attribute("aria-busy", "true")
    double.push({"type": "stream", "stream_id": "s1", "delta": "at **9am**"})
    expect(streaming.locator(".pl-b")).to_have_text("Our shop opens at 9am")
    expect(streaming.locator(".pl-b strong")).to_have_text("9am")
    expect(w.bubbles("bot")).to_have_count(1)
    w.shot("messages-streaming")

    double.post("bot", "Our shop opens at **9am** on weekdays [1].", stream_id="s1",
                citations=[{"n": 1, "title": "Opening hours", "url": "https://acme.example/hours"},
                           {"n": 2, "title": "Evil", "url": "javascript:alert(1)"}])
    final = w.bubbles("bot")
    expect(final).to_have_count(1)
    expect(w.q(".pl-m.pl-streaming")).to_have_count(0)
    expect(final.locator(".pl-b")).to_have_text("Our shop opens at 9am on weekdays [1].")
    expect(final.locator(".pl-cites li")).to_have_count(2)
    expect(final.locator(".pl-cites a")).to_have_count(1)  # the javascript: citation is text
    expect(final.locator(".pl-cites li").nth(1)).to_have_text("Evil")
    expect(w.q(".pl-log")).to_have_attribute("aria-busy", "false")
    # A late chunk of a finished stream does not resurrect the bubble.
    double.push({"type": "stream", "stream_id": "s1", "delta": "late"})
    # Frames are handled in order: once a later message is shown, the late chunk has been handled.
    double.post("agent", "after the late chunk", author_name="Dana")
    w.expect_bubble("agent", "after the late chunk")
    expect(w.bubbles("bot")).to_have_count(1)
    expect(final.locator(".pl-b")).to_have_text("Our shop opens at 9am on weekdays [1].")


HOSTILE_BODIES = [
    '<img src=x onerror=alert(1)> hi',
    '[click me](javascript:alert(1)) and [ok](https://acme.example/ok)',
    '<script>alert(2)</script>**bold** <a href="javascript:alert(3)">x</a>',
    '[data](data:text/html,<script>alert(4)</script>) [vb](JaVaScRiPt:alert(5)) [rel](/relative)',
]


def test_hostile_markup_renders_as_text(double, visit):
    dialogs = []
    double.auto_reply = False
    w = visit("/")
    w.page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    w.open()
    for body in HOSTILE_BODIES:
        double.post("agent", body, author_name="<b>Eve</b>")
    w.send('<img src=x onerror=alert(6)> [x](javascript:alert(7))')
    w.expect_bubble("visitor", "<img src=x onerror=alert(6)>")
    expect(w.bubbles("agent")).to_have_count(4)
    w.page.wait_for_timeout(200)
    assert dialogs == []
    log = w.q(".pl-log")
    expect(log.locator("img")).to_have_count(0)
    expect(log.locator("script")).to_have_count(0)
    agent = w.bubbles("agent")
    expect(agent.nth(0).locator(".pl-b")).to_have_text("<img src=x onerror=alert(1)> hi")
    expect(agent.nth(1).locator(".pl-b")).to_have_text("[click me](javascript:alert(1)) and ok")
    expect(agent.nth(2).locator(".pl-b")).to_have_text('<script>alert(2)</script>bold <a href="javascript:alert(3)">x</a>')
    expect(agent.nth(0).locator(".pl-name")).to_have_text("<b>Eve</b>")
    hrefs = log.locator("a").evaluate_all("els => els.map(a => a.href)")
    assert hrefs == ["https://acme.example/ok"]
    assert all(a.startswith(("https:", "http:", "mailto:")) for a in hrefs)
    assert log.locator("a").first.get_attribute("rel") == "noopener noreferrer nofollow"
    assert log.locator("a").first.get_attribute("target") == "_blank"
    w.shot("messages-hostile-markup")


def test_markdown_lite(double, visit):
    w = visit("/").open()
    double.post("bot", "Intro with *italic* and _also_ and `code`\n\n- one\n- **two**\n\n1. first\n2. second\n"
                       "Visit https://acme.example/a?b=1. or mail [us](mailto:help@acme.example)\nsnake_case_word")
    b = w.bubbles("bot").last.locator(".pl-b")
    expect(b.locator("em")).to_have_text(["italic", "also"])
    expect(b.locator("code")).to_have_text("code")
    expect(b.locator("ul > li")).to_have_text(["one", "two"])
    expect(b.locator("ul strong")).to_have_text("two")
    expect(b.locator("ol > li")).to_have_text(["first", "second"])
    expect(b.locator("a")).to_have_count(2)
    assert b.locator("a").nth(0).get_attribute("href") == "https://acme.example/a?b=1"
    assert b.locator("a").nth(1).get_attribute("href") == "mailto:help@acme.example"
    expect(b).to_contain_text("snake_case_word")
    assert b.get_attribute("dir") == "auto"
    # Right-to-left text lays itself out right to left inside the (left-to-right) widget.
    double.post("agent", "مرحبا، كيف يمكنني مساعدتك؟", author_name="سارة")
    rtl = w.bubbles("agent").last.locator(".pl-b")
    expect(rtl).to_be_visible()
    assert rtl.evaluate("el => getComputedStyle(el).direction") == "rtl"
    assert b.evaluate("el => getComputedStyle(el).direction") == "ltr"


def test_agent_and_system_messages_status_and_read(double, visit):
    w = visit("/").open()
    w.send("I need a person")
    w.expect_bubble("bot", "Thanks for asking")
    w.q(".pl-human").click()
    wait_for(w.page, lambda: double.frames_of("human"), what="human frame")
    expect(w.q(".pl-sub")).to_have_text("Connecting you with a person…")
    expect(w.q(".pl-human")).to_be_hidden()
    double.set_status("human")
    double.post("system", "Dana joined the conversation")
    double.push({"type": "typing", "author": "agent", "on": True})
    expect(w.q(".pl-typing")).to_be_visible()
    double.post("agent", "Hi, I'm Dana. How can I help?", author_name="Dana")
    expect(w.q(".pl-typing")).to_be_hidden()
    expect(w.q(".pl-sub")).to_have_text("Chatting with a person")
    expect(w.bubbles("system").last).to_have_text("Dana joined the conversation")
    agent = w.expect_bubble("agent", "How can I help?")
    expect(agent.locator(".pl-name")).to_have_text("Dana")
    expect(agent.locator(".pl-fb")).to_have_count(0)  # thumbs are for bot replies only
    visitor_id = double.conversation.messages[0]["id"]
    double.push({"type": "read", "message_id": visitor_id})
    expect(w.bubbles("visitor").first.locator(".pl-seen")).to_have_text("Seen")
    # The widget reports what the visitor has read.
    last_id = double.conversation.messages[-1]["id"]
    wait_for(w.page, lambda: any(f["message_id"] == last_id for f in double.frames_of("read")), what="read frame")
    # An unstored notice (id null) is shown too.
    double.push({"type": "message", "message": {"id": None, "author": "system", "body": "Slow down",
                                                 "client_id": None, "created_at": "2026-01-01T00:00:00Z"}})
    expect(w.bubbles("system").last).to_have_text("Slow down")
    w.shot("messages-agent")


def test_unread_badge_and_message_events(double, visit):
    w = visit("/")
    # (not ending in the unsubscribe function: Playwright would call a returned function)
    w.page.evaluate("window.__got = []; Parley.on('message', m => window.__got.push(m.body)); 0")
    # The widget counts nothing as unread for 800 ms after its socket's first "ready" (the replay of
    # what the visitor already saw): wait for the socket, then past that window.
    wait_for(w.page, lambda: double.connected, what="the widget's socket")
    w.page.wait_for_timeout(900)
    double.post("agent", "Are you still there?", author_name="Dana")
    double.post("agent", "We can help with sizing.", author_name="Dana")
    badge = w.q(".pl-badge")
    expect(badge).to_have_text("2")
    expect(w.launcher).to_have_attribute("aria-label", "Open chat (2 unread)")
    w.shot("messages-unread-badge")
    assert w.page.evaluate("window.__got") == ["Are you still there?", "We can help with sizing."]
    w.open()
    expect(badge).to_be_hidden()
    expect(w.launcher).to_have_attribute("aria-label", "Close chat")


def test_duplicates_are_shown_once(double, visit):
    w = visit("/").open()
    msg = double.post("agent", "Only once", author_name="Dana")
    double.push({"type": "message", "message": msg})
    double.push({"type": "message", "message": msg})
    double.post("agent", "Then this", author_name="Dana")  # handled after both copies
    w.expect_bubble("agent", "Then this")
    expect(w.bubbles("agent")).to_have_count(2)
    expect(w.bubbles("agent").first).to_have_text(re.compile("Only once"))


def test_starter_chip_sends_its_question(double, visit):
    w = visit("/").open()
    chips = w.q(".pl-chip")
    expect(chips).to_have_text(["What are your opening hours?", "Do you ship abroad?"])
    chips.nth(1).click()
    w.expect_bubble("visitor", "Do you ship abroad?")
    wait_for(w.page, lambda: double.frames_of("message"), what="message frame")
    assert double.frames_of("message")[0]["body"] == "Do you ship abroad?"
