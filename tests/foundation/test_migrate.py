"""`parley migrate` is idempotent: a second run over a migrated database changes nothing."""
from __future__ import annotations

import asyncio

from pyapp.migrate import migrate

SCHEMAS = ["parley", "analytics"]

# Each query returns comparable rows; ACLs are sorted because REVOKE + GRANT may reorder
# entries without changing what anyone may do.
SNAPSHOT = {
    "functions": """
        SELECT p.oid::regprocedure::text, md5(pg_get_functiondef(p.oid)), pg_get_userbyid(p.proowner),
               ARRAY(SELECT a::text FROM unnest(coalesce(p.proacl, '{}')) a ORDER BY 1),
               obj_description(p.oid, 'pg_proc')
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = ANY($1) AND p.prokind IN ('f', 'p') ORDER BY 1""",
    "relations": """
        SELECT c.oid::regclass::text, c.relkind, pg_get_userbyid(c.relowner), c.relrowsecurity,
               c.relforcerowsecurity, ARRAY(SELECT a::text FROM unnest(coalesce(c.relacl, '{}')) a ORDER BY 1),
               CASE WHEN c.relkind = 'v' THEN md5(pg_get_viewdef(c.oid)) END, c.reloptions,
               obj_description(c.oid, 'pg_class')
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = ANY($1) ORDER BY 1""",
    "columns": """
        SELECT a.attrelid::regclass::text, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), ARRAY(SELECT x::text FROM unnest(coalesce(a.attacl, '{}')) x ORDER BY 1)
          FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE n.nspname = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1, 2""",
    "constraints": """
        SELECT con.conrelid::regclass::text, con.conname, pg_get_constraintdef(con.oid)
          FROM pg_constraint con JOIN pg_namespace n ON n.oid = con.connamespace
         WHERE n.nspname = ANY($1) ORDER BY 1, 2""",
    "indexes": """
        SELECT schemaname, indexname, indexdef FROM pg_indexes WHERE schemaname = ANY($1) ORDER BY 1, 2""",
    "policies": """
        SELECT schemaname, tablename, policyname, permissive, roles::text[], cmd, qual, with_check
          FROM pg_policies WHERE schemaname = ANY($1) ORDER BY 1, 2, 3""",
    "triggers": """
        SELECT t.tgrelid::regclass::text, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled
          FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = ANY($1) AND NOT t.tgisinternal ORDER BY 1, 2""",
    "schemas": """
        SELECT nspname, pg_get_userbyid(nspowner), ARRAY(SELECT a::text FROM unnest(coalesce(nspacl, '{}')) a ORDER BY 1)
          FROM pg_namespace WHERE nspname = ANY($1 || ARRAY['public', 'parley_migrations']) ORDER BY 1""",
    "roles": """
        SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolbypassrls, rolconfig,
               ARRAY(SELECT b.rolname::text FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid
                      WHERE m.member = r.oid ORDER BY 1)
          FROM pg_roles r WHERE rolname LIKE 'parley%' AND $1::text[] IS NOT NULL ORDER BY 1""",
    "migrations": """
        SELECT migration_id FROM parley_migrations._yoyo_migration WHERE $1::text[] IS NOT NULL ORDER BY 1""",
    "reference_rows": """
        SELECT id, name FROM parley.plans WHERE $1::text[] IS NOT NULL ORDER BY 1""",
}


async def _snapshot(conn) -> dict:
    return {name: [tuple(r) for r in await conn.fetch(sql, SCHEMAS)] for name, sql in SNAPSHOT.items()}


async def test_second_migrate_changes_nothing(settings, owner_conn):
    before = await _snapshot(owner_conn)
    assert before["functions"] and before["policies"] and before["migrations"]
    applied = await asyncio.to_thread(migrate, settings)
    assert applied == []
    after = await _snapshot(owner_conn)
    for name in SNAPSHOT:
        assert after[name] == before[name], name
