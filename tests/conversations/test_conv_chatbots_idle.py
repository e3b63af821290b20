"""Chatbot CRUD and the widget lookup; idle close as the jobs process runs it."""
import asyncpg
from pyapp.config import role_password, url_for_role
from pyapp.db import _init_connection
from support.server import TEST_SECRET
from support.waits import notifications_delivered


async def test_chatbot_crud_keeps_unknown_config_keys(ws, owner_conn):
    config = {"greeting": "Hi!", "branding": {"primary_color": "#112233", "future_flag": True},
              "x_custom": {"nested": [1, 2]}, "lead_capture": {"mode": "after_messages", "after": 3}}
    status, bot = await ws.call("POST", "/api/chatbots", json={
        "name": "Sales", "allowed_origins": ["https://Shop.Test/"], "config": config})
    assert status == 201, bot
    assert bot["public_key"].startswith("pk_") and bot["allowed_origins"] == ["https://shop.test"]
    assert bot["config"] == config
    status, got = await ws.call("GET", f"/api/chatbots/{bot['id']}")
    assert got["config"] == config

    # PATCH merges at the top level; null removes a key; unknown keys survive
    status, bot2 = await ws.call("PATCH", f"/api/chatbots/{bot['id']}", json={
        "config": {"greeting": "Hello", "x_custom": None, "y_new": 1}})
    assert status == 200
    assert bot2["config"] == {**{k: v for k, v in config.items() if k != "x_custom"}, "greeting": "Hello", "y_new": 1}

    for bad in ({"allowed_origins": ["https://shop.test/path"]}, {"config": {"branding": {"primary_color": "red"}}},
                {"config": {"lead_capture": {"mode": "sometimes"}}}, {"name": ""}):
        status, _body = await ws.call("PATCH", f"/api/chatbots/{bot['id']}", json=bad)
        assert status == 422, bad

    widget = await owner_conn.fetchrow("SELECT * FROM parley.widget_chatbot($1)", bot["public_key"])
    assert widget["tenant_id"] == ws.tenant_id and str(widget["chatbot_id"]) == bot["id"]
    pub = widget["public_config"]
    assert pub["greeting"] == "Hello" and pub["lead_capture"] == {"mode": "after_messages", "after": 3}
    assert pub["branding"]["primary_color"] == "#112233" and pub["branding"]["position"] == "right"
    assert "x_custom" not in pub and "persona" not in pub

    status, rotated = await ws.call("POST", f"/api/chatbots/{bot['id']}/rotate-key")
    assert rotated["public_key"] != bot["public_key"]
    assert await owner_conn.fetch("SELECT * FROM parley.widget_chatbot($1)", bot["public_key"]) == []
    assert (await ws.call("DELETE", f"/api/chatbots/{bot['id']}"))[0] == 204
    assert await owner_conn.fetch("SELECT * FROM parley.widget_chatbot($1)", rotated["public_key"]) == []
    assert (await ws.call("GET", f"/api/chatbots/{bot['id']}"))[0] == 404
    assert await owner_conn.fetch("SELECT * FROM parley.widget_chatbot('pk_nope')") == []


async def test_idle_close_from_the_jobs_role(ws, owner_conn, settings):
    bot = await ws.chatbot()
    fresh = await ws.start(bot["id"])
    stale_bot = await ws.start(bot["id"])
    waiting_recent = await ws.start(bot["id"])
    waiting_old = await ws.start(bot["id"])
    for conv in (waiting_recent, waiting_old):
        await ws.call("POST", f"/api/conversations/{conv}/claim")
    ago = "UPDATE parley.conversations SET last_activity_at = now() - make_interval(mins => $2) WHERE id = $1"
    await owner_conn.execute(ago, stale_bot, 31)
    await owner_conn.execute(ago, waiting_recent, 120)
    await owner_conn.execute(ago, waiting_old, 25 * 60)

    jobs = await asyncpg.connect(url_for_role(settings.admin_url, "parley_jobs", role_password(TEST_SECRET, "parley_jobs")))
    await _init_connection(jobs)
    listener = await asyncpg.connect(settings.admin_url)
    notes = []
    await listener.add_listener("parley_events", lambda *args: notes.append(args[3]))

    async def run(idle=None):
        async with jobs.transaction():
            await jobs.execute("SELECT parley.begin_request($1, 'system', 'jobs', NULL, NULL, NULL, 'agent')", ws.tenant_id)
            return await jobs.fetchval("SELECT parley.close_idle_conversations($1::text::interval)", idle)

    try:
        assert await run() == 2
        status = dict(await owner_conn.fetch("SELECT id, status FROM parley.conversations WHERE tenant_id = $1", ws.tenant_id))
        assert (status[fresh], status[stale_bot], status[waiting_recent], status[waiting_old]) == \
            ("bot", "closed", "human", "closed")
        # configured per chatbot: human conversations close after 60 minutes
        await ws.call("PATCH", f"/api/chatbots/{bot['id']}", json={"config": {"idle_close": {"human_minutes": 60}}})
        assert await run() == 1
        # an explicit interval overrides the configuration
        assert await run("0 seconds") == 1
        assert await run() == 0
    finally:
        await jobs.close()
        await notifications_delivered(listener, owner_conn)
        await listener.close()
    reasons = [r["data"]["reason"] for r in await owner_conn.fetch(
        "SELECT data FROM parley.events WHERE tenant_id = $1 AND kind = 'closed' ORDER BY id", ws.tenant_id)]
    assert reasons == ["idle"] * 4
    # one NOTIFY per sweep transaction, even when it closed two conversations
    assert len(notes) == 3
