"""Lead form, end-of-chat rating, proactive nudges, refused messages."""
from __future__ import annotations

import re

from playwright.sync_api import expect
from support.browser import wait_for
from support.fakes.protocol_double import KEY


def test_lead_form_on_lead_request(double, visit):
    double.auto_reply = False
    w = visit("/").open()
    double.push({"type": "lead_request", "fields": ["name", "email"]})
    form = w.q("form.pl-card")
    expect(form).to_be_visible()
    expect(form.locator("input")).to_have_count(2)
    name, email = form.locator("input[name=name]"), form.locator("input[name=email]")
    expect(name).to_be_focused()
    form.locator("button[type=submit]").click()  # empty: the browser's validation stops it
    email.fill("not an email")
    name.fill("Ada")
    form.locator("button[type=submit]").click()
    assert email.evaluate("e => e.validity.typeMismatch")  # the browser's validation stops it
    assert double.frames_of("lead") == []  # (and the one lead frame below is the valid one)
    email.fill("ada@example.com")
    w.shot("features-lead-form")
    email.press("Enter")
    wait_for(w.page, lambda: double.frames_of("lead"), what="lead frame")
    assert double.frames_of("lead") == [{"type": "lead", "name": "Ada", "email": "ada@example.com"}]
    expect(w.q("form.pl-card")).to_have_count(0)
    expect(w.bubbles("system").last).to_have_text("Thanks, we have your details.")


def test_rating_when_the_conversation_closes(double, visit):
    w = visit("/").open()
    w.send("bye")
    w.expect_bubble("bot", "Thanks")
    double.set_status("closed")
    stars = w.q(".pl-stars button")
    expect(stars).to_have_count(5)
    expect(w.q(".pl-sub")).to_have_text("This conversation has ended")
    w.shot("features-rating")
    stars.nth(3).click()
    wait_for(w.page, lambda: double.frames_of("rating"), what="rating frame")
    assert double.frames_of("rating") == [{"type": "rating", "score": 4}]
    expect(w.q(".pl-card")).to_have_text("Thank you for your feedback!")
    expect(w.input).to_be_focused()
    double.set_status("closed")  # only one rating prompt
    expect(w.q(".pl-stars")).to_have_count(0)


def test_nudge_after_seconds_on_matching_pages_capped_per_visitor(double, visit):
    double.config["nudges"] = [
        {"after_seconds": 0.3, "url_pattern": "/pricing", "text": "Questions about pricing?"},
        {"after_seconds": 0.2, "url_pattern": "/blog/*/bikes", "text": "Looking for a bike?"},
    ]
    double.config["max_nudges"] = 2
    w = visit("/about")
    w.page.wait_for_timeout(450)
    expect(w.q(".pl-nudge")).to_be_hidden()  # no pattern matches /about

    w = visit("/en/pricing")
    nudge = w.q(".pl-nudge")
    expect(nudge).to_be_visible()
    expect(nudge.locator(".pl-nt")).to_have_text("Questions about pricing?")
    w.shot("features-nudge")
    nudge.locator(".pl-nt").click()
    expect(w.panel).to_be_visible()
    expect(nudge).to_be_hidden()
    assert w.page.evaluate(f"localStorage.getItem('parley:{KEY}:nudges')") == "1"

    w = visit("/blog/2024/bikes")
    expect(w.q(".pl-nudge .pl-nt")).to_have_text("Looking for a bike?")
    w.q(".pl-nudge .pl-x").click()
    expect(w.q(".pl-nudge")).to_be_hidden()
    assert w.page.evaluate(f"localStorage.getItem('parley:{KEY}:nudges')") == "2"

    w = visit("/pricing")  # the visitor has had max_nudges
    w.page.wait_for_timeout(450)
    expect(w.q(".pl-nudge")).to_be_hidden()


def test_refused_message_is_marked_not_sent(double, visit):
    double.auto_reply = False
    w = visit("/").open()
    orig = double._on_frame

    async def refuse(ws, conv, frame):
        if frame.get("type") == "message":
            await ws.send_json({"type": "error", "code": "rate_limited", "message": "Slow down.",
                                "client_id": frame["client_id"]})
            return
        await orig(ws, conv, frame)
    double._on_frame = refuse
    w.send("spam")
    bubble = w.bubbles("visitor").last
    expect(bubble).to_have_class(re.compile(r"\bpl-failed\b"))
    expect(bubble.locator(".pl-meta")).to_have_text("Not sent")
    # Not resent on reconnect.
    double._on_frame = orig
    double.drop()
    wait_for(w.page, lambda: len(double.hellos) == 2, timeout=5, what="reconnect")
    # The widget resends what it still owes right after the hello; a message written now comes
    # after any such resend, so once it arrives the refused one has had its chance to reappear.
    w.send("after reconnect")
    wait_for(w.page, lambda: len(double.frames_of("message")) >= 2, timeout=5, what="the next message")
    assert [f["body"] for f in double.frames_of("message")] == ["spam", "after reconnect"]
