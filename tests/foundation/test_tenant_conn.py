"""The SQL-level test transaction (`support.rows.tenant_conn`) is what it claims: the app's login
role, bound to one fresh tenant by parley.begin_request, confined by row-level security (tried
here, not assumed), and rolled back afterwards."""
import asyncpg
import pytest
from support.rows import bound


async def test_tenant_conn_is_the_app_role_bound_to_its_tenant(tenant_conn, sql_tenant):
    assert await tenant_conn.fetchval("SELECT session_user") == "parley_app"
    assert await tenant_conn.fetchval("SELECT parley.current_tenant_id()") == sql_tenant.tenant_id
    assert await tenant_conn.fetchval("SELECT current_setting('app.role')") == "owner"
    assert await tenant_conn.fetchval("SELECT rolbypassrls FROM pg_roles WHERE rolname = session_user") is False
    bot = await tenant_conn.fetchrow("SELECT id, tenant_id FROM parley.create_chatbot('Mine')")
    assert bot["tenant_id"] == sql_tenant.tenant_id


async def test_tenant_conn_cannot_reach_another_tenant(tenant_conn, rows, owner_conn):
    other = await rows.tenant()
    theirs = await rows.chatbot(other, "Theirs")
    await owner_conn.execute("INSERT INTO parley.tenant_settings (tenant_id, key, value) VALUES ($1, 'b.secret', '1')",
                             other.tenant_id)
    assert await tenant_conn.fetchval("SELECT count(*) FROM parley.chatbots WHERE id = $1", theirs["id"]) == 0
    assert await tenant_conn.fetchval("SELECT count(*) FROM parley.tenant_settings WHERE key = 'b.secret'") == 0
    assert await tenant_conn.execute("UPDATE parley.tenant_settings SET value = '2' WHERE tenant_id = $1",
                                     other.tenant_id) == "UPDATE 0"
    assert await tenant_conn.execute("DELETE FROM parley.tenant_settings WHERE tenant_id = $1",
                                     other.tenant_id) == "DELETE 0"
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with tenant_conn.transaction():
            await tenant_conn.execute("INSERT INTO parley.tenant_settings (tenant_id, key, value)"
                                      " VALUES ($1, 'b.pwned', '1')", other.tenant_id)
    assert await owner_conn.fetchval("SELECT value FROM parley.tenant_settings WHERE tenant_id = $1",
                                     other.tenant_id) == 1


async def test_what_tenant_conn_writes_is_rolled_back(settings, sql_tenant, owner_conn):
    conn = await asyncpg.connect(settings.app_url)
    try:
        async with bound(conn, sql_tenant):
            await conn.execute("INSERT INTO parley.tenant_settings (tenant_id, key, value) VALUES ($1, 'k', '1')",
                               sql_tenant.tenant_id)
            assert await conn.fetchval("SELECT count(*) FROM parley.tenant_settings WHERE key = 'k'") == 1
        assert await owner_conn.fetchval("SELECT count(*) FROM parley.tenant_settings WHERE key = 'k'") == 0
        assert await conn.fetchval("SELECT current_setting('app.tenant_id', true)") in (None, "")
    finally:
        await conn.close()
