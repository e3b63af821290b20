"""GDPR: a visitor's and a workspace's export, erasing a visitor (then nothing of them anywhere in
the tenant's tables), and deleting a workspace: restorable during its grace, then purged to zero
rows in every table the catalog says is tenant-owned, while other tenants are untouched."""
from __future__ import annotations

import csv
import io
import json
import uuid
import zipfile

import asyncpg
import pytest
from pyapp.db import Actor, tenant_tx
from support.cli import run_parley as _cli
from support.rows import VISITOR_IP

# Every table of schema parley with a tenant_id column, from the catalog: a new table is covered.
TENANT_TABLES = """
SELECT c.oid::regclass::text FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'parley'
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
 WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1"""


async def _seed(rows, owner_conn, owner, marker: str) -> dict:
    """A visitor with two conversations, messages, a lead, feedback, a rating, an assistant turn,
    an outbox delivery and a knowledge source, every text carrying `marker`."""
    bot = await rows.chatbot(owner)
    first = await rows.conversation(owner.tenant_id, bot["id"])
    second = await rows.conversation(owner.tenant_id, bot["id"])
    visitor = await owner_conn.fetchval("SELECT visitor_id FROM parley.conversations WHERE id = $1", first)
    await owner_conn.execute(
        "UPDATE parley.conversations SET visitor_id = $2, page_url = $3, user_agent = $4 WHERE id = ANY($1)",
        [first, second], visitor, f"https://shop.test/{marker}", f"UA {marker}")
    said = await rows.message(owner.tenant_id, first, f"my order {marker} never came")
    await rows.message(owner.tenant_id, second, f"second time {marker}")
    email = f"{marker}@example.test"
    t = owner.tenant_id
    await owner_conn.execute(
        "INSERT INTO parley.leads (tenant_id, chatbot_id, conversation_id, name, email, phone, custom)"
        " VALUES ($1, $2, $3, $4, $5, '+1 555 0100', $6::text::jsonb)",
        t, bot["id"], first, f"Name {marker}", email, json.dumps({"note": f"custom {marker}"}))
    await owner_conn.execute(
        "INSERT INTO parley.message_feedback (tenant_id, message_id, conversation_id, chatbot_id, value, comment)"
        " VALUES ($1, $2, $3, $4, 'down', $5)", t, said["id"], first, bot["id"], f"bad {marker}")
    await owner_conn.execute(
        "INSERT INTO parley.conversation_ratings (tenant_id, conversation_id, chatbot_id, score, comment)"
        " VALUES ($1, $2, $3, 2, $4)", t, first, bot["id"], f"meh {marker}")
    await owner_conn.execute(
        "INSERT INTO parley.assistant_turns (tenant_id, chatbot_id, conversation_id, question_norm, outcome)"
        " VALUES ($1, $2, $3, $4, 'unknown')", t, bot["id"], first, f"order {marker}")
    await owner_conn.execute(
        "INSERT INTO parley.knowledge_sources (tenant_id, chatbot_id, kind, title) VALUES ($1, $2, 'text', 'FAQ')",
        t, bot["id"])
    # A webhook delivery of the visitor's message and its logged attempt (the request it sent).
    hook = await owner_conn.fetchval(
        "INSERT INTO parley.outbox_destinations (tenant_id, kind, name, target) VALUES ($1, 'webhook', 'CRM',"
        " 'https://crm.example/hook') RETURNING id", t)
    delivery = await owner_conn.fetchval(
        "INSERT INTO parley.outbox (tenant_id, destination_id, kind, conversation_id, payload, deadline)"
        " VALUES ($1, $2, 'conversation.message_added', $3, $4::text::jsonb, now() + interval '3 days') RETURNING id",
        t, hook, first, json.dumps({"body": f"my order {marker} never came"}))
    await owner_conn.execute(
        "INSERT INTO parley.outbox_attempts (tenant_id, delivery_id, destination_id, attempt, outcome, request)"
        " VALUES ($1, $2, $3, 1, 'delivered', $4::text::jsonb)",
        t, delivery, hook, json.dumps({"body": f"my order {marker} never came"}))
    return {"chatbot": bot, "conversations": [first, second], "email": email, "visitor": visitor,
            "marker": marker}


