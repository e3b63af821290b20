"""Analysts' way in: `parley db url --role analyst` prints a URL that connects as parley_analyst;
docs/analytics.md lists every analytics view with its columns, and its ten example queries run as
the analyst; conversations_daily counts only conversations the visitor spoke in."""
import asyncio
import os
import re
import sys

import asyncpg
from support.console import seed_analytics
from support.knowledge import ROOT, make_tenant
from support.server import TEST_SECRET

DOC = ROOT / "docs" / "analytics.md"
VIEWS = """
SELECT c.relname AS view, array_agg(a.attname::text ORDER BY a.attnum) AS columns
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
 WHERE n.nspname = 'analytics' AND c.relkind IN ('v', 'm')
 GROUP BY c.relname
"""


async def _db_url(settings, role: str | None) -> str:
    env = {**os.environ, "DATABASE_URL": settings.admin_url, "PARLEY_SECRET_KEY": TEST_SECRET,
           "PYTHONPATH": str(ROOT)}
    args = ["db", "url"] + (["--role", role] if role else [])
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "pyapp.cli", *args, cwd=ROOT, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode().strip()


async def test_db_url_per_role(settings):
    assert await _db_url(settings, None) == settings.admin_url
    for role, login in (("analyst", "parley_analyst"), ("app", "parley_app"), ("jobs", "parley_jobs")):
        url = await _db_url(settings, role)
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT current_user") == login
        finally:
            await conn.close()


def _sections() -> dict[str, str]:
    text = DOC.read_text()
    return {m.group(1): m.group(2) for m in re.finditer(r"^### analytics\.(\w+)\n(.*?)(?=^#|\Z)", text, re.M | re.S)}


async def test_every_view_and_column_is_documented(owner_conn):
    sections = _sections()
    views = {r["view"]: r["columns"] for r in await owner_conn.fetch(VIEWS)}
    assert set(sections) == set(views)
    for view, columns in views.items():
        documented = re.findall(r"^\| `(\w+)` \|", sections[view], re.M)
        assert documented == columns, view


async def test_the_ten_example_queries_run_as_the_analyst(settings, owner_conn):
    tenant = await make_tenant(settings, owner_conn)
    await seed_analytics(owner_conn, tenant.id, tenant.chatbot_id)
    queries = re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.S)
    assert len(queries) == 10
    conn = await asyncpg.connect(settings.role_url("parley_analyst"))
    try:
        results = [await conn.fetch(q) for q in queries]
    finally:
        await conn.close()
    assert sum(r["conversations"] for r in results[0]) > 0
    assert [r["question"] for r in results[3]] == ["do you ship to brazil"]  # the one question seeded unanswered


async def test_conversations_daily_counts_only_conversations_the_visitor_spoke_in(settings, owner_conn):
    tenant = await make_tenant(settings, owner_conn)
    for author in ("visitor", "bot", None):  # spoke; only greeted by the bot; nothing at all
        conv = await owner_conn.fetchval(
            "INSERT INTO parley.conversations (tenant_id, chatbot_id, visitor_id, status)"
            " VALUES ($1, $2, gen_random_uuid(), 'bot') RETURNING id", tenant.id, tenant.chatbot_id)
        if author:
            await owner_conn.execute("INSERT INTO parley.messages (tenant_id, conversation_id, author, body)"
                                     " VALUES ($1, $2, $3, 'hi')", tenant.id, conv, author)
    conn = await asyncpg.connect(settings.role_url("parley_analyst"))
    try:
        rows = await conn.fetch("SELECT * FROM analytics.conversations_daily WHERE tenant_id = $1", tenant.id)
    finally:
        await conn.close()
    assert [r["conversations"] for r in rows] == [1]
