"""Host CSS can't reach the widget; theming, layout and the JS API."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect
from support.browser import SCREENSHOTS, wait_for

HOSTILE_CSS = """<style>
* { all: unset !important; }
html, body { font: 30px/3 "Comic Sans MS", serif !important; color: red !important;
             letter-spacing: 4px !important; text-transform: uppercase !important;
             visibility: visible; cursor: wait !important; pointer-events: auto; }
html { font-size: 5px !important; }
div { display: none !important; }
button, textarea, input, h2, p, span { background: red !important; color: lime !important;
  font-size: 40px !important; border: 5px solid lime !important; padding: 30px !important; }
parley-chat { display: none !important; opacity: .1 !important; transform: scale(.5) !important;
              position: absolute !important; z-index: -1 !important; filter: blur(4px) !important; }
:root, * { --pl-p: red !important; --pl-fg: red !important; --pl-bg: black !important; }
</style>"""

PROPS = ["display", "position", "color", "background-color", "font-family", "font-size", "font-weight",
         "line-height", "letter-spacing", "text-transform", "border-top-width", "border-top-color",
         "border-radius", "padding-top", "padding-left", "margin-top", "visibility", "opacity", "cursor",
         "box-shadow", "z-index", "transform", "filter"]
SELECTORS = [".pl-launch", ".pl-panel", ".pl-head", ".pl-head h2", ".pl-x", ".pl-log", ".pl-greet .pl-b",
             ".pl-agent .pl-b", ".pl-visitor .pl-b", ".pl-chip", ".pl-form textarea", ".pl-send", ".pl-human",
             ".pl-by", ".pl-b strong"]


def snapshot(w):
    w.settle()
    return w.eval("""(root, [sels, props]) => {
        const host = root.host, hs = getComputedStyle(host);
        const out = {host: {display: hs.display, position: hs.position, opacity: hs.opacity,
                            transform: hs.transform, filter: hs.filter, zIndex: hs.zIndex}};
        for (const s of sels) {
            const el = root.querySelector(s);
            if (!el) { out[s] = null; continue; }
            const cs = getComputedStyle(el), r = el.getBoundingClientRect();
            out[s] = Object.fromEntries(props.map(p => [p, cs.getPropertyValue(p)]));
            out[s].rect = [r.x, r.y, r.width, r.height].map(Math.round);
        }
        return out;
    }""", [SELECTORS, PROPS])


def panel_shot(w) -> bytes:
    """The panel minus its rounded corners' columns (where the host page shows through)."""
    box = w.panel.bounding_box()
    clip = {"x": box["x"] + 16, "y": box["y"], "width": box["width"] - 32, "height": box["height"]}
    return w.page.screenshot(clip=clip, animations="disabled")


def test_hostile_host_css_changes_nothing(double, visit):
    double.auto_reply = False
    w = visit("/plain").open()
    w.send("Hello there")
    # The reply must be stored after the visitor's message, or the replay below shows them
    # in the other order (a race of the test, not of the widget).
    wait_for(w.page, lambda: double.conversation.by_client_id, what="the visitor message stored")
    double.post("agent", "Hi! **Welcome** to Acme.", author_name="Dana")
    w.expect_bubble("agent", "Welcome")
    w.page.mouse.move(0, 0)
    before = snapshot(w)
    launcher_png = w.launcher.screenshot(animations="disabled")
    panel_png = panel_shot(w)
    w.shot("isolation-plain")

    # Same visitor (same storage) on a page with hostile CSS: the conversation is replayed.
    double.page("/hostile", head=HOSTILE_CSS)
    w.page.goto(double.site_url + "/hostile")
    w.wait_ready().open()
    w.expect_bubble("agent", "Welcome")
    w.page.mouse.move(0, 0)
    after = snapshot(w)
    w.shot("isolation-hostile")
    assert after["host"]["display"] == "block" and after["host"]["opacity"] == "1"
    assert after["host"]["transform"] == "none" and after["host"]["filter"] == "none"
    for sel in SELECTORS:
        assert after[sel] is not None, sel
        assert after[sel] == before[sel], sel
    assert after == before
    assert w.launcher.screenshot(animations="disabled") == launcher_png
    panel_after = panel_shot(w)
    if panel_after != panel_png:
        (SCREENSHOTS / "isolation-panel-before.png").write_bytes(panel_png)
        (SCREENSHOTS / "isolation-panel-after.png").write_bytes(panel_after)
    assert panel_after == panel_png
    # The host page itself was really affected (the test is not vacuous).
    assert w.page.evaluate("getComputedStyle(document.querySelector('h1')).color") == "rgb(255, 0, 0)"


AVATAR = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><circle cx="16" cy="16" r="16" fill="#0a7"/>'
          '</svg>')


