"""The text rule and the size limits: one home in SQL (sql/15_text.sql, check_lead_fields), a
checked copy in pyapp/types.py, and every bad character tried through every path people write
through (REST, the visitor socket, accounts, and SQL itself as a visitor)."""
from __future__ import annotations

import uuid

import asyncpg
import pytest

from pyapp import types
from pyapp.db import Actor, tenant_tx
from support.realtime import clients, tenant, visitor, widget_session  # noqa: F401 (fixtures)

# Every code point up to U+2FFF and some beyond, but NUL and the surrogates (text cannot hold them).
CODE_POINTS = [chr(c) for c in list(range(1, 0x3000)) + [0xFEFF, 0xFFFD, 0x1F600, 0xE0001] if not 0xD800 <= c <= 0xDFFF]
BAD = ["\u202e", "\u202a", "\u2066", "\u2069", "\x07", "\x1b", "\x7f", "\x85", "\x9b"]


@pytest.mark.parametrize("line", [False, True])
async def test_python_rule_is_sqls_code_point_by_code_point(owner_conn, line):
    sql = await owner_conn.fetchval(
        "SELECT array_agg(parley.unsafe_text(c, $2) ORDER BY i) FROM unnest($1::text[]) WITH ORDINALITY u(c, i)",
        CODE_POINTS, line)
    rule = types.UNSAFE_IN_LINE if line else types.UNSAFE_IN_TEXT
    differ = [hex(ord(c)) for c, s in zip(CODE_POINTS, sql) if bool(rule.search(c)) != s]
    assert differ == []
    assert sum(sql) == (32 + 33 + 9 - 1 if line else 32 - 3 + 33 + 9 - 1)  # C0 (no NUL), C1 + DEL, bidi


async def test_python_limits_are_sqls(owner_conn):
    assert await owner_conn.fetchval("SELECT parley.message_body_max('visitor')") == types.MESSAGE_BODY_MAX
    assert await owner_conn.fetchval("SELECT parley.message_body_max('agent')") == types.MESSAGE_BODY_MAX
    assert await owner_conn.fetchval("SELECT parley.message_body_max('bot')") == types.BOT_MESSAGE_BODY_MAX
    check = await owner_conn.fetchval(
        "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c JOIN pg_attribute a"
        " ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)"
        " WHERE c.conrelid = 'parley.messages'::regclass AND c.contype = 'c' AND a.attname = 'body'")
    assert f"<= {types.BOT_MESSAGE_BODY_MAX}" in check

    async def lead_ok(name=None, email=None, phone=None) -> bool:
        try:
            await owner_conn.execute("SELECT parley.check_lead_fields($1, $2, $3, NULL)", name, email, phone)
            return True
        except asyncpg.PostgresError:
            return False

    assert await lead_ok(name="n" * types.LEAD_NAME_MAX) and not await lead_ok(name="n" * (types.LEAD_NAME_MAX + 1))
    email = "a@b." + "c" * (types.LEAD_EMAIL_MAX - 4)
    assert await lead_ok(email=email) and not await lead_ok(email=email + "c")
    phone = "1" * types.LEAD_PHONE_MAX
    assert await lead_ok(phone=phone) and not await lead_ok(phone=phone + "1")


async def test_sql_refuses_bad_text_whoever_calls(settings, tenant, owner_conn):  # noqa: F811
    """Below Python: a visitor's own transaction calling SQL directly stores none of it."""
    tenant_id = uuid.UUID(tenant["tenant_id"])
    pool = await asyncpg.create_pool(settings.app_url, min_size=1, max_size=1)
    try:
        async with tenant_tx(pool, Actor(tenant_id=tenant_id, kind="service", min_role="visitor")) as conn:
            conv = (await conn.fetchrow("SELECT * FROM parley.start_conversation($1, $2)",
                                        tenant["chatbot_id"], uuid.uuid4()))["id"]
        for ch in BAD:
            actor = Actor(tenant_id=tenant_id, kind="visitor", actor_id=str(conv), min_role="visitor")
            for sql, args, code in (
                    ("SELECT * FROM parley.post_message($1, 'visitor', $2)", (conv, f"hi {ch} there"), "invalid_text"),
                    ("SELECT * FROM parley.capture_lead($1, $2, NULL, NULL, '{}')", (conv, f"Ann{ch}"), "invalid_name"),
                    ("SELECT * FROM parley.capture_lead($1, NULL, $2, NULL, '{}')", (conv, f"a{ch}@b.example"),
                     "invalid_email")):
                with pytest.raises(asyncpg.PostgresError) as exc:
                    async with tenant_tx(pool, actor) as conn:
                        await conn.fetchrow(sql, *args)
                assert (exc.value.sqlstate, exc.value.hint) == ("PT422", code), (repr(ch), sql)
    finally:
        await pool.close()
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.messages WHERE conversation_id = $1", conv) == 0
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.leads WHERE conversation_id = $1", conv) == 0


async def test_every_path_refuses_bad_text(server, tenant, owner_conn, clients):  # noqa: F811
    token = tenant["access_token"]
    session = await widget_session(server, tenant["key"])
    v = await visitor(server, session)
    clients.append(v)
    await v.send({"type": "message", "client_id": "ok", "body": "Hello\tthere\nfriend"})  # tab, newline: fine
    await v.expect_message(author="visitor", body="Hello\tthere\nfriend")
    conv = uuid.UUID(await owner_conn.fetchval("SELECT id::text FROM parley.conversations WHERE chatbot_id = $1",
                                               tenant["chatbot_id"]))
    for n, ch in enumerate(BAD + ["\x00"]):
        # the visitor socket: a message and the lead form
        await v.send({"type": "message", "client_id": f"bad{n}", "body": f"pay {ch}here"})
        await v.expect(type="error", client_id=f"bad{n}")
        await v.send({"type": "lead", "name": f"Ann{ch}", "email": "ann@example.com"})
        await v.expect(type="error")
        # REST: an agent's reply, a note, the lead of a conversation, a lead by hand, a chatbot's name
        for method, path, body in (("POST", f"/api/conversations/{conv}/reply", {"body": f"x{ch}"}),
                                   ("POST", f"/api/conversations/{conv}/notes", {"body": f"x{ch}"}),
                                   ("POST", f"/api/conversations/{conv}/lead", {"name": f"Ann{ch}"}),
                                   ("POST", "/api/leads", {"name": f"Ann{ch}"}),
                                   ("POST", "/api/leads", {"phone": f"+1{ch}555"}),
                                   ("POST", "/api/chatbots", {"name": f"Bot{ch}"})):
            status, out = await server.call(method, path, json=body, token=token)
            assert status == 422 and "error" in out, (repr(ch), path, status, out)
        # accounts: a person's name, a workspace's name
        status, out = await server.call("POST", "/api/auth/signup", json={
            "email": f"p{n}@example.com", "password": "correct horse battery", "name": f"Ev{ch}e",
            "tenant_name": "Acme", "slug": f"acme-{n}-{uuid.uuid4().hex[:6]}"})
        assert status == 422, (repr(ch), status, out)
    bodies = [r["body"] for r in await owner_conn.fetch(
        "SELECT body FROM parley.messages WHERE conversation_id = $1 AND author <> 'bot'", conv)]
    assert bodies == ["Hello\tthere\nfriend"]
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.leads WHERE tenant_id = $1",
                                     uuid.UUID(tenant["tenant_id"])) == 0
