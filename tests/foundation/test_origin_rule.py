"""The one origin rule, parley.origin_allowed (sql/40_chatbots.sql): which pages may start the
widget, tried with the hostile spellings of issue 17 item 4 through SQL, widget sessions and the
console's install check (which must say what the widget will do).

An empty list lets the snippet work on any public site by its domain name; local development
pages and bare IP addresses must be listed, and a loopback address in disguise is neither a
name nor local."""
from __future__ import annotations

import pytest
from aiohttp import web
from support.console import ConsoleClient, make_chatbot
from support.realtime import create_chatbot, widget_session

LOCAL = ["http://localhost", "http://localhost:3000", "https://app.localhost:8443", "http://a.b.localhost",
         "http://127.0.0.1:8080", "http://127.0.0.2", "http://127.255.255.254:1", "http://[::1]:5173",
         "HTTP://LOCALHOST:3000", "http://localhost:80"]
PUBLIC = ["https://shop.example", "http://shop.example:8080", "https://www.shop.co.uk", "https://xn--bcher-kva.example",
          "HTTPS://Shop.Example:443", "https://a-b.example",
          "http://localhost.evil.example"]  # a public name that merely starts with "localhost"
# Loopback in disguise, or not an origin at all: refused under an empty list, as local pages are.
HOSTILE = ["http://localhost.", "http://localhost.:3000", "http://app.localhost.", "http://127.1",
           "http://2130706433", "http://0x7f.0.0.1", "http://0177.0.0.1", "http://127.000.000.001",
           "http://0.0.0.0", "http://[::ffff:127.0.0.1]", "http://[::ffff:7f00:1]", "http://[0:0:0:0:0:0:0:1]",
           "http://127.0.0.256", "http://evil-localhost", "http://localhostx",
           "http://user@localhost", "http://localhost:0", "http://localhost:65536", "http://localhost/path",
           "http://localhost:3000/", "ws://localhost", "file://localhost", "null", "", " ", "http://",
           "http://..localhost", "http://a..localhost", "http://127.0.0.2", "http://10.0.0.5", "http://8.8.8.8",
           "http://[2001:db8::1]", "http://intranet", "https://shop.example."]


async def _allowed(conn, allowed: list[str], origin: str | None) -> bool:
    return await conn.fetchval("SELECT parley.origin_allowed($1::text[], $2)", allowed, origin)


async def test_empty_list_allows_public_sites_by_name_only(owner_conn):
    for origin in PUBLIC:
        assert await _allowed(owner_conn, [], origin), origin
    accepted = [o for o in LOCAL + HOSTILE if await _allowed(owner_conn, [], o)]
    assert accepted == []
    assert await _allowed(owner_conn, [], None)  # no Origin header: not a page; only with an empty list


async def test_local_pages_work_once_listed(owner_conn):
    for origin in LOCAL:
        listed = [await owner_conn.fetchval("SELECT parley.normalize_origin($1)", origin)]
        assert await _allowed(owner_conn, listed, origin), origin
    assert not await _allowed(owner_conn, ["http://localhost:3000"], "http://localhost.:3000")
    assert not await _allowed(owner_conn, ["http://127.0.0.1"], "http://127.1")


async def test_local_means_loopback_in_canonical_form(owner_conn):
    for origin in LOCAL:
        assert await owner_conn.fetchval("SELECT parley.origin_is_local($1)", origin), origin
    for origin in HOSTILE[:19] + PUBLIC:  # the rest of HOSTILE: not origins, or the trailing-slash near miss
        assert not await owner_conn.fetchval("SELECT parley.origin_is_local($1)", origin), origin


async def test_listed_origins_match_exactly(owner_conn):
    listed = ["https://shop.example", "http://shop.example:8080"]
    assert await _allowed(owner_conn, listed, "https://shop.example")
    assert await _allowed(owner_conn, listed, "https://SHOP.example:443")
    assert await _allowed(owner_conn, listed, "http://shop.example:8080")
    for origin in ["http://shop.example", "https://shop.example:8443", "https://shop.example.evil.test",
                   "https://evil.example", "https://xshop.example", "null", "http://localhost:3000",
                   "https://*.example", None]:
        assert not await _allowed(owner_conn, listed, origin), origin
    # No wildcard: a listed pattern with * matches nothing (the API and SQL refuse to store one).
    assert not await _allowed(owner_conn, ["https://*.shop.example"], "https://a.shop.example")


async def test_normalisation(owner_conn):
    cases = {"HTTPS://Shop.Example:443/": "https://shop.example", "http://a.b:8080": "http://a.b:8080",
             "http://[::1]:80": "http://[::1]", "http://localhost.": None, "http://x/y": None, "x": None}
    for value, expected in cases.items():
        assert await owner_conn.fetchval("SELECT parley.normalize_origin($1)", value) == expected, value


async def test_widget_sessions_apply_the_rule(server, signup, owner_conn):
    owner = await signup(server)
    bot = await create_chatbot(owner_conn, owner["tenant_id"], origins=())
    for origin in ["https://shop.example", "https://help.example.org:8443"]:
        await widget_session(server, bot["key"], origin=origin)
    for origin in ["http://localhost:3000", "http://127.0.0.2:8080", "http://[::1]:5173", "http://localhost.",
                   "http://127.1", "http://2130706433", "http://0.0.0.0", "http://[::ffff:127.0.0.1]",
                   "http://app.localhost.", "null"]:
        out = await widget_session(server, bot["key"], origin=origin, expect=403)
        assert out["error"]["code"] == "origin_not_allowed", origin
    await owner_conn.execute("UPDATE parley.chatbots SET allowed_origins = '{https://shop.example}' WHERE id = $1",
                             bot["chatbot_id"])
    await widget_session(server, bot["key"], origin="https://shop.example")
    await widget_session(server, bot["key"], origin="http://localhost:3000", expect=403)


@pytest.mark.parametrize("origins, allowed", [((), False), (("https://shop.example",), False), (("{page}",), True)])
async def test_install_check_says_what_the_widget_does(server, signup, monkeypatch, origins, allowed):
    owner = await signup(server)
    monkeypatch.setenv("PARLEY_FETCH_ALLOW_HOSTS", "127.0.0.1")
    page: dict[str, str] = {}

    async def serve(request):
        return web.Response(text=page["html"], content_type="text/html")

    site = web.Application()
    site.router.add_get("/", serve)
    runner = web.AppRunner(site)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    origin = f"http://127.0.0.1:{runner.addresses[0][1]}"
    bot = await make_chatbot(server, owner["access_token"], origins=tuple(o.format(page=origin) for o in origins))
    page["html"] = (f'<html><body><script src="{server.base_url}/widget.js" data-chatbot="{bot["public_key"]}">'
                    "</script></body></html>")
    c = ConsoleClient(server.base_url)
    try:
        await c.sign_in(owner["email"], owner["password"])
        status, html, _ = await c.post("/console/onboarding/install-check", {"chatbot": str(bot["id"]), "url": origin + "/"})
    finally:
        await c.close()
        await runner.cleanup()
    assert status == 200 and "Found it" in html
    assert ("is not among the allowed sites" not in html) is allowed
    # ...and the widget does just that on this page.
    await widget_session(server, bot["public_key"], origin=origin, expect=201 if allowed else 403)
