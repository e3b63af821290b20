"""Accessibility: keyboard operation, focus trap and return, Escape, live log, axe-core."""
from __future__ import annotations

from playwright.sync_api import expect
from support.browser import AXE, wait_for


def test_keyboard_focus_trap_escape_and_return(double, visit):
    double.auto_reply = False
    w = visit("/")
    page = w.page
    double.post("bot", "Read [the guide](https://acme.example/guide).",
                citations=[{"n": 1, "title": "Guide", "url": "https://acme.example/guide"}])
    page.keyboard.press("Tab")  # the host page's link
    assert page.evaluate("document.activeElement.textContent") == "About us"
    page.keyboard.press("Tab")  # then the launcher
    assert w.active_class() == "pl-launch"
    page.keyboard.press("Enter")
    expect(w.panel).to_be_visible()
    expect(w.launcher).to_have_attribute("aria-expanded", "true")
    assert w.active_class() == "" or w.eval("r => r.activeElement.tagName") == "TEXTAREA"

    inside = "r => !!r.activeElement && r.querySelector('.pl-panel').contains(r.activeElement)"
    seen = set()
    for _ in range(16):
        page.keyboard.press("Tab")
        assert w.eval(inside), "focus left the panel"
        seen.add(w.eval("r => r.activeElement.className || r.activeElement.tagName"))
    # Every control was reachable: close, log, links, thumbs, chips, textarea, send, human.
    for cls in ("pl-x", "pl-log", "pl-up", "pl-down", "pl-chip", "TEXTAREA", "pl-send", "pl-human", "A"):
        assert cls in seen, (cls, seen)
    for _ in range(16):
        page.keyboard.press("Shift+Tab")
        assert w.eval(inside), "focus left the panel (backwards)"

    # Typing and Enter sends; Shift+Enter is a new line.
    w.input.focus()
    page.keyboard.type("line one")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("line two")
    wait_for(page, lambda: double.frames_of("typing"), what="typing frame")
    assert double.frames_of("typing") == [{"type": "typing", "on": True}]  # once, not per key
    page.keyboard.press("Enter")
    w.expect_bubble("visitor", "line one")
    wait_for(page, lambda: double.frames_of("message"), what="message")
    assert double.frames_of("message")[0]["body"] == "line one\nline two"
    assert double.frames_of("typing")[-1] == {"type": "typing", "on": False}

    page.keyboard.press("Escape")
    expect(w.panel).to_be_hidden()
    assert w.active_class() == "pl-launch"
    expect(w.launcher).to_have_attribute("aria-expanded", "false")
    page.keyboard.press("Space")
    expect(w.panel).to_be_visible()
    w.q(".pl-head .pl-x").focus()
    page.keyboard.press("Enter")
    expect(w.panel).to_be_hidden()
    assert w.active_class() == "pl-launch"


def test_semantics(double, visit):
    w = visit("/").open()
    panel = w.panel
    assert panel.get_attribute("role") == "dialog" and panel.get_attribute("aria-modal") == "true"
    assert w.eval("r => r.getElementById(r.querySelector('.pl-panel').getAttribute('aria-labelledby')).textContent") \
        == "Acme support"
    log = w.q(".pl-log")
    assert log.get_attribute("role") == "log" and log.get_attribute("aria-live") == "polite"
    assert w.launcher.get_attribute("aria-controls") == "pl-panel"
    # Screen readers hear who said what.
    w.send("hello")
    w.expect_bubble("bot", "Thanks")
    expect(w.bubbles("visitor").first.locator(".pl-sr")).to_have_text("You: ")
    expect(w.bubbles("bot").first.locator(".pl-sr")).to_have_text("Assistant: ")
    assert w.bubbles("bot").first.locator(".pl-sr").evaluate("el => el.getBoundingClientRect().width") <= 1


def run_axe(w) -> list[dict]:
    w.page.add_script_tag(path=str(AXE))
    result = w.page.evaluate("""async () => {
        const r = await axe.run({include: [['parley-chat']]});
        return {passed: r.passes.map(p => p.id),
                violations: r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                    nodes: v.nodes.map(n => n.target.join(' ') + ' :: ' + n.failureSummary)}))};
    }""")
    # axe really looked inside the shadow root (not vacuously clean).
    assert {"button-name", "color-contrast", "aria-allowed-attr"} <= set(result["passed"]), result["passed"]
    return result["violations"]


def test_axe_no_serious_violations_on_open_panel(double, visit):
    double.config["nudges"] = [{"after_seconds": 0, "url_pattern": None, "text": "Need help choosing a bike?"}]
    w = visit("/")
    expect(w.q(".pl-nudge")).to_be_visible()
    closed = run_axe(w)
    w.open()
    w.send("Which bike for commuting?")
    w.expect_bubble("bot", "Thanks for asking")
    double.post("agent", "I'm **Dana**, see [sizes](https://acme.example/sizes):\n- S\n- M", author_name="Dana")
    double.post("system", "Dana joined")
    double.push({"type": "lead_request", "fields": ["name", "email"]})
    double.push({"type": "typing", "author": "agent", "on": True})
    double.set_status("closed")
    expect(w.q(".pl-stars")).to_be_visible()
    w.settle()
    violations = closed + run_axe(w)
    w.shot("a11y-axe-open-panel")
    bad = [v for v in violations if v["impact"] in ("serious", "critical")]
    assert bad == [], bad


def test_axe_with_a_light_brand_colour_and_offline_state(double, visit):
    double.config["branding"]["primary_color"] = "#a5f3fc"
    w = visit("/").open()
    double.refuse = True
    double.drop()
    expect(w.q(".pl-state")).to_have_text("Reconnecting…")
    w.send("queued")
    bad = [v for v in run_axe(w) if v["impact"] in ("serious", "critical")]
    w.shot("a11y-axe-light-offline")
    assert bad == [], bad
