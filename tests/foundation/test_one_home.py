"""Where Python keeps a copy of an SQL rule for speed or shape, the copy equals SQL's."""
from __future__ import annotations

import re

from pyapp.console.web import ROLE_RANK
from pyapp.leads.routes import EXPORT_COLUMNS


async def test_console_role_rank_is_sqls(owner_conn):
    check = await owner_conn.fetchval(
        "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c WHERE c.conrelid = 'parley.members'::regclass"
        " AND c.contype = 'c' AND pg_get_constraintdef(c.oid) LIKE '%role%'")
    member_roles = set(re.findall(r"'(\w+)'", check))
    assert set(ROLE_RANK) == member_roles
    assert {r: await owner_conn.fetchval("SELECT parley.role_rank($1)", r) for r in member_roles} == ROLE_RANK


async def test_lead_csv_columns_are_the_export_functions(owner_conn):
    names = await owner_conn.fetchval(
        "SELECT array_agg(n ORDER BY i) FROM pg_proc p, unnest(p.proargnames, p.proargmodes) WITH ORDINALITY AS a(n, m, i)"
        " WHERE p.oid = 'parley.export_leads(text, text, uuid, timestamptz, timestamptz, int)'::regprocedure AND m = 't'")
    assert list(names) == EXPORT_COLUMNS
