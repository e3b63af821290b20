"""/widget.js (short cache), /widget.<hash>.js (immutable), the demo tenant and /demo."""
from __future__ import annotations

import json

import pytest
from pyapp.widget import assets as static
from pyapp.widget import demo
from support.server import start_server


@pytest.fixture
def dist(tmp_path, monkeypatch):
    d = tmp_path / "dist"
    d.mkdir()
    monkeypatch.setattr(static, "DIST", d)
    return d


async def test_widget_script_urls_and_caching(settings, dist):
    srv = await start_server(settings)
    try:
        status, body = await srv.call("GET", "/widget.js")
        assert status == 404 and body["error"]["code"] == "widget_not_built"

        (dist / "widget.js").write_text("console.log('v1');")
        async with srv.http.get(srv.base_url + "/widget.js") as resp:
            assert resp.status == 200 and await resp.text() == "console.log('v1');"
            assert resp.headers["Cache-Control"] == "public, max-age=300"
            assert resp.headers["Access-Control-Allow-Origin"] == "*"
            assert resp.content_type == "application/javascript"
            etag = resp.headers["ETag"]
        async with srv.http.get(srv.base_url + "/widget.js", headers={"If-None-Match": etag}) as resp:
            assert resp.status == 304
        url = static.widget_script_url(srv.app)
        async with srv.http.get(srv.base_url + url) as resp:
            assert resp.status == 200 and await resp.text() == "console.log('v1');"
            assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            assert resp.headers["Access-Control-Allow-Origin"] == "*"

        # A rebuild (with a manifest naming its hashed file) is picked up without a restart.
        (dist / "widget.js").write_text("console.log('v2');")
        (dist / "widget.abc123def.js").write_text("console.log('v2');")
        (dist / "manifest.json").write_text(json.dumps({"widget.js": "widget.abc123def.js"}))
        assert static.widget_script_url(srv.app) == "/widget.abc123def.js"
        async with srv.http.get(srv.base_url + "/widget.abc123def.js") as resp:
            assert await resp.text() == "console.log('v2');"
            assert resp.headers["Cache-Control"].endswith("immutable")
        status, _ = await srv.call("GET", url)  # the old hash is gone
        assert status == 404
        status, _ = await srv.call("GET", "/widget.zzzzzzzz.js")
        assert status == 404
    finally:
        await srv.close()


async def test_seed_demo_is_idempotent_and_serves_the_demo_page(settings, tmp_path, monkeypatch, owner_conn):
    page = tmp_path / "demo.html"
    page.write_text('<script src="{{API_BASE}}/widget.js" data-key="{{CHATBOT_KEY}}"></script>')
    monkeypatch.setattr(demo, "DEMO_HTML", page)
    monkeypatch.setattr(demo, "_seeded", None)
    settings.port = 8123
    first = await demo.seed_demo(settings)
    again = await demo.seed_demo(settings)
    assert first == again and first["email"] == "demo@parley.local" and first["chatbot_key"].startswith("pk_")
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.tenants WHERE slug = 'demo-co'") == 1
    bot = await owner_conn.fetchrow("SELECT allowed_origins FROM parley.chatbots WHERE public_key = $1",
                                    first["chatbot_key"])
    assert {"http://127.0.0.1:8123", "http://localhost:8123"} <= set(bot["allowed_origins"])
    if await owner_conn.fetchval("SELECT to_regclass('parley.knowledge_sources') IS NOT NULL"):
        n = await owner_conn.fetchval("SELECT count(*) FROM parley.knowledge_chunks WHERE chatbot_id = "
                                      "(SELECT id FROM parley.chatbots WHERE public_key = $1)", first["chatbot_key"])
        assert n >= 1

    srv = await start_server(settings)
    try:
        status, html = await srv.call("GET", "/demo")
        assert status == 200
        assert f'src="{srv.base_url}/widget.js"' in html and f'data-key="{first["chatbot_key"]}"' in html
        status, out = await srv.call("POST", "/api/auth/login", json={"email": first["email"],
                                                                      "password": first["password"]})
        assert status == 200, out
        status, sess = await srv.call("POST", "/api/widget/sessions", json={"chatbot_key": first["chatbot_key"]},
                                      headers={"Origin": "http://localhost:8123"})
        assert status == 201, sess
    finally:
        await srv.close()
