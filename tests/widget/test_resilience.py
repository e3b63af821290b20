"""Connection life: offline queue, resume with last_seen_id, reload, token refresh, heartbeats."""
from __future__ import annotations

import re

from playwright.sync_api import expect
from support.browser import wait_for
from support.fakes.protocol_double import KEY


def test_offline_queue_is_sent_once_after_reconnect_and_nothing_is_missed(double, visit):
    w = visit("/").open()
    w.send("first")
    w.expect_bubble("bot", "Thanks for asking")
    last_id = double.conversation.messages[-1]["id"]

    double.refuse = True  # the network is gone: sockets drop and can't come back
    double.drop()
    expect(w.q(".pl-state")).to_have_text("Reconnecting…")
    expect(w.q(".pl")).to_have_class(re.compile(r"\bpl-off\b"))
    w.send("sent while offline")
    queued = w.bubbles("visitor").last
    expect(queued).to_have_class(re.compile(r"\bpl-pending\b"))
    expect(queued.locator(".pl-meta")).to_have_text("Queued")
    expect(queued.locator(".pl-meta")).to_be_visible()
    w.q(".pl-human").click()  # other frames wait too
    # Meanwhile an agent wrote (stored while the visitor was away).
    double.post("agent", "Still there? I can help.", author_name="Dana")
    w.shot("resilience-offline")
    assert [f["body"] for f in double.frames_of("message")] == ["first"]
    hellos_before = len(double.hellos)

    double.refuse = False
    wait_for(w.page, lambda: len(double.frames_of("message")) == 2, timeout=8, what="the queued message")
    expect(w.q(".pl-state")).to_be_hidden()
    expect(queued).not_to_have_class(re.compile(r"\bpl-pending\b"))
    w.expect_bubble("agent", "Still there?")
    w.expect_bubble("bot", "Thanks for asking")  # the reply to the queued message
    expect(w.bubbles("bot")).to_have_count(2)
    # Once, not twice: a message written now reaches the server after any resend of the queued one.
    w.send("and one more")
    wait_for(w.page, lambda: len(double.frames_of("message")) >= 3, timeout=8, what="the next message")
    frames = double.frames_of("message")
    assert [f["body"] for f in frames] == ["first", "sent while offline", "and one more"]
    assert len({f["client_id"] for f in frames}) == 3
    assert len(double.frames_of("human")) == 1
    # The reconnect asked only for what it had not seen.
    assert double.hellos[hellos_before]["last_seen_id"] == last_id
    expect(w.bubbles("agent")).to_have_count(1)
    expect(w.bubbles("visitor")).to_have_count(3)  # each shown once


def test_unacknowledged_message_is_resent_with_the_same_client_id(double, visit):
    """A message sent just before the drop (no echo yet) is resent after reconnect; the server's
    idempotent echo (same client_id) settles the bubble, which is shown once."""
    double.auto_reply = False
    w = visit("/").open()
    double.call(lambda: setattr(double, "_swallow", True))
    orig = double._on_frame

    async def swallow(ws, conv, frame):  # the server never answers this first try
        if frame.get("type") == "message" and getattr(double, "_swallow", False):
            double._swallow = False
            conv.by_client_id[frame["client_id"]] = double._message(conv, "visitor", frame["body"],
                                                                    client_id=frame["client_id"])
            return
        await orig(ws, conv, frame)
    double._on_frame = swallow
    w.send("are you there?")
    wait_for(w.page, lambda: double.frames_of("message"), what="first try")
    expect(w.bubbles("visitor").last).to_have_class(re.compile(r"\bpl-pending\b"))
    double.drop()
    wait_for(w.page, lambda: len(double.frames_of("message")) == 2, timeout=8, what="the resend")
    first, again = double.frames_of("message")
    assert first == again
    expect(w.bubbles("visitor")).to_have_count(1)
    expect(w.bubbles("visitor").last).not_to_have_class(re.compile(r"\bpl-pending\b"))


def test_reload_keeps_the_conversation(double, visit):
    w = visit("/").open()
    w.send("remember me")
    w.expect_bubble("bot", "Thanks for asking")
    conv_id = double.conversation.id
    w.page.reload()
    w.wait_ready().open()
    w.expect_bubble("visitor", "remember me")
    w.expect_bubble("bot", "Thanks for asking")
    expect(w.bubbles()).to_have_count(2)
    assert len(double.conversations) == 1
    assert double.session_requests[-1][1]["conversation_id"] == conv_id
    assert double.hellos[-1]["last_seen_id"] == 0
    assert w.page.evaluate("Object.keys(localStorage)") == [f"parley:{KEY}:cid"]
    w.shot("resilience-reloaded")


def test_unknown_stored_conversation_starts_a_new_one(double, page, visit):
    page.add_init_script(f"localStorage.setItem('parley:{KEY}:cid', 'not-a-conversation')")
    w = visit("/")
    assert double.session_requests[0][1]["conversation_id"] == "not-a-conversation"
    assert page.evaluate(f"localStorage.getItem('parley:{KEY}:cid')") == double.conversation.id
    expect(w.launcher).to_be_visible()


# Frames the page's sockets received, noted before the widget's own handler runs (in the same event
# dispatch): once a frame shows here, the widget has handled it.
NOTE_RECEIVED = """
window.__rx = [];
window.WebSocket = class extends WebSocket {
  constructor(...args) { super(...args); this.addEventListener('message', (e) => window.__rx.push(e.data)); }
};
"""


