"""`parley migrate` during traffic: re-applying sql/ over a current schema takes no lock an open
transaction holds up (policies and RLS are compared, not recreated), a policy someone changed is
put back, and a lock it must take waits at most lock_timeout per try, then gives up naming who held it."""
from __future__ import annotations

import asyncio
import dataclasses
import re
from contextlib import asynccontextmanager

import asyncpg
import psycopg
import pytest
from pyapp.db import _init_connection
from pyapp.migrate import MigrateLockTimeout, apply_sql_files, migrate, sql_files
from support.rows import bound

POLICIES = """
    SELECT tablename, policyname, permissive, roles::text[], cmd, qual, with_check
      FROM pg_policies WHERE schemaname = 'parley' ORDER BY 1, 2"""
ROW_SECURITY = """
    SELECT c.oid::regclass::text, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c
     WHERE c.relnamespace = 'parley'::regnamespace AND c.relkind IN ('r', 'p') ORDER BY 1"""


# Locks a re-apply may take on the schema's own tables and views: none that waits for, or makes wait,
# a reader or a writer (SHARE UPDATE EXCLUSIVE, e.g. COMMENT ON, lets both through).
STRONG_LOCKS = """
    SELECT c.oid::regclass::text || ' ' || l.mode FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
     WHERE l.pid = pg_backend_pid() AND c.relpersistence <> 't'
       AND c.relnamespace::regnamespace::text IN ('parley', 'analytics', 'ops')
       AND l.mode IN ('ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')
     ORDER BY 1"""


VIEWS = """
    SELECT c.oid::regclass::text, pg_get_userbyid(c.relowner), c.reloptions, pg_get_viewdef(c.oid), c.relacl::text[],
           obj_description(c.oid, 'pg_class'),
           ARRAY(SELECT a.attname FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 ORDER BY a.attnum)
      FROM pg_class c WHERE c.relkind = 'v' AND c.relnamespace::regnamespace::text IN ('parley', 'analytics', 'ops')
     ORDER BY 1"""


def impatient(settings, timeout: float, attempts: int = 1):
    """Settings whose migrate may wait `timeout` seconds for a lock, `attempts` times."""
    return dataclasses.replace(settings, migrate_lock_timeout=timeout, migrate_lock_attempts=attempts)


@asynccontextmanager
async def conversation_held(settings, rows, sql_tenant, *, reply: bool = False):
    """A parley_app connection whose open tenant transaction holds a row lock on a conversation
    (SELECT ... FOR UPDATE) for the block, then rolls back; `reply`: it has also posted an agent
    reply (a request in flight: messages, events, the outbox and usage written, their triggers run)."""
    chatbot = await rows.chatbot(sql_tenant)
    conversation_id = await rows.conversation(sql_tenant.tenant_id, chatbot["id"])
    conn = await asyncpg.connect(settings.app_url)
    try:
        await _init_connection(conn)
        async with bound(conn, sql_tenant):
            locked = await conn.fetchval("SELECT id FROM parley.conversations WHERE id = $1 FOR UPDATE",
                                         conversation_id)
            assert locked == conversation_id
            if reply:
                await conn.execute("SELECT (parley.post_message($1, 'agent', 'Hello, how can I help?')).id",
                                   conversation_id)
            yield conn
    finally:
        await conn.close()


async def _holds_lock(owner_conn, conn, table: str, mode: str) -> bool:
    return await owner_conn.fetchval(
        "SELECT EXISTS (SELECT FROM pg_locks WHERE pid = $1 AND relation = $2::regclass AND mode = $3 AND granted)",
        conn.get_server_pid(), table, mode)


@pytest.mark.parametrize("reply", [False, True], ids=["row-lock", "reply-in-flight"])
async def test_reapply_does_not_wait_for_an_open_transaction(settings, owner_conn, rows, sql_tenant, reply):
    policies = await owner_conn.fetch(POLICIES)
    async with conversation_held(settings, rows, sql_tenant, reply=reply) as holder:
        # lock_timeout 1 ms: a statement that needed a lock the holder has would wait for it on every
        # try and raise MigrateLockTimeout. Several tries, because a catalog can be locked for a few
        # milliseconds by autovacuum truncating it (pg_shdepend, shared by every test database of the
        # cluster, churns with each migrate's scratch policies): that wait ends, the holder's does not.
        applied = await asyncio.to_thread(migrate, impatient(settings, 0.001, attempts=20))
        assert applied == []
        # The transaction was open all along, holding what it took.
        assert await _holds_lock(owner_conn, holder, "parley.conversations", "RowShareLock")
        assert await _holds_lock(owner_conn, holder, "parley.messages", "RowExclusiveLock") == reply
    assert await owner_conn.fetch(POLICIES) == policies


