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
CODE_POINTS = [chr(c) for c in [*range(1, 0x3000), 0xFEFF, 0xFFFD, 0x1F600, 0xE0001] if not 0xD800 <= c <= 0xDFFF]
BAD = ["\u202e", "\u202a", "\u2066", "\u2069", "\x07", "\x1b", "\x7f", "\x85", "\x9b"]


@pytest.mark.parametrize("line", [False, True])
async def test_python_rule_is_sqls_code_point_by_code_point(owner_conn, line):
    sql = await owner_conn.fetchval(
        "SELECT array_agg(parley.unsafe_text(c, $2) ORDER BY i) FROM unnest($1::text[]) WITH ORDINALITY u(c, i)",
        CODE_POINTS, line)
    rule = types.UNSAFE_IN_LINE if line else types.UNSAFE_IN_TEXT
    differ = [hex(ord(c)) for c, s in zip(CODE_POINTS, sql, strict=True) if bool(rule.search(c)) != s]
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
    check = await owner_conn.fetchval(
        "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c JOIN pg_attribute a"
        " ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)"
        " WHERE c.conrelid = 'parley.system_texts'::regclass AND c.contype = 'c' AND a.attname = 'body'")
    assert f"<= {types.SYSTEM_TEXT_MAX}" in check  # length(body) BETWEEN 1 AND 2000

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
    for n, ch in enumerate([*BAD, "\x00"]):
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


async def test_names_are_one_line_of_text_on_every_write(owner_conn, tenant):  # noqa: F811
    """Below every route: even the owner writing the tables directly cannot store a name that
    breaks the one-line rule (people, workspaces, chatbots, API keys), on insert or update."""
    tenant_id = uuid.UUID(tenant["tenant_id"])
    key_id = await owner_conn.fetchval(
        "INSERT INTO parley.api_keys (tenant_id, name, prefix, key_hash, scopes) VALUES ($1, 'ci', 'pk_x', $2, '{read}')"
        " RETURNING id", tenant_id, uuid.uuid4().bytes)
    targets = (("UPDATE parley.users SET name = $1 WHERE id = $2", uuid.UUID(tenant["user_id"])),
               ("UPDATE parley.tenants SET name = $1 WHERE id = $2", tenant_id),
               ("UPDATE parley.chatbots SET name = $1 WHERE id = $2", tenant["chatbot_id"]),
               ("UPDATE parley.api_keys SET name = $1 WHERE id = $2", key_id))
    for sql, row_id in targets:
        for ch in [*BAD, "\n", "\t", "\r"]:
            with pytest.raises(asyncpg.PostgresError) as exc:
                await owner_conn.execute(sql, f"Acme{ch}Support", row_id)
            assert (exc.value.sqlstate, exc.value.hint) == ("PT422", "invalid_name"), (sql, repr(ch))
        await owner_conn.execute(sql, "Acme Support — Zürich 支援", row_id)  # any other character is fine
    with pytest.raises(asyncpg.PostgresError) as exc:
        await owner_conn.execute("INSERT INTO parley.chatbots (tenant_id, name) VALUES ($1, $2)", tenant_id, "Bot\u202e")
    assert exc.value.hint == "invalid_name"
    with pytest.raises(asyncpg.PostgresError) as exc:
        await owner_conn.execute("INSERT INTO parley.tenants (slug, name) VALUES ($1, $2)",
                                 f"t-{uuid.uuid4().hex[:8]}", "Acme\u2066")
    assert exc.value.hint == "invalid_name"


async def test_lead_custom_fields_meet_the_text_rule(server, tenant, owner_conn, clients):  # noqa: F811
    """Custom values (any depth) are text, their keys one line: SQL refuses the rest whoever calls,
    REST and the visitor's lead form answer the same before SQL."""

    async def sql_ok(custom) -> bool:
        try:
            await owner_conn.execute("SELECT parley.check_lead_fields(NULL, NULL, NULL, $1)", custom)
            return True
        except asyncpg.PostgresError as exc:
            assert (exc.sqlstate, exc.hint) == ("PT422", "invalid_custom")
            return False

    assert await sql_ok({"address": "1 Main St\nSpringfield", "n": 3, "tags": ["a", {"b": "c\td"}]})
    for ch in BAD:
        assert not await sql_ok({"company": f"Acme{ch}"})
        assert not await sql_ok({"deep": [1, {"x": [f"y{ch}"]}]})
        assert not await sql_ok({f"key{ch}": "v"})
        assert not await sql_ok({"outer": {f"in{ch}ner": 1}})
    assert not await sql_ok({"multi\nline key": 1})

    token = tenant["access_token"]
    for custom in ({"company": "Acme\u202e"}, {"k": [{"x": "y\x1b"}]}, {"bad\nkey": 1}, {"nul": "a\x00b"}):
        status, out = await server.call("POST", "/api/leads", json={"name": "Ann", "custom": custom}, token=token)
        assert status == 422 and "error" in out, (custom, status, out)
    status, out = await server.call("POST", "/api/leads", json={"name": "Ann", "custom": {"note": "two\nlines"}},
                                    token=token)
    assert status == 201, out

    session = await widget_session(server, tenant["key"])
    v = await visitor(server, session)
    clients.append(v)
    await v.send({"type": "lead", "name": "Bea", "email": "bea@example.com", "company": "Acme\u202e"})
    await v.expect(type="error")
    names = [r["name"] for r in await owner_conn.fetch("SELECT name FROM parley.leads WHERE tenant_id = $1",
                                                       uuid.UUID(tenant["tenant_id"]))]
    assert names == ["Ann"]