def test_token_refresh_and_heartbeat(double, page, visit):
    page.clock.install()
    page.add_init_script(NOTE_RECEIVED)
    visit("/")
    wait_for(page, lambda: double.hellos, what="hello")
    # The heartbeat pings only a socket the server said ready to: the clock moves once the widget
    # has that (moved before, its tick found the socket not yet ready and the next never came).
    wait_for(page, lambda: page.evaluate("window.__rx.some((d) => JSON.parse(d).type === 'ready')"), what="ready")
    first_token = double.hellos[0]["token"]
    page.clock.run_for(26_000)
    wait_for(page, lambda: double.frames_of("ping"), what="ping")
    for _ in range(29):  # to 80 % of a 900 s token, in heartbeat steps so each pong gets back
        pings = len(double.frames_of("ping"))
        page.clock.run_for(25_000)
        wait_for(page, lambda pings=pings: len(double.frames_of("ping")) > pings, what="ping")
        page.wait_for_timeout(30)
    wait_for(page, lambda: len(double.session_requests) == 2, what="refresh")
    path, body, _ = double.session_requests[1]
    assert path == "/api/widget/sessions/refresh" and body == {"token": first_token}
    assert len(double.hellos) == 1  # the socket stays up; the new token is for the next hello
    # A connection that stops answering (no pong by the next ping) is replaced, with the fresh token.
    double.silent = True
    for _ in range(3):
        page.clock.run_for(25_000)
        page.wait_for_timeout(50)
    page.clock.run_for(2_000)
    wait_for(page, lambda: len(double.hellos) >= 2, what="reconnect after silence")
    assert double.hellos[1]["token"] != first_token and double.hellos[1]["token"] in double.tokens
    assert double.hellos[1]["last_seen_id"] == 0  # nothing was ever received


def test_a_message_refused_for_now_is_sent_again_when_the_limit_allows(double, page, visit):
    """A rate limit refuses a message with retry_after: the bubble stays, marked queued, and the same
    message (its client_id) goes again after that many seconds, then settles; another refusal
    (no retry_after) is final: "Not sent"."""
    page.clock.install()
    page.add_init_script(NOTE_RECEIVED)
    orig = double._on_frame
    refusals = [{"code": "rate_limited", "message": "Too many messages.", "retry_after": 30},
                {"code": "body_too_long", "message": "A message is at most 4000 characters."}]

    async def refuse_first(ws, conv, frame):
        if frame.get("type") == "message" and frame["client_id"] not in double.__dict__.setdefault("_refused", set()):
            double._refused.add(frame["client_id"])
            await ws.send_json({"type": "error", "client_id": frame["client_id"], **refusals.pop(0)})
            return
        await orig(ws, conv, frame)
    double._on_frame = refuse_first
    w = visit("/").open()
    w.send("too fast")
    wait_for(page, lambda: page.evaluate("window.__rx.some((d) => JSON.parse(d).code === 'rate_limited')"),
             what="the refusal")
    held = w.bubbles("visitor").last
    expect(held).to_have_class(re.compile(r"\bpl-held\b"))
    expect(held.locator(".pl-meta")).to_have_text("Queued")
    expect(held.locator(".pl-meta")).to_be_visible()
    page.clock.run_for(29_000)
    page.wait_for_timeout(50)
    assert len(double.frames_of("message")) == 1  # not before the limit allows
    page.clock.run_for(1_500)
    wait_for(page, lambda: len(double.frames_of("message")) == 2, what="the message sent again")
    first, again = double.frames_of("message")
    assert first == again
    expect(w.bubbles("visitor")).to_have_count(1)
    expect(w.bubbles("visitor").last).not_to_have_class(re.compile(r"\bpl-(pending|held)\b"))
    # A refusal without retry_after is final.
    w.send("x" * 10)
    expect(w.bubbles("visitor").last).to_have_class(re.compile(r"\bpl-failed\b"))
    expect(w.bubbles("visitor").last.locator(".pl-meta")).to_have_text("Not sent")
    page.clock.run_for(60_000)
    page.wait_for_timeout(50)
    assert len(double.frames_of("message")) == 3


def test_rejected_hello_refreshes_the_session(double, visit):
    w = visit("/").open()
    w.send("hello")
    w.expect_bubble("bot", "Thanks")
    conv_id = double.conversation.id
    double.tokens.clear()  # every token is now unknown: hello is refused, so is refresh
    double.drop()
    wait_for(w.page, lambda: double.connected == 1 and len(double.hellos) >= 3, timeout=8,
             what="a new session and hello")
    paths = [p for p, _, _ in double.session_requests]
    assert paths[-2:] == ["/api/widget/sessions/refresh", "/api/widget/sessions"]
    assert double.session_requests[-1][1]["conversation_id"] == conv_id
    assert len(double.conversations) == 1
    w.send("still here")
    w.expect_bubble("visitor", "still here")
    expect(w.bubbles("bot")).to_have_count(2)


def test_writing_while_a_new_conversation_session_is_on_its_way(double, visit):
    """"New conversation" then typing at once, on a slow server: the message goes to the new
    conversation once its session is in, never to the old one with the old token."""
    w = visit("/").open()
    w.send("first question")
    w.expect_bubble("bot", "Thanks for asking")
    first = double.conversation.id
    double.session_delay = 1.5
    w.q(".pl-fresh").click()
    w.send("second question")
    w.expect_bubble("bot", "Thanks for asking")
    by_body = {m["body"]: cid for cid, c in double.conversations.items() for m in c.messages
               if m["author"] == "visitor"}
    assert by_body["first question"] == first and by_body["second question"] != first
    assert w.page.evaluate(f"localStorage.getItem('parley:{KEY}:cid')") == by_body["second question"]
