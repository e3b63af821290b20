"""Console → Privacy: export a visitor or the workspace as a zip, erase a visitor; and restoring a
deleted workspace from the workspace list."""
from __future__ import annotations

import io
import re
import uuid
import zipfile

from support.console import make_chatbot


async def test_export_and_erase_from_the_console(server, signup, rows, owner_conn, console_client):
    owner = await signup(server)
    tenant_id = uuid.UUID(owner["tenant_id"])
    bot = await make_chatbot(server, owner["access_token"])
    conversation = await rows.conversation(tenant_id, bot["id"])
    await rows.message(tenant_id, conversation, "please forget me zq81")
    await owner_conn.execute(
        "INSERT INTO parley.leads (tenant_id, chatbot_id, conversation_id, email) VALUES ($1, $2, $3, 'zq81@ex.test')",
        tenant_id, bot["id"], conversation)
    c = console_client()
    await c.sign_in(owner["email"], owner["password"])
    status, html, _ = await c.get("/console/privacy")
    assert status == 200 and "A visitor" in html
    async with c.http.post(c.base_url + "/console/privacy/export.zip",
                           data={"_csrf": c.csrf, "email": "ZQ81@ex.test"}) as resp:
        assert resp.status == 200 and resp.content_type == "application/zip"
        archive = zipfile.ZipFile(io.BytesIO(await resp.read()))
    assert "please forget me zq81" in archive.read("messages.csv").decode()
    async with c.http.post(c.base_url + "/console/privacy/export.zip", data={"_csrf": c.csrf}) as resp:
        archive = zipfile.ZipFile(io.BytesIO(await resp.read()))
    assert {"audit.csv", "knowledge_sources.csv", "manifest.json"} <= set(archive.namelist())
    status, html, _ = await c.post("/console/privacy/erase", {"email": "nobody@ex.test"})
    assert status == 404 and "No conversation or lead of this visitor" in html
    status, html, _ = await c.post("/console/privacy/erase", {"email": "not an email"})
    assert status == 422 and "Enter an email address" in html
    status, html, _ = await c.post("/console/privacy/erase", {"conversation_id": str(conversation)})
    assert status == 200 and 'id="erased"' in html and "1 message(s), 1 lead(s)" in html
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.messages WHERE conversation_id = $1",
                                     conversation) == 0
    # Agents have no Privacy page.
    agent = await signup(server, join=owner, role="agent")
    a = console_client()
    await a.sign_in(agent["email"], agent["password"])
    status, html, _ = await a.get("/console/privacy")
    assert status == 403


async def test_restore_a_deleted_workspace_from_the_list(server, signup, console_client, owner_conn):
    owner = await signup(server)
    c = console_client()
    await c.sign_in(owner["email"], owner["password"])
    slug = await owner_conn.fetchval("SELECT slug FROM parley.tenants WHERE id = $1", uuid.UUID(owner["tenant_id"]))
    status, html, resp = await c.post("/console/settings/delete", {"confirm": slug})
    assert status == 200 and "/console/workspaces" in str(resp.url)
    assert 'id="deleted-workspaces"' in html and "Restore" in html
    tenant_id = re.search(r'id="deleted-workspaces".*?name="tenant_id" value="([^"]+)"', html, re.S).group(1)
    assert tenant_id == owner["tenant_id"]
    status, html, resp = await c.post("/console/workspaces/restore", {"tenant_id": tenant_id})
    assert status == 200 and "/console/inbox" in str(resp.url)
    assert await owner_conn.fetchval("SELECT deleted_at FROM parley.tenants WHERE id = $1",
                                     uuid.UUID(tenant_id)) is None
