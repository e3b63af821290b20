"""Languages per chatbot (sql/40_chatbots.sql: chatbot_language, localize_widget_config,
check_chatbot_languages): a list of languages, `auto` = the browser's language among them, and the
greeting and starters of the visitor's language in the widget's session config."""
from __future__ import annotations

import asyncpg
import pytest
from support.realtime import ORIGIN, clients, placeholder_bot, tenant  # noqa: F401 (fixtures)

CONFIG = {
    "languages": ["en", "de", "pt-BR"],
    "language": "auto",
    "greeting": "Hi! How can we help?",
    "starters": ["Opening hours"],
    "texts": {"de": {"greeting": "Hallo! Wie können wir helfen?", "starters": ["Öffnungszeiten"]},
              "pt-BR": {"greeting": "Olá! Como podemos ajudar?"}},
}


@pytest.mark.parametrize("config,locale,expected", [
    (CONFIG, "de-DE", "de"),
    (CONFIG, "de", "de"),
    (CONFIG, "DE_at", "de"),
    (CONFIG, "pt-BR", "pt-BR"),
    (CONFIG, "pt-PT", "pt-BR"),  # same primary language, the listed variant
    (CONFIG, "fr-FR", "en"),  # not spoken: the first listed
    (CONFIG, None, "en"),
    ({**CONFIG, "language": "de"}, "fr-FR", "de"),  # a fixed language wins
    ({"language": "auto"}, "de-DE", "auto"),  # no list: the widget picks from the browser
    ({}, "tr", "auto"),
    ({"language": "es"}, "de-DE", "es"),
])
async def test_which_language(owner_conn, config, locale, expected):
    assert await owner_conn.fetchval("SELECT parley.chatbot_language($1, $2)", config, locale) == expected


async def test_texts_of_the_visitors_language(owner_conn):
    public = await owner_conn.fetchval("SELECT parley.chatbot_public_config('Shop', $1, false)", CONFIG)
    assert public["languages"] == ["en", "de", "pt-BR"]
    assert public["language"] == "en" and public["greeting"] == "Hi! How can we help?"
    de = await owner_conn.fetchval("SELECT parley.localize_widget_config($1, $2, 'de-DE')", public, CONFIG)
    assert (de["language"], de["greeting"], de["starters"]) == ("de", "Hallo! Wie können wir helfen?",
                                                                ["Öffnungszeiten"])
    pt = await owner_conn.fetchval("SELECT parley.localize_widget_config($1, $2, 'pt-BR')", public, CONFIG)
    # a language with a greeting but no starters of its own keeps the default starters
    assert (pt["greeting"], pt["starters"]) == ("Olá! Como podemos ajudar?", ["Opening hours"])
    assert "texts" not in de  # only the visitor's language reaches the browser


@pytest.mark.parametrize("bad,message", [
    ({"languages": "de"}, "languages must be a list"),
    ({"languages": ["en"] * 11}, "at most 10"),
    ({"languages": ["deutsch!"]}, "not a language code"),
    ({"texts": ["de"]}, "texts must map"),
    ({"texts": {"de": "Hallo"}}, "texts.de"),
    ({"texts": {"d e": {"greeting": "x"}}}, "language code mapping"),
    ({"texts": {"de": {"greeting": "x" * 501}}}, "at most 500"),
    ({"texts": {"de": {"greeting": "Hallo\u202e"}}}, "control or text-direction"),
    ({"texts": {"de": {"starters": ["a"] * 11}}}, "at most 10 starters"),
    ({"texts": {"de": {"starters": [5]}}}, "at most 200"),
])
async def test_sql_refuses_bad_languages_and_texts(tenant_conn, bad, message):
    with pytest.raises(asyncpg.PostgresError, match=message):
        async with tenant_conn.transaction():
            await tenant_conn.fetchrow("SELECT id FROM parley.create_chatbot('Bot', '{}', $1)", bad)


async def test_the_session_config_is_in_the_browsers_language(server, tenant):  # noqa: F811  pytest fixture imported above, injected by name
    status, out = await server.call("PATCH", f"/api/chatbots/{tenant['chatbot_id']}", token=tenant["access_token"],
                                    json={"config": CONFIG})
    assert status == 200, out
    for locale, greeting in (("de-DE", "Hallo! Wie können wir helfen?"), ("fr-FR", "Hi! How can we help?")):
        status, session = await server.call("POST", "/api/widget/sessions", headers={"Origin": ORIGIN},
                                            json={"chatbot_key": tenant["key"], "locale": locale})
        assert status == 201, session
        assert session["config"]["greeting"] == greeting
        assert "texts" not in session["config"]
    # the API refuses what SQL refuses, with the error shape
    status, out = await server.call("PATCH", f"/api/chatbots/{tenant['chatbot_id']}", token=tenant["access_token"],
                                    json={"config": {"languages": ["deutsch!"]}})
    assert status == 422 and out["error"]["code"] == "validation_failed", out
