"""The schema rules of sql/CONVENTIONS.md, checked against the catalog of a migrated database.

Generic on purpose: every table any migration adds to `parley` or `analytics` is held to the
tenant rules unless it is on ALLOW_GLOBAL with a reason. Partitions are checked through their
parent (they inherit its keys and policies).
"""
from __future__ import annotations

import pytest

SCHEMAS = ("parley", "analytics")

# Tables that are not tenant-owned, and why. Keep each reason honest: the tenant rules
# (tenant_id leading the PK and every unique/FK, RLS policies) do not apply to them.
ALLOW_GLOBAL: dict[str, str] = {
    "parley.plans": "the price list every tenant chooses from; reference data without tenant",
    "parley.tenants": "the tenants themselves; RLS lets a tenant see only its own row",
    "parley.users": "people are global (one login, many workspaces); RLS shows self and colleagues",
    "parley.refresh_tokens": "sessions belong to a person, not a tenant; only parley_auth functions touch them",
    "parley.password_resets": "reset tokens belong to a person; only parley_auth functions touch them",
    "parley.login_throttle": "per-address sign-in throttle, before any tenant is known; parley_auth only",
    "parley.job_schedules": "the jobs process's own schedule (job name, interval, last run); no tenant data",
}

# Global tables that intentionally have no RLS: no tenant data in them, and no app role may
# write them (checked below).
NO_RLS_OK = {"parley.plans", "parley.job_schedules"}

TABLES = """
SELECT c.oid, n.nspname || '.' || c.relname AS name, c.relrowsecurity, c.relforcerowsecurity,
       r.rolcanlogin AS owner_can_login, r.rolname AS owner
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_roles r ON r.oid = c.relowner
 WHERE n.nspname = ANY($1::text[]) AND c.relkind IN ('r', 'p') AND NOT c.relispartition
 ORDER BY 2
"""

PK_FIRST_COLUMN = """
SELECT a.attname FROM pg_index i
  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
 WHERE i.indrelid = $1 AND i.indisprimary
"""

UNIQUE_NOT_TENANT_LED = """
SELECT ic.relname AS index, pg_get_indexdef(i.indexrelid) AS def
  FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
 WHERE i.indrelid = $1 AND i.indisunique
   AND (i.indkey[0] = 0 OR (SELECT a.attname FROM pg_attribute a
                             WHERE a.attrelid = i.indrelid AND a.attnum = i.indkey[0]) <> 'tenant_id')
"""

# A reference to a global table (a user, a plan) cannot carry a tenant; one to a tenant-owned
# table must, or the FK check (which bypasses RLS) could tie a row to another tenant's row.
FKS_WITHOUT_TENANT = """
SELECT con.conname, pg_get_constraintdef(con.oid) AS def
  FROM pg_constraint con
 WHERE con.conrelid = $1 AND con.contype = 'f'
   AND NOT (con.confrelid::regclass::text = ANY($2::text[]))
   AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                    WHERE a.attrelid = con.conrelid AND a.attnum = ANY(con.conkey) AND a.attname = 'tenant_id')
"""

FUNCTIONS = """
SELECT p.oid::regprocedure::text AS name, p.prosecdef, p.proconfig,
       obj_description(p.oid, 'pg_proc') AS comment,
       p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) x
                                    WHERE x.grantee = 0 AND x.privilege_type = 'EXECUTE') AS public_execute
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'parley'
   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                                               AND d.deptype = 'e')
 ORDER BY 1
"""


async def _tables(conn):
    return await conn.fetch(TABLES, list(SCHEMAS))


async def test_allow_list_names_real_tables(owner_conn):
    names = {t["name"] for t in await _tables(owner_conn)}
    assert set(ALLOW_GLOBAL) <= names, f"stale ALLOW_GLOBAL entries: {set(ALLOW_GLOBAL) - names}"