def test_reapply_over_a_current_schema_takes_no_lock_a_request_would_wait_for(settings):
    with psycopg.connect(settings.admin_url, autocommit=True) as conn, conn.transaction():
        apply_sql_files(conn)
        assert conn.execute(STRONG_LOCKS).fetchall() == []


async def test_a_changed_policy_is_put_back(settings, owner_conn):
    policies = await owner_conn.fetch(POLICIES)
    row_security = await owner_conn.fetch(ROW_SECURITY)
    for tamper in ("ALTER POLICY select_tenant ON parley.conversations USING (true)",
                   "ALTER POLICY all_purge ON parley.leads TO public",
                   "ALTER POLICY update_tenant ON parley.members WITH CHECK (true)",
                   "DROP POLICY select_visitor_own ON parley.messages",
                   "DROP POLICY insert_tenant_or_auth ON parley.audit_log",
                   "CREATE POLICY delete_tenant ON parley.audit_log FOR DELETE USING (true)",
                   "CREATE POLICY update_tenant ON parley.outbox_attempts FOR UPDATE USING (true)",
                   "ALTER TABLE parley.chatbots NO FORCE ROW LEVEL SECURITY",
                   "ALTER TABLE parley.staff_emails DISABLE ROW LEVEL SECURITY"):
        await owner_conn.execute(tamper)
    assert await owner_conn.fetch(POLICIES) != policies
    await asyncio.to_thread(migrate, settings)
    assert await owner_conn.fetch(POLICIES) == policies
    assert await owner_conn.fetch(ROW_SECURITY) == row_security


async def test_a_changed_view_is_put_back(settings, owner_conn):
    views = await owner_conn.fetch(VIEWS)
    for tamper in ("ALTER VIEW analytics.conversations_daily OWNER TO parley_owner",
                   "ALTER VIEW analytics.questions RESET (security_barrier)",
                   "ALTER VIEW ops.partitions RENAME COLUMN size TO pretty_size",  # replacing cannot undo it
                   "CREATE OR REPLACE VIEW analytics.csat_daily WITH (security_barrier = true) AS"
                   " SELECT s.tenant_id, s.chatbot_id, s.day, s.ratings, 0::numeric AS avg_score, s.thumbs_up,"
                   " s.thumbs_down FROM parley.daily_stats s"):
        await owner_conn.execute(tamper)
    assert await owner_conn.fetch(VIEWS) != views
    await asyncio.to_thread(migrate, settings)
    assert await owner_conn.fetch(VIEWS) == views


async def test_a_lock_held_too_long_gives_up_with_the_holder_named(settings, owner_conn, rows, sql_tenant):
    # A policy to put back needs the table: a transaction holding a row of it makes migrate wait.
    await owner_conn.execute("ALTER POLICY select_tenant ON parley.conversations USING (true)")
    select_tenant = ("SELECT qual FROM pg_policies WHERE schemaname = 'parley' AND tablename = 'conversations'"
                     " AND policyname = 'select_tenant'")
    async with conversation_held(settings, rows, sql_tenant) as holder:
        with pytest.raises(MigrateLockTimeout) as refused:
            await asyncio.to_thread(migrate, impatient(settings, 0.2, attempts=2))
        message = str(refused.value)
        assert message.startswith("sql/: gave up after 2 tries, each waiting at most 0.2 s for a table lock")
        assert "lock timeout" in message and "conversations" in message and "in sql/41_conversations.sql" in message
        assert f"pid {holder.get_server_pid()} (parley_app" in message
        assert await owner_conn.fetchval(select_tenant) == "true"  # rolled back: nothing half-applied
    await asyncio.to_thread(migrate, impatient(settings, 0.2))  # the transaction ended: it goes through
    assert "current_tenant_id" in await owner_conn.fetchval(select_tenant)


def test_sql_files_declare_policies_triggers_and_views_through_the_lock_free_helpers():
    """A bare CREATE/DROP POLICY or TRIGGER, an RLS switch, CREATE OR REPLACE VIEW or ALTER VIEW in
    sql/ would lock its table or view on every deploy; sql/05_access.sql holds the helpers that do
    them only when something differs."""
    bare = re.compile(r"\b(?:CREATE|DROP)\s+(?:POLICY|TRIGGER)\b|\bROW\s+LEVEL\s+SECURITY\b"
                      r"|\bCREATE\s+(?:OR\s+REPLACE\s+)?VIEW\b|\bALTER\s+VIEW\b", re.IGNORECASE)
    offenders = []
    for path in sql_files():
        if path.name == "05_access.sql":
            continue
        code = "\n".join(line.split("--", 1)[0] for line in path.read_text().splitlines())
        offenders += [f"{path.name}: {m.group(0)}" for m in bare.finditer(code)]
    assert offenders == []