async def _mentions(owner_conn, tenant_id, needle: str) -> dict[str, int]:
    found = {}
    for (table,) in await owner_conn.fetch(TENANT_TABLES):
        n = await owner_conn.fetchval(
            f"SELECT count(*) FROM {table} t WHERE t.tenant_id = $1 AND t::text ILIKE '%' || $2 || '%'",
            tenant_id, needle)
        if n:
            found[table] = n
    return found


async def _counts(owner_conn, tenant_id) -> dict[str, int]:
    return {table: await owner_conn.fetchval(f"SELECT count(*) FROM {table} WHERE tenant_id = $1", tenant_id)
            for (table,) in await owner_conn.fetch(TENANT_TABLES)}


def _zip(body: bytes) -> dict[str, list[dict]]:
    archive = zipfile.ZipFile(io.BytesIO(body))
    out = {}
    for name in archive.namelist():
        if name.endswith(".csv"):
            out[name] = list(csv.DictReader(io.StringIO(archive.read(name).decode())))
    out["manifest"] = json.loads(archive.read("manifest.json"))
    return out


async def _get_zip(server, path, token):
    async with server.http.get(server.base_url + path, headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


async def test_export_a_visitor_and_the_whole_workspace(server, rows, owner_conn):
    owner = await rows.tenant()
    agent = await rows.member(owner, "agent")
    seeded = await _seed(rows, owner_conn, owner, f"mk{uuid.uuid4().hex[:8]}")
    other_visitor = await rows.conversation(owner.tenant_id, seeded["chatbot"]["id"])
    await rows.message(owner.tenant_id, other_visitor, "someone else entirely")
    token = owner.access_token()
    # By email: both conversations of that visitor, their messages, lead, feedback; nothing else.
    status, kind, body = await _get_zip(server, f"/api/gdpr/export?email={seeded['email'].upper()}", token)
    assert status == 200 and kind == "application/zip", body[:300]
    files = _zip(body)
    assert files["manifest"]["scope"] == "visitor"
    assert {r["id"] for r in files["conversations.csv"]} == {str(c) for c in seeded["conversations"]}
    assert files["conversations.csv"][0]["ip"] == VISITOR_IP
    bodies = {r["body"] for r in files["messages.csv"]}
    assert any(seeded["marker"] in b for b in bodies) and "someone else entirely" not in bodies
    assert [r["email"] for r in files["leads.csv"]] == [seeded["email"]]
    assert {r["kind"] for r in files["feedback.csv"]} == {"message", "rating"}
    assert "audit.csv" not in files and "knowledge_sources.csv" not in files
    # By conversation id: the same visitor.
    status, _, body = await _get_zip(server, f"/api/gdpr/export?conversation_id={seeded['conversations'][1]}", token)
    assert status == 200 and {r["id"] for r in _zip(body)["conversations.csv"]} == {
        str(c) for c in seeded["conversations"]}
    # The whole workspace: everything, with knowledge sources and the audit trail.
    status, _, body = await _get_zip(server, "/api/gdpr/export", token)
    files = _zip(body)
    assert files["manifest"]["scope"] == "tenant" and len(files["conversations.csv"]) == 3
    assert len(files["messages.csv"]) == 3 and files["knowledge_sources.csv"][0]["title"] == "FAQ"
    assert any(r["action"] == "gdpr.visitor_exported" for r in files["audit.csv"])
    # Audited, without the email; agents may not export.
    details = await owner_conn.fetch("SELECT action, details FROM parley.audit_log WHERE tenant_id = $1"
                                     " AND action LIKE 'gdpr.%' ORDER BY id", owner.tenant_id)
    assert [d["action"] for d in details] == ["gdpr.visitor_exported", "gdpr.visitor_exported",
                                              "gdpr.tenant_exported"]
    assert all(seeded["email"] not in str(d["details"]) for d in details)
    status, _, body = await _get_zip(server, "/api/gdpr/export", agent.access_token())
    assert status == 403
    status, _, body = await _get_zip(server, "/api/gdpr/export?email=nobody@example.test", token)
    assert status == 404 and json.loads(body)["error"]["code"] == "visitor_not_found"
    status, _, body = await _get_zip(server, "/api/gdpr/export?conversation_id=not-a-uuid", token)
    assert status == 422


async def test_erase_leaves_nothing_of_the_visitor(server, rows, owner_conn):
    owner = await rows.tenant()
    other = await rows.tenant()
    seeded = await _seed(rows, owner_conn, owner, f"er{uuid.uuid4().hex[:8]}")
    # The other tenant has a lead with the very same email: it is not this tenant's to erase.
    theirs = await _seed(rows, owner_conn, other, seeded["marker"])
    keep = await rows.conversation(owner.tenant_id, seeded["chatbot"]["id"])
    await rows.message(owner.tenant_id, keep, "another visitor stays")
    before_other = await _counts(owner_conn, other.tenant_id)
    assert await _mentions(owner_conn, owner.tenant_id, seeded["marker"])
    # Another tenant's admin cannot reach this visitor, by id or by email.
    for body in ({"conversation_id": str(seeded["conversations"][0])}, {"email": "no-such@example.test"}):
        status, out = await server.call("POST", "/api/gdpr/erase", json=body, token=other.access_token())
        assert (status, out["error"]["code"]) == (404, "visitor_not_found"), out
    # ...nor export them.
    status, _, body = await _get_zip(server, f"/api/gdpr/export?conversation_id={seeded['conversations'][0]}",
                                     other.access_token())
    assert status == 404 and seeded["marker"] not in body.decode()
    status, out = await server.call("POST", "/api/gdpr/erase", json={}, token=owner.access_token())
    assert status == 422
    status, out = await server.call("POST", "/api/gdpr/erase", json={"email": seeded["email"]},
                                    token=owner.access_token())
    assert status == 200, out
    assert out == {"conversations": 2, "messages": 2, "leads": 1, "feedback": 2, "by": "email"}
    # Nothing of the visitor in any of the tenant's tables: no email, no text, no page, no address.
    assert await _mentions(owner_conn, owner.tenant_id, seeded["marker"]) == {}
    assert await _mentions(owner_conn, owner.tenant_id, str(seeded["visitor"])) == {}
    assert await _mentions(owner_conn, owner.tenant_id, VISITOR_IP) == {"parley.conversations": 1}  # the other one
    kept = await owner_conn.fetch("SELECT id, ip FROM parley.conversations WHERE id = ANY($1)",
                                  seeded["conversations"])
    assert len(kept) == 2 and all(r["ip"] is None for r in kept)
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.messages WHERE conversation_id = $1", keep) == 1
    # The erasure is audited without the erased data.
    audit = await owner_conn.fetchrow("SELECT actor_id, details::text AS details FROM parley.audit_log"
                                      " WHERE tenant_id = $1 AND action = 'gdpr.visitor_erased'", owner.tenant_id)
    assert audit["actor_id"] == str(owner.user_id) and seeded["marker"] not in audit["details"]
    # The other tenant is untouched.
    assert await _counts(owner_conn, other.tenant_id) == before_other
    assert await _mentions(owner_conn, other.tenant_id, theirs["marker"])


async def test_delete_restore_then_purge_to_zero_rows(server, rows, owner_conn, settings):
    owner = await rows.tenant()
    await rows.member(owner, "agent")
    other = await rows.tenant()
    await _seed(rows, owner_conn, owner, f"pg{uuid.uuid4().hex[:8]}")
    await _seed(rows, owner_conn, other, f"ot{uuid.uuid4().hex[:8]}")
    waiting = await rows.tenant()  # deleted too, but still in its grace: kept
    before_other = await _counts(owner_conn, other.tenant_id)
    token = owner.access_token()
    assert (await server.call("DELETE", "/api/tenant", token=token))[0] == 204
    assert (await server.call("DELETE", "/api/tenant", token=waiting.access_token()))[0] == 204
    status, body = await server.call("GET", "/api/members", token=token)
    assert (status, body["error"]["code"]) == (404, "tenant_not_found")
    grace = await owner_conn.fetchval("SELECT purge_after - deleted_at FROM parley.tenants WHERE id = $1",
                                      owner.tenant_id)
    assert grace.days == 30
    # During the grace an owner restores it (and only an owner of it).
    status, body = await server.call("GET", "/api/tenants/deleted", token=token)
    assert status == 200 and [t["id"] for t in body["tenants"]] == [str(owner.tenant_id)]
    status, body = await server.call("POST", f"/api/tenants/{owner.tenant_id}/restore", token=other.access_token())
    assert status == 404
    status, body = await server.call("POST", f"/api/tenants/{owner.tenant_id}/restore", token=token)
    assert status == 200 and body["id"] == str(owner.tenant_id)
    assert (await server.call("GET", "/api/members", token=token))[0] == 200
    assert (await server.call("DELETE", "/api/tenant", token=token))[0] == 204
    # Grace over: the job's function purges it batch by batch, as parley_jobs.
    await owner_conn.execute("UPDATE parley.tenants SET purge_after = now() - interval '1 second' WHERE id = $1",
                             owner.tenant_id)
    assert sum((await _counts(owner_conn, owner.tenant_id)).values()) > 20
    jobs = await asyncpg.connect(settings.jobs_url)
    try:
        batches = []
        while deleted := await jobs.fetchval("SELECT parley.purge_deleted_tenants(7)"):
            batches.append(deleted)
            assert len(batches) < 200
    finally:
        await jobs.close()
    assert len(batches) > 2 and max(batches) <= 7 * 2  # a pass may finish a table past the budget never
    leftover = {t: n for t, n in (await _counts(owner_conn, owner.tenant_id)).items() if n}
    assert leftover == {"parley.tenant_purges": 1}  # the record of the purge: ids and times
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.tenants WHERE id = $1", owner.tenant_id) == 0
    record = await owner_conn.fetchrow("SELECT * FROM parley.tenant_purges WHERE tenant_id = $1", owner.tenant_id)
    assert record["purged_at"] >= record["purge_after"]
    # The owner's account survives (the workspace does not); others are untouched.
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.users WHERE id = $1", owner.user_id) == 1
    assert await _counts(owner_conn, other.tenant_id) == before_other
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.tenants WHERE id = $1", waiting.tenant_id) == 1


async def test_staff_delete_takes_the_same_path(server, rows, owner_conn, settings):
    from pyapp.context import SETTINGS  # noqa: F401 (the server's settings carry the staff list)

    owner = await rows.tenant()
    staff = await rows.tenant()
    await owner_conn.execute("INSERT INTO parley.staff_emails (email) VALUES ($1)", staff.email.lower())
    await owner_conn.execute("UPDATE parley.users SET email_verified_at = now() WHERE id = $1", staff.user_id)
    status, body = await server.call("DELETE", f"/api/staff/tenants/{owner.tenant_id}", token=owner.access_token())
    assert status == 403
    status, body = await server.call("DELETE", f"/api/staff/tenants/{owner.tenant_id}", token=staff.access_token())
    assert status == 204, body
    row = await owner_conn.fetchrow("SELECT deleted_at, purge_after FROM parley.tenants WHERE id = $1",
                                    owner.tenant_id)
    assert row["deleted_at"] and (row["purge_after"] - row["deleted_at"]).days == 30


async def test_purge_rights_are_confined(rows, owner_conn, settings):
    """parley_purge deletes audit rows only of a tenant past its grace; no login role deletes any."""
    live = await rows.tenant()
    for role in ("parley_app", "parley_jobs", "parley_analyst", "parley_auth"):
        assert not await owner_conn.fetchval("SELECT has_table_privilege($1, 'parley.audit_log', 'DELETE')", role)
    assert not await owner_conn.fetchval("SELECT rolcanlogin OR rolbypassrls FROM pg_roles WHERE rolname = 'parley_purge'")
    async with owner_conn.transaction():
        await owner_conn.execute("SET LOCAL ROLE parley_purge")
        await owner_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(live.tenant_id))
        assert await owner_conn.execute("DELETE FROM parley.audit_log WHERE tenant_id = $1", live.tenant_id) \
            == "DELETE 0"
        assert await owner_conn.execute("DELETE FROM parley.tenants WHERE id = $1", live.tenant_id) == "DELETE 0"
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.audit_log WHERE tenant_id = $1", live.tenant_id)
    # Erasure is the admins' own: an agent's transaction is refused in SQL.
    agent = await rows.member(live, "agent")
    pool = await asyncpg.create_pool(settings.app_url, min_size=1, max_size=1)
    try:
        with pytest.raises(asyncpg.PostgresError) as caught:
            async with tenant_tx(pool, Actor(tenant_id=live.tenant_id, kind="user", actor_id=str(agent.user_id),
                                             session_id=agent.session_id, min_role="agent")) as conn:
                await conn.execute("SELECT parley.gdpr_erase_visitor(NULL, 'x@example.test')")
        assert "admin" in str(caught.value)
    finally:
        await pool.close()


