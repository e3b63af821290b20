"""The schema rules of sql/CONVENTIONS.md, checked against the catalog of a migrated database.

Generic on purpose: every table any migration adds to `parley` or `analytics` is held to the
tenant rules unless it is on ALLOW_GLOBAL with a reason. Partitions are checked through their
parent (they inherit its keys and policies).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

SCHEMAS = ("parley", "analytics")
SQL_DIR = Path(__file__).resolve().parents[2] / "sql"

# Tables that are not tenant-owned, and why. Keep each reason honest: the tenant rules
# (tenant_id leading the PK and every unique/FK, RLS policies) do not apply to them.
ALLOW_GLOBAL: dict[str, str] = {
    "parley.plans": "the price list every tenant chooses from; reference data without tenant",
    "parley.system_text_defaults": "the shipped system message texts every tenant starts from; reference data without tenant",
    "parley.chatbot_templates": "the product's chatbot templates (personas), the same for every tenant; read-only to the app",
    "parley.conversation_action_catalog": "the conversation actions registry, the same for every tenant; read-only to the app",
    "parley.conversation_action_labels": "the actions registry's labels per language; reference data, read-only to the app",
    "parley.conversation_transitions": "the conversation state machine's transitions, the same for every tenant; read-only to the app",
    "parley.tenants": "the tenants themselves; RLS lets a tenant see only its own row",
    "parley.users": "people are global (one login, many workspaces); RLS shows self and colleagues",
    "parley.refresh_tokens": "sessions belong to a person, not a tenant; only parley_auth functions touch them",
    "parley.password_resets": "reset tokens belong to a person; only parley_auth functions touch them",
    "parley.email_verifications": "verification links belong to a person; only parley_auth functions touch them",
    "parley.tenant_purges": "the record that a tenant was purged (ids and times), outliving the tenant; parley_purge only",
    "parley.login_throttle": "per-address sign-in throttle, before any tenant is known; parley_auth only",
    "parley.sign_in_failures": "sign-in backoff per (email hash, address), before any tenant is known; parley_auth only",
    "parley.job_schedules": "the jobs process's own schedule (job name, interval, last run); no tenant data",
    "parley.staff_emails": "the installation's operators (PARLEY_ADMIN_EMAILS), before any tenant; parley_auth only",
    "parley.user_identities": "a person's identities at identity providers, before any tenant; parley_auth only",
    "parley.oidc_logins": "single sign-on attempts in flight, before any person or tenant is known; parley_auth only",
    "parley.sso_sessions": "which sessions an identity provider opened; belongs to a person; parley_auth only",
    "parley.domain_routes": "Host -> tenant of verified custom domains, read before any tenant is known; parley_auth only",
    "parley.server_settings": "installation settings a server writes from its environment at start (default branding); no tenant data; parley_auth writes",
}

# Global tables that intentionally have no RLS: no tenant data in them, and no app role may
# write them (checked below).
NO_RLS_OK = {
    "parley.plans",
    "parley.job_schedules",
    "parley.chatbot_templates",
    "parley.system_text_defaults",
    "parley.conversation_action_catalog",
    "parley.conversation_action_labels",
    "parley.conversation_transitions",
}

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


# Every function of ours, for the "defined in sql/" lint (extension members excluded).
OUR_FUNCTIONS = """
SELECT p.oid, p.oid::regprocedure::text AS name
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = ANY($1::text[])
   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                                               AND d.deptype = 'e')
 ORDER BY 2
