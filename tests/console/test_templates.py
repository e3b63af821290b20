"""Chatbot templates (migration 0026 seeds them, sql/48_chatbot_templates.sql applies them): five
personas offered in onboarding and in chatbot settings, through the API's handlers."""
from __future__ import annotations

import re

import asyncpg
import pytest
from support.console import make_chatbot

KEYS = ["support", "sales", "faq", "booking", "product_guide"]


async def test_five_templates_each_a_complete_valid_config(tenant_conn):
    rows = await tenant_conn.fetch("SELECT * FROM parley.list_chatbot_templates()")
    assert [r["key"] for r in rows] == KEYS
    bot = await tenant_conn.fetchrow("SELECT id FROM parley.create_chatbot('Shop')")
    for r in rows:
        cfg = r["config"]
        assert r["title"] and r["description"]
        assert {"persona", "greeting", "starters", "texts", "handoff", "lead_capture"} <= set(cfg), r["key"]
        assert set(cfg["texts"]) == {"es", "fr", "de", "tr"}, r["key"]
        # what the template sets passes the same checks as any chatbot config
        applied = await tenant_conn.fetchrow("SELECT config FROM parley.apply_chatbot_template($1, $2)",
                                             bot["id"], r["key"])
        assert applied["config"]["persona"] == cfg["persona"]


async def test_apply_replaces_what_the_template_sets_and_keeps_the_rest(tenant_conn):
    bot = await tenant_conn.fetchrow(
        "SELECT id FROM parley.create_chatbot('Shop', '{}', $1)",
        {"greeting": "Old", "branding": {"primary_color": "#112233"}, "handoff": {"miss_threshold": 5}})
    row = await tenant_conn.fetchrow("SELECT config FROM parley.apply_chatbot_template($1, 'faq')", bot["id"])
    cfg = row["config"]
    assert cfg["branding"] == {"primary_color": "#112233"}
    assert cfg["greeting"].startswith("Hi! Ask me a question") and cfg["handoff"] == {"miss_threshold": 0}
    audit = await tenant_conn.fetchrow(
        "SELECT details FROM parley.audit_log WHERE action = 'chatbot.apply_template' AND target_id = $1",
        str(bot["id"]))
    assert audit["details"]["template"] == "faq"
    assert audit["details"]["before"] == {"greeting": "Old", "handoff": {"miss_threshold": 5}}
    # the German visitor gets the template's German greeting once German is among its languages
    await tenant_conn.execute("SELECT 1 FROM parley.update_chatbot($1, NULL, NULL, $2)", bot["id"],
                              {"languages": ["en", "de"]})
    config = await tenant_conn.fetchval("SELECT config FROM parley.chatbots WHERE id = $1", bot["id"])
    local = await tenant_conn.fetchval(
        "SELECT parley.localize_widget_config(parley.chatbot_public_config('Shop', $1, false), $1, 'de-DE')", config)
    assert local["greeting"].startswith("Hallo! Stellen Sie eine Frage")


async def test_templates_refuse_unknown_keys_agents_and_other_tenants(tenant_conn, rows):
    bot = await tenant_conn.fetchrow("SELECT id FROM parley.create_chatbot('Shop')")
    with pytest.raises(asyncpg.PostgresError, match="No template"):
        async with tenant_conn.transaction():
            await tenant_conn.execute("SELECT 1 FROM parley.apply_chatbot_template($1, 'pirate')", bot["id"])
    other = await rows.tenant()
    theirs = await rows.chatbot(other, "Theirs")
    with pytest.raises(asyncpg.PostgresError, match="No such chatbot"):
        async with tenant_conn.transaction():
            await tenant_conn.execute("SELECT 1 FROM parley.apply_chatbot_template($1, 'sales')", theirs["id"])
    await tenant_conn.execute("SELECT set_config('app.role', 'agent', true)")
    with pytest.raises(asyncpg.PostgresError, match="admin role"):
        async with tenant_conn.transaction():
            await tenant_conn.execute("SELECT 1 FROM parley.apply_chatbot_template($1, 'sales')", bot["id"])


async def test_api_lists_creates_from_and_applies_templates(server, signup):
    owner = await signup(server)
    token = owner["access_token"]
    status, out = await server.call("GET", "/api/chatbot-templates", token=token)
    assert status == 200 and [t["key"] for t in out["templates"]] == KEYS
    status, bot = await server.call("POST", "/api/chatbots", token=token, json={"name": "Sales", "template": "sales"})
    assert status == 201, bot
    assert bot["config"]["lead_capture"] == {"mode": "after_messages", "after": 2}
    status, bot = await server.call("POST", f"/api/chatbots/{bot['id']}/template", token=token,
                                    json={"template": "booking"})
    assert status == 200 and bot["config"]["greeting"] == "Hi! Would you like to book an appointment?"
    status, err = await server.call("POST", f"/api/chatbots/{bot['id']}/template", token=token,
                                    json={"template": "pirate"})
    assert status == 422 and err["error"]["code"] == "unknown_template"
    agent = await signup(server, join=owner, role="agent")
    status, err = await server.call("POST", f"/api/chatbots/{bot['id']}/template", token=agent["access_token"],
                                    json={"template": "faq"})
    assert status == 403, err


async def test_onboarding_offers_the_templates_and_creates_from_one(server, signup, console_client):
    owner = await signup(server)
    c = console_client()
    await c.sign_in(owner["email"], owner["password"])
    status, html, _ = await c.get("/console/onboarding?step=chatbot")
    assert status == 200
    offered = re.findall(r'<input type="radio" name="template" value="([^"]*)"', html)
    assert offered == [*KEYS, ""]
    status, html, resp = await c.post("/console/chatbots", {"name": "Desk", "from": "onboarding",
                                                            "template": "product_guide"})
    assert status == 200 and "step=knowledge" in str(resp.url)
    status, bots = await server.call("GET", "/api/chatbots", token=owner["access_token"])
    (bot,) = bots["chatbots"]
    assert bot["config"]["greeting"] == "Hi! What would you like to do? I can walk you through it."
    assert bot["config"]["handoff"] == {"miss_threshold": 3}


async def test_settings_apply_a_template(server, signup, console_client):
    owner = await signup(server)
    bot = await make_chatbot(server, owner["access_token"], config={"greeting": "Mine"})
    c = console_client()
    await c.sign_in(owner["email"], owner["password"])
    status, html, _ = await c.get(f"/console/chatbots/{bot['id']}")
    form = re.search(r'<form[^>]*id="template-form".*?</form>', html, re.S).group(0)
    assert re.findall(r'<option value="([^"]*)"', form) == ["", *KEYS]
    status, html, _resp = await c.post(f"/console/chatbots/{bot['id']}/template", {"template": "support"})
    assert status == 200 and "Template applied" in html
    assert 'value="Hi! How can we help you today?"' in html  # the greeting field shows the new text
    status, html, _ = await c.post(f"/console/chatbots/{bot['id']}/template", {"template": ""})
    assert status == 422 and "Choose one of the templates." in html
