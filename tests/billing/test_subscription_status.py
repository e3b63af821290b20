"""Which subscription statuses are delinquent and which are billed is written once
(parley.subscription_delinquent / parley.subscription_billed, sql/42_limits.sql): every status
the table's CHECK allows is classified there, nothing else in sql/ or pyapp/ spells a status set,
and the readers (effective_limits, the analyst's revenue view) follow the home."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg
import pytest

ROOT = Path(__file__).resolve().parents[2]
HOME = "42_limits.sql"
# (delinquent, billed) for each status parley.subscriptions.status may hold.
CLASSES = {
    "active": (False, True),
    "trialing": (False, True),
    "past_due": (True, True),
    "unpaid": (True, False),
    "incomplete": (True, False),
    "canceled": (False, False),
}
# The statuses only subscriptions have ('active' and 'canceled' name other things' states too).
STATUS = re.compile(r"""['"](trialing|past_due|unpaid|incomplete)['"]""")


async def test_every_status_the_check_allows_is_classified_once(owner_conn):
    check = await owner_conn.fetchval(
        "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c"
        " WHERE c.conrelid = 'parley.subscriptions'::regclass AND c.contype = 'c'"
        "   AND pg_get_constraintdef(c.oid) LIKE '%(status %'")
    allowed = re.findall(r"'(\w+)'::text", check)
    assert sorted(allowed) == sorted(CLASSES)
    got = await owner_conn.fetch("SELECT s, parley.subscription_delinquent(s) AS d, parley.subscription_billed(s) AS b"
                                 " FROM unnest($1::text[]) s", allowed)
    assert {r["s"]: (r["d"], r["b"]) for r in got} == CLASSES


def test_no_other_file_spells_a_status_set():
    """A status list written again anywhere (SQL or Python) fails here: call the home instead."""
    home = (ROOT / "sql" / HOME).read_text()
    in_home = [m for line in home.splitlines() if not line.lstrip().startswith("'") for m in STATUS.findall(line)]
    assert sorted(in_home) == sorted(["past_due", "unpaid", "incomplete", "trialing", "past_due"])
    elsewhere = {str(p.relative_to(ROOT)): STATUS.findall(p.read_text())
                 for p in [*(ROOT / "sql").glob("*.sql"), *(ROOT / "pyapp").rglob("*.py"), *(ROOT / "jobs").rglob("*.py")]
                 if p.name != HOME}
    # The Stripe adapter maps Stripe's statuses onto ours ('paused' → unpaid, none → incomplete):
    # single values, not a set.
    assert {f: found for f, found in elsewhere.items() if found} == {
        "pyapp/billing/gateway.py": ["unpaid", "incomplete"]}


async def test_delinquent_past_grace_is_limited_and_billed_counts_as_revenue(rows, owner_conn, settings):
    tenants = {}
    for status in CLASSES:
        person = await rows.tenant(plan="pro")
        await owner_conn.execute(
            "INSERT INTO parley.subscriptions (tenant_id, provider, plan, status, grace_until, customer_ref)"
            " VALUES ($1, 'stripe', 'pro', $2, now() - interval '1 day', 'cus_' || $2)", person.tenant_id, status)
        tenants[status] = person.tenant_id
    limited = {s: await owner_conn.fetchval("SELECT limited FROM parley.effective_limits($1)", t)
               for s, t in tenants.items()}
    assert limited == {s: delinquent for s, (delinquent, _) in CLASSES.items()}
    from pyapp.config import ANALYST_ROLE

    conn = await asyncpg.connect(settings.role_url(ANALYST_ROLE))
    try:
        pro = await conn.fetchrow("SELECT subscriptions, mrr_cents FROM analytics.mrr_by_plan WHERE plan = 'pro'")
    finally:
        await conn.close()
    billed = sum(b for _, b in CLASSES.values())
    assert pro["subscriptions"] == billed and pro["mrr_cents"] == billed * 9900


@pytest.mark.parametrize("state", [{"status": "paused"}, {"interval": "week"}, {"provider": "paypal"},
                                   {"extra_seats": -1}])
async def test_change_plan_refuses_a_state_the_table_refuses(settings, sql_tenant, state):
    """change_plan keeps no list of its own: the subscriptions CHECKs refuse (422 invalid in the API)."""
    from pyapp.db import _init_connection

    conn = await asyncpg.connect(settings.app_url)
    try:
        await _init_connection(conn)
        with pytest.raises(asyncpg.CheckViolationError):
            async with conn.transaction():  # as the webhook opens it (the server, as service)
                await conn.fetchval("SELECT parley.begin_request($1, 'service', NULL, NULL, NULL, NULL, 'visitor')",
                                    sql_tenant.tenant_id)
                await conn.fetchval("SELECT parley.change_plan('pro', 'webhook', $1)", state)
    finally:
        await conn.close()