"""


@dataclass
class SqlFunction:
    """One CREATE FUNCTION statement of an sql/ file, as written."""
    name: str
    args: list[str]  # each argument's text: [mode] [name] type [DEFAULT ...]
    attributes: str  # everything but the name, arguments and body (LANGUAGE, volatility, SET ...)
    where: str


_CREATE_FUNCTION = re.compile(r"\bCREATE\s+(?:OR\s+REPLACE\s+)?FUNCTION\s+([\w.]+)\s*\(", re.I)
_DOLLAR_QUOTE = re.compile(r"\$(\w*)\$")
_LINE_COMMENT = re.compile(r"--[^\n]*")
_VOLATILITY = re.compile(r"\b(IMMUTABLE|STABLE|VOLATILE)\b", re.I)
_ARG_MODE = re.compile(r"^(IN|OUT|INOUT|VARIADIC)\s+", re.I)
_ARG_DEFAULT = re.compile(r"\s+DEFAULT\s+|\s*=\s*", re.I)


def _top_level_split(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += {"(": 1, ")": -1, "[": 1, "]": -1}.get(ch, 0)  # an ARRAY[...] default holds commas
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def sql_functions(text: str, source: str = "") -> list[SqlFunction]:
    """The CREATE FUNCTION statements of one file. Bodies are dollar-quoted in sql/ (a rule of
    its own: a body in single quotes would not be found, so its function would be reported as
    not defined anywhere)."""
    found: list[SqlFunction] = []
    pos = 0
    while match := _CREATE_FUNCTION.search(text, pos):
        end, depth = match.end(), 1
        while depth:
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            end += 1
        body_open = _DOLLAR_QUOTE.search(text, end)
        quote = body_open.group(0)
        body_close = text.index(quote, body_open.end())
        statement_end = text.index(";", body_close + len(quote))
        attributes = text[end:body_open.start()] + " " + text[body_close + len(quote):statement_end]
        found.append(SqlFunction(
            name=match.group(1),
            args=_top_level_split(_LINE_COMMENT.sub("", text[match.end():end - 1])),
            attributes=" ".join(_LINE_COMMENT.sub("", attributes).split()),
            where=f"{source}:{text.count(chr(10), 0, match.start()) + 1}"))
        pos = statement_end
    return found


def sql_dir_functions() -> list[SqlFunction]:
    return [fn for path in sorted(SQL_DIR.glob("*.sql")) for fn in sql_functions(path.read_text(), path.name)]


def volatility_problems(functions: list[SqlFunction]) -> list[str]:
    """A function without IMMUTABLE/STABLE/VOLATILE is VOLATILE by default: say which it is."""
    return [f"{fn.where} {fn.name}: volatility not stated (IMMUTABLE, STABLE or VOLATILE)"
            for fn in functions if not _VOLATILITY.search(fn.attributes)]


async def _input_type(conn, arg: str) -> str | None:
    """The type of an IN argument as the catalog names it; None for OUT arguments."""
    mode = _ARG_MODE.match(arg)
    if mode and mode.group(1).upper() == "OUT":
        return None
    arg = _ARG_DEFAULT.split(arg[mode.end():] if mode else arg, maxsplit=1)[0].strip()
    words = arg.split(None, 1)
    for candidate in ([words[1]] if len(words) == 2 else []) + [arg]:  # named, else unnamed
        try:
            type_name = await conn.fetchval("SELECT to_regtype($1)::text", candidate)
        except asyncpg.PostgresError:
            type_name = None
        if type_name:
            return type_name
    raise ValueError(f"cannot read the type of argument {arg!r}")


async def undefined_function_problems(conn, functions: list[SqlFunction]) -> list[str]:
    """Functions in the database that no sql/ file defines (a rename or removal without its DROP
    leaves the old one behind in every database migrated before), and definitions that do not
    resolve to a function (the parser is wrong, or the file did not create it)."""
    problems: list[str] = []
    defined: dict[int, str] = {}
    for fn in functions:
        types = [t for t in [await _input_type(conn, a) for a in fn.args] if t is not None]
        oid = await conn.fetchval("SELECT to_regprocedure($1)::oid", f"{fn.name}({', '.join(types)})")
        if oid is None:
            problems.append(f"{fn.where} {fn.name}({', '.join(types)}): not in the database")
        elif oid in defined:
            # The later CREATE OR REPLACE silently replaces the earlier one (one home per function).
            problems.append(f"{fn.where} {fn.name}({', '.join(types)}): defined again (first at {defined[oid]})")
        else:
            defined[oid] = fn.where
    for row in await conn.fetch(OUR_FUNCTIONS, list(SCHEMAS)):
        if row["oid"] not in defined:
            problems.append(f"{row['name']}: defined by no sql/ file (drop it in the file that removed it)")
    return problems


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


async def test_every_function_is_defined_in_sql_dir(owner_conn):
    problems = await undefined_function_problems(owner_conn, sql_dir_functions())
    assert not problems, "functions without a home in sql/:\n  " + "\n  ".join(problems)


def test_every_function_states_its_volatility():
    problems = volatility_problems(sql_dir_functions())
    assert not problems, "\n  ".join(["volatility left to the default:", *problems])


async def test_function_lints_catch_violations(owner_conn):
    """The checks themselves: a function no file defines (also a stale overload of a defined name),
    a definition that creates nothing and a function defined twice are reported; volatility is read
    outside the body only."""
    await owner_conn.execute("""
        CREATE FUNCTION parley.lint_orphan(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT 1';
        CREATE FUNCTION parley.update_lead(uuid) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT 1';
        CREATE FUNCTION analytics.lint_orphan() RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT 1';
    """)
    sample = sql_functions("""
        CREATE OR REPLACE FUNCTION parley.lint_missing(p_a int DEFAULT 1, OUT o text, p_b timestamptz = now())
        RETURNS text LANGUAGE sql AS $fn$ SELECT 'STABLE' $fn$;
        -- CREATE FUNCTION in a comment is not a definition
        CREATE FUNCTION parley.lint_after_body(double precision, VARIADIC p_rest text[]) RETURNS int
        AS $$ SELECT 1 $$ LANGUAGE sql IMMUTABLE;
        CREATE OR REPLACE FUNCTION parley.role_rank(p_role text) RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT 0 $$;
    """, "sample.sql")
    assert [fn.name for fn in sample] == ["parley.lint_missing", "parley.lint_after_body", "parley.role_rank"]
    volatility = volatility_problems(sample)
    assert volatility == ["sample.sql:2 parley.lint_missing: volatility not stated (IMMUTABLE, STABLE or VOLATILE)"]
    undefined = "\n".join(await undefined_function_problems(owner_conn, sql_dir_functions() + sample))
    assert "parley.lint_orphan(integer): defined by no sql/ file" in undefined
    assert "analytics.lint_orphan(): defined by no sql/ file" in undefined
    assert "parley.update_lead(uuid): defined by no sql/ file" in undefined
    assert "sample.sql:2 parley.lint_missing(integer, timestamp with time zone): not in the database" in undefined
    assert "sample.sql:5 parley.lint_after_body(double precision, text[]): not in the database" in undefined
    assert "parley.update_lead(uuid, text" not in undefined  # the defined overload is found
    assert "sample.sql:7 parley.role_rank(text): defined again (first at 21_auth.sql:" in undefined
    assert len(undefined.splitlines()) == 6


@pytest.mark.parametrize("role", ["parley_app", "parley_jobs", "parley_analyst"])
async def test_app_roles_own_nothing(owner_conn, role):
    owned = await owner_conn.fetch(
        """SELECT c.relname FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE r.rolname = $1
           UNION ALL
           SELECT p.proname FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner WHERE r.rolname = $1""", role)
    assert owned == []


def test_every_sql_file_stays_under_600_lines():
    """One domain per file, each small enough to read: a file past 600 lines is split by domain."""
    long = {p.name: n for p in sorted(SQL_DIR.glob("*.sql")) if (n := len(p.read_text().splitlines())) > 600}
    assert not long, long