async def table_problems(conn) -> list[str]:
    problems: list[str] = []
    for t in await _tables(conn):
        name = t["name"]
        if t["owner_can_login"]:
            problems.append(f"{name}: owned by login role {t['owner']} (app roles own nothing)")
        if name in ALLOW_GLOBAL:
            if name in NO_RLS_OK:
                writers = await conn.fetch(
                    """SELECT r FROM unnest(ARRAY['parley_app', 'parley_analyst']) r
                        WHERE has_table_privilege(r, $1::oid, 'INSERT, UPDATE, DELETE, TRUNCATE')""",
                    t["oid"])
                if writers:
                    problems.append(f"{name}: global table without RLS is writable by {[w['r'] for w in writers]}")
            elif not (t["relrowsecurity"] and t["relforcerowsecurity"]):
                problems.append(f"{name}: global table without ENABLE + FORCE ROW LEVEL SECURITY")
            continue
        first = await conn.fetchval(PK_FIRST_COLUMN, t["oid"])
        if first != "tenant_id":
            problems.append(f"{name}: primary key must start with tenant_id (starts with {first})")
        if not (t["relrowsecurity"] and t["relforcerowsecurity"]):
            problems.append(f"{name}: needs ENABLE and FORCE ROW LEVEL SECURITY")
        if not await conn.fetchval("SELECT count(*) FROM pg_policy WHERE polrelid = $1", t["oid"]):
            problems.append(f"{name}: row-level security without any policy")
        for idx in await conn.fetch(UNIQUE_NOT_TENANT_LED, t["oid"]):
            problems.append(f"{name}: unique index {idx['index']} not led by tenant_id: {idx['def']}")
        for fk in await conn.fetch(FKS_WITHOUT_TENANT, t["oid"], list(ALLOW_GLOBAL)):
            problems.append(f"{name}: foreign key {fk['conname']} without tenant_id: {fk['def']}")
    return problems


async def function_problems(conn) -> list[str]:
    problems: list[str] = []
    for fn in await conn.fetch(FUNCTIONS):
        if not (fn["comment"] or "").strip():
            problems.append(f"{fn['name']}: no COMMENT ON FUNCTION")
        if fn["prosecdef"]:
            config = fn["proconfig"] or []
            if not any(c.startswith("search_path=") for c in config):
                problems.append(f"{fn['name']}: SECURITY DEFINER without a fixed search_path")
            if fn["public_execute"]:
                problems.append(f"{fn['name']}: SECURITY DEFINER executable by PUBLIC")
    return problems


async def test_tables_follow_tenant_rules(owner_conn):
    problems = await table_problems(owner_conn)
    assert not problems, "schema rule violations:\n  " + "\n  ".join(problems)


async def test_functions_are_documented_and_definers_locked_down(owner_conn):
    problems = await function_problems(owner_conn)
    assert not problems, "function rule violations:\n  " + "\n  ".join(problems)


async def test_lint_catches_violations(owner_conn):
    """The checks themselves: a table and a function breaking each rule are all reported."""
    await owner_conn.execute("""
        CREATE TABLE parley.lint_bad (
          id uuid PRIMARY KEY, tenant_id uuid NOT NULL, email text UNIQUE,
          member_user uuid, FOREIGN KEY (tenant_id, member_user) REFERENCES parley.members (tenant_id, user_id),
          invite_id uuid);
        ALTER TABLE parley.lint_bad ADD FOREIGN KEY (tenant_id, invite_id) REFERENCES parley.invites (tenant_id, id);
        CREATE TABLE parley.lint_bad_fk (tenant_id uuid, id uuid, inv uuid REFERENCES parley.lint_bad (id),
                                         PRIMARY KEY (tenant_id, id));
        ALTER TABLE parley.lint_bad_fk ENABLE ROW LEVEL SECURITY;
        ALTER TABLE parley.lint_bad_fk OWNER TO parley_app;
        CREATE FUNCTION parley.lint_bad_fn() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT 1';
    """)
    tables = "\n".join(await table_problems(owner_conn))
    assert "parley.lint_bad: primary key must start with tenant_id" in tables
    assert "parley.lint_bad: needs ENABLE and FORCE" in tables
    assert "parley.lint_bad: row-level security without any policy" in tables
    assert "parley.lint_bad: unique index lint_bad_email_key not led by tenant_id" in tables
    assert "parley.lint_bad_fk: foreign key lint_bad_fk_inv_fkey without tenant_id" in tables
    assert "parley.lint_bad_fk: needs ENABLE and FORCE" in tables
    assert "parley.lint_bad_fk: owned by login role parley_app" in tables
    assert "lint_bad: foreign key" not in tables.replace("lint_bad_fk", "")  # composite FKs are fine
    functions = "\n".join(await function_problems(owner_conn))
    assert "parley.lint_bad_fn(): no COMMENT" in functions
    assert "parley.lint_bad_fn(): SECURITY DEFINER without a fixed search_path" in functions
    assert "parley.lint_bad_fn(): SECURITY DEFINER executable by PUBLIC" in functions


@pytest.mark.parametrize("role", ["parley_app", "parley_jobs", "parley_analyst"])
async def test_app_roles_own_nothing(owner_conn, role):
    owned = await owner_conn.fetch(
        """SELECT c.relname FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE r.rolname = $1
           UNION ALL
           SELECT p.proname FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner WHERE r.rolname = $1""", role)
    assert owned == []