def test_theming_contrast_position_and_branding(double, visit, page):
    page.route("https://cdn.example/**",
               lambda r: r.fulfill(status=200, content_type="image/svg+xml", body=AVATAR))
    double.config["branding"] = {"primary_color": "#ffd60a", "position": "left", "title": "Sunny Shop",
                                 "avatar_url": "https://cdn.example/avatar.png", "launcher_icon": "help",
                                 "hide_powered_by": True}
    w = visit("/")
    box = w.launcher.bounding_box()
    assert box["x"] == 20 and box["y"] == 800 - 20 - 56
    styles = w.launcher.evaluate("el => [getComputedStyle(el).backgroundColor, getComputedStyle(el).color]")
    assert styles == ["rgb(255, 214, 10)", "rgb(0, 0, 0)"]  # black text on yellow
    w.open()
    assert w.panel.bounding_box()["x"] == 20
    expect(w.q(".pl-head h2")).to_have_text("Sunny Shop")
    expect(w.q(".pl-head img.pl-av")).to_have_attribute("src", "https://cdn.example/avatar.png")
    expect(w.q(".pl-by")).to_have_count(0)
    assert w.q(".pl-head img.pl-av").evaluate("img => img.complete && img.naturalWidth > 0")
    assert w.q(".pl-head").evaluate("el => getComputedStyle(el).color") == "rgb(0, 0, 0)"
    w.shot("theming-yellow-left")


@pytest.mark.parametrize("color,expected_text", [("#1e293b", "rgb(255, 255, 255)"), ("#fff", "rgb(0, 0, 0)"),
                                                 ("#777777", "rgb(0, 0, 0)"),
                                                 ("red;background:url(x)", "rgb(255, 255, 255)")])
def test_text_colour_on_primary_has_aa_contrast(double, visit, color, expected_text):
    double.config["branding"]["primary_color"] = color
    w = visit("/")
    bg, fg = w.launcher.evaluate("el => [getComputedStyle(el).backgroundColor, getComputedStyle(el).color]")
    assert fg == expected_text
    if color.startswith("red"):  # not a colour: the default brand colour is used
        assert bg == "rgb(79, 70, 229)"
    assert _contrast(bg, fg) >= 4.5


def _contrast(a: str, b: str) -> float:
    def lum(rgb: str) -> float:
        parts = [int(x) / 255 for x in rgb[rgb.index("(") + 1:-1].split(",")[:3]]
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in parts]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    la, lb = sorted((lum(a), lum(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


@pytest.mark.browser_context(viewport={"width": 375, "height": 667}, is_mobile=True, has_touch=True)
def test_full_screen_on_small_screens(double, visit):
    w = visit("/").open()
    assert w.panel.bounding_box() == {"x": 0, "y": 0, "width": 375, "height": 667}
    assert w.panel.evaluate("el => getComputedStyle(el).borderTopLeftRadius") == "0px"
    w.shot("small-screen-panel")
    expect(w.launcher).to_be_hidden()  # it would cover the send button
    w.page.keyboard.press("Escape")
    expect(w.launcher).to_be_visible()
    assert w.active_class() == "pl-launch"


def test_js_api(double, visit):
    w = visit("/")
    page = w.page
    assert page.evaluate("typeof Parley.version") == "string"
    page.evaluate("window.__ev = []; Parley.on('open', () => __ev.push('open')); "
                  "Parley.on('close', () => __ev.push('close')); 0")
    page.evaluate("Parley.open()")
    expect(w.panel).to_be_visible()
    page.evaluate("Parley.close()")
    expect(w.panel).to_be_hidden()
    assert page.evaluate("__ev") == ["open", "close"]
    page.evaluate("Parley.identify({name: 'Ada Lovelace', email: 'ada@example.com'})")
    wait_for(page, lambda: double.frames_of("lead"), what="lead frame")
    assert double.frames_of("lead") == [{"type": "lead", "name": "Ada Lovelace", "email": "ada@example.com"}]
    # Unsubscribing works; loading the script twice does not mount a second widget.
    page.evaluate("window.__n = 0; const off = Parley.on('message', () => __n++); off(); 0")
    double.post("agent", "hello")
    page.add_script_tag(url=f"{double.api_url}/widget.js")
    # Delivered (the panel is closed: in the log, not visible); a listener still subscribed would have counted it.
    expect(w.bubbles("agent").filter(has_text="hello")).to_have_count(1)
    assert page.evaluate("__n") == 0
    expect(w.host).to_have_count(1)


def test_credit_line_label_and_link_from_the_server(double, visit):
    """The server resolves the credit line (chatbot → workspace → server default); the widget shows
    the label and, with a link, opens it outside the host page."""
    double.config["branding"] = {"powered_by": {"label": "Support by Acme", "url": "https://acme.example/help"}}
    w = visit("/")
    w.open()
    credit = w.q("a.pl-by")
    expect(credit).to_have_text("Support by Acme")
    expect(credit).to_have_attribute("href", "https://acme.example/help")
    expect(credit).to_have_attribute("target", "_blank")
    expect(credit).to_have_attribute("rel", "noopener noreferrer")
