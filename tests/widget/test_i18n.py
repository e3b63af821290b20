"""i18n: five catalogs with the same keys; every visible string and aria label comes from them, or
from the session's config (the visitor buttons: the actions registry's labels, sql/57_actions.sql)."""
from __future__ import annotations

import functools
import json
import subprocess

import pytest
from playwright.sync_api import expect
from support.browser import WIDGET

LANGS = ["en", "es", "fr", "de", "tr"]
# Spot checks written by hand (the UI must not merely echo whatever the catalog holds).
SPOT = {
    "en": ("Type your message…", "Talk to a human", "Powered by Parley"),
    "es": ("Escribe tu mensaje…", "Hablar con una persona", "Con la tecnología de Parley"),
    "fr": ("Écrivez votre message…", "Parler à une personne", "Propulsé par Parley"),
    "de": ("Nachricht eingeben…", "Mit einem Menschen sprechen", "Bereitgestellt von Parley"),
    "tr": ("Mesajınızı yazın…", "Bir temsilciyle görüşün", "Parley altyapısıyla"),
}


@functools.cache
def catalogs() -> dict[str, dict[str, str]]:
    js = ("import {catalog, LANGS} from './src/i18n.js';"
          "console.log(JSON.stringify(Object.fromEntries(LANGS.map(l => [l, catalog(l)]))))")
    out = subprocess.run(["node", "--input-type=module", "-e", js], cwd=WIDGET, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def test_catalogs_are_complete():
    cats = catalogs()
    assert sorted(cats) == sorted(LANGS)
    keys = set(cats["en"])
    for lang, cat in cats.items():
        assert set(cat) == keys, lang
        assert all(isinstance(v, str) and v.strip() for v in cat.values()), lang
        for k in ("star", "unread"):
            assert "{n}" in cat[k], (lang, k)
        if lang != "en":  # translated, not copied (a few words are the same in both languages)
            same = {k for k in keys if cat[k] == cats["en"][k]}
            assert len(same) <= 3, (lang, same)


def ui_strings(w) -> list[str]:
    """Every text and label a visitor (or a screen reader) meets in the open panel."""
    return w.eval("""(root) => {
        const out = [];
        for (const el of root.querySelectorAll(':not(style)')) {
            for (const a of ['aria-label', 'placeholder', 'title', 'alt']) if (el.getAttribute(a)) out.push(el.getAttribute(a));
            for (const n of el.childNodes) if (n.nodeType === 3 && n.textContent.trim()) out.push(n.textContent.trim());
        }
        return out;
    }""")


@pytest.mark.parametrize("lang", LANGS)
def test_each_language_shows_its_strings(double, visit, lang):
    double.config.update(language=lang, greeting="", starters=[], name="Acme")
    double.config["branding"]["title"] = None
    double.auto_reply = False
    t = catalogs()[lang]
    w = visit("/")
    expect(w.launcher).to_have_attribute("aria-label", t["open"])
    w.open()
    ph, human, by = SPOT[lang]
    expect(w.input).to_have_attribute("placeholder", ph)
    expect(w.input).to_have_attribute("aria-label", ph)
    expect(w.q(".pl-human")).to_have_text(human)
    expect(w.q(".pl-by")).to_have_text(by)
    expect(w.q(".pl-send")).to_have_attribute("aria-label", t["send"])
    expect(w.q(".pl-head .pl-x")).to_have_attribute("aria-label", t["close"])
    expect(w.q(".pl-log")).to_have_attribute("aria-label", t["log"])
    expect(w.launcher).to_have_attribute("aria-label", t["close"])
    assert w.q(".pl").get_attribute("lang") == lang

    # Bot reply controls, lead form, rating and the status line, all in this language.
    w.send("hi")
    double.post("bot", "An answer", citations=[{"n": 1, "title": "Doc", "url": "https://acme.example/d"}])
    double.push({"type": "lead_request", "fields": ["name", "email", "phone"]})
    double.push({"type": "typing", "author": "agent", "on": True})
    double.set_status("closed")
    expect(w.q(".pl-stars button")).to_have_count(5)
    expect(w.q(".pl-fb .pl-up")).to_have_attribute("aria-label", t["up"])
    expect(w.q(".pl-fb .pl-down")).to_have_attribute("aria-label", t["down"])
    expect(w.q(".pl-cites")).to_have_attribute("aria-label", t["sources"])
    expect(w.q(".pl-card label span")).to_have_text([t["name"], t["email"], t["phone"]])
    expect(w.q(".pl-stars button").nth(2)).to_have_attribute("aria-label", t["star"].replace("{n}", "3"))
    expect(w.q(".pl-sub")).to_have_text(t["closed"])
    expect(w.q(".pl-typing")).to_have_text(t["typing"])
    w.shot(f"i18n-{lang}")

    shown = set(ui_strings(w))
    content = {"Acme", "hi", "An answer", "Doc", "★", "1"}
    actions = {a["label"] for a in double.actions[lang]}  # the registry's visitor buttons, in this language
    allowed = (set(t.values()) | content | actions | {f"{t['you']}:", f"{t['bot']}:"}
               | {t["star"].replace("{n}", str(n)) for n in range(1, 6)})
    assert shown - allowed == set()
    if lang != "en":
        english_only = set(catalogs()["en"].values()) - set(t.values())
        assert shown & english_only == set()


@pytest.mark.browser_context(locale="tr-TR")
def test_browser_language_when_config_has_none(double, visit):
    double.config["language"] = None
    w = visit("/").open()
    expect(w.input).to_have_attribute("placeholder", "Mesajınızı yazın…")


@pytest.mark.browser_context(locale="fr-CA")
def test_unsupported_config_language_falls_back_to_the_browser(double, visit):
    double.config["language"] = "pt"
    w = visit("/").open()
    expect(w.input).to_have_attribute("placeholder", "Écrivez votre message…")


@pytest.mark.browser_context(locale="ja-JP")
def test_unsupported_everything_is_english(double, visit):
    double.config["language"] = "auto"
    w = visit("/").open()
    expect(w.input).to_have_attribute("placeholder", "Type your message…")
