"""What the login roles may do to the schema itself: nothing beyond their grants."""
from __future__ import annotations

import asyncpg
import pytest

FORBIDDEN = [
    "SET ROLE parley_owner",
    "SET ROLE parley_auth",
    "SET SESSION AUTHORIZATION parley_owner",
    "ALTER TABLE parley.members ADD COLUMN evil int",
    "ALTER TABLE parley.members DISABLE ROW LEVEL SECURITY",
    "ALTER TABLE parley.members NO FORCE ROW LEVEL SECURITY",
    "DROP POLICY select_tenant ON parley.members",
    "DROP TABLE parley.members",
    "TRUNCATE parley.members",
    "TRUNCATE parley.audit_log",
    "CREATE TABLE parley.evil (id int)",
    "CREATE FUNCTION parley.evil() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "CREATE OR REPLACE FUNCTION parley.current_tenant_id() RETURNS uuid LANGUAGE sql AS 'SELECT NULL::uuid'",
    "INSERT INTO parley.audit_log (tenant_id, actor_kind, action) VALUES (gen_random_uuid(), 'system', 'x')",
    "UPDATE parley.audit_log SET action = 'x'",
    "DELETE FROM parley.audit_log",
    "SELECT password_hash FROM parley.users",
    "SELECT key_hash FROM parley.api_keys",
    "SELECT token_hash FROM parley.invites",
    "SELECT * FROM parley.refresh_tokens",
    "SELECT parley.open_session(gen_random_uuid(), '\\x00', 60)",
    "SELECT parley.end_sessions(gen_random_uuid())",
]


async def _connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(url)


@pytest.mark.parametrize("role", ["parley_app", "parley_jobs"])
async def test_login_roles_cannot_change_the_schema(settings, role):
    conn = await _connect(settings.role_url(role))
    try:
        refused = []
        for statement in FORBIDDEN:
            try:
                async with conn.transaction():
                    await conn.execute(statement)
            except asyncpg.InsufficientPrivilegeError:
                refused.append(statement)
        assert refused == FORBIDDEN
    finally:
        await conn.close()


async def test_analyst_reads_analytics_only(settings, rows):
    await rows.tenant()  # a sign-up: something in the audit trail
    conn = await _connect(settings.role_url("parley_analyst"))
    try:
        rows = await conn.fetch("SELECT * FROM analytics.audit_events")
        assert rows and {"ip", "details"}.isdisjoint(rows[0].keys())
        for table in ("parley.members", "parley.audit_log", "parley.users", "parley.tenants"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch(f"SELECT 1 FROM {table} LIMIT 1")
        with pytest.raises(asyncpg.PostgresError):  # read-only sessions, and no grants anyway
            await conn.execute("CREATE TABLE analytics.evil (id int)")
    finally:
        await conn.close()


async def test_audit_log_is_append_only_for_every_role(owner_conn):
    rights = await owner_conn.fetch(
        """SELECT r, p FROM unnest(ARRAY['parley_app', 'parley_jobs', 'parley_analyst', 'parley_auth',
                                         'parley_reporting']) r,
                            unnest(ARRAY['UPDATE', 'DELETE', 'TRUNCATE']) p
            WHERE has_table_privilege(r, 'parley.audit_log', p)""")
    assert rights == []
    writers = await owner_conn.fetch(
        """SELECT r FROM unnest(ARRAY['parley_app', 'parley_jobs', 'parley_analyst']) r
            WHERE has_table_privilege(r, 'parley.audit_log', 'INSERT')""")
    assert writers == []