async def test_the_cli_exports_erases_and_purges(rows, owner_conn, settings, tmp_path):
    owner = await rows.tenant()
    seeded = await _seed(rows, owner_conn, owner, f"cl{uuid.uuid4().hex[:8]}")
    slug = await owner_conn.fetchval("SELECT slug FROM parley.tenants WHERE id = $1", owner.tenant_id)
    out = tmp_path / "visitor.zip"
    code, stdout, err = await _cli(settings, "gdpr", "export", slug, "--email", seeded["email"], "--out", str(out))
    assert code == 0, err
    files = _zip(out.read_bytes())
    assert files["manifest"]["scope"] == "visitor" and len(files["messages.csv"]) == 2
    whole = tmp_path / "workspace.zip"
    code, stdout, err = await _cli(settings, "gdpr", "export", slug, "--out", str(whole))
    assert code == 0, err
    files = _zip(whole.read_bytes())
    assert files["manifest"]["scope"] == "tenant" and any(r["action"] == "gdpr.visitor_exported"
                                                          for r in files["audit.csv"])
    code, stdout, err = await _cli(settings, "gdpr", "erase", slug, "--conversation", str(seeded["conversations"][0]))
    assert code == 0, err
    assert json.loads(stdout)["messages"] == 2
    code, stdout, err = await _cli(settings, "gdpr", "erase", slug, "--email", "nobody@example.test")
    assert code == 1 and "visitor_not_found" in err
    assert await _mentions(owner_conn, owner.tenant_id, seeded["marker"]) == {}
    # Purge --now refuses a live workspace, then purges a deleted one at once.
    code, stdout, err = await _cli(settings, "gdpr", "purge", "--now", slug)
    assert code == 1 and "not deleted" in err
    await owner_conn.execute("UPDATE parley.tenants SET deleted_at = now(), purge_after = now() + interval '30 days'"
                             " WHERE id = $1", owner.tenant_id)
    code, stdout, err = await _cli(settings, "gdpr", "purge", "--now", slug, "--batch", "50")
    assert code == 0, err
    assert {t: n for t, n in (await _counts(owner_conn, owner.tenant_id)).items() if n} == {
        "parley.tenant_purges": 1}
