"""The console inbox searches with parley.search_inbox, the REST inbox's search (one home): the
newest matching conversations exactly, however many match (the old capped search read an
arbitrary 5,000 of the matches, so with more the newest could be missing), each tab filtered as
parley.inbox_conversations filters it."""
from __future__ import annotations

import re
import uuid

from support.console import make_chatbot

MATCHES = 6000  # more than the 5,000 the old search read

ORACLE = """
  SELECT c.id FROM parley.conversations c
   WHERE c.tenant_id = $1 AND ($2::text IS NULL OR c.status = $2)
     AND EXISTS (SELECT 1 FROM parley.messages m WHERE m.tenant_id = c.tenant_id AND m.conversation_id = c.id
                   AND to_tsvector('simple', m.body) @@ websearch_to_tsquery('simple', 'zebra'))
   ORDER BY c.last_activity_at DESC, c.id LIMIT $3"""


def _listed(html: str) -> list[str]:
    """The conversation ids of the inbox list, in order."""
    listed = re.search(r'<ul class="convlist">(.*?)</ul>', html, re.S)
    assert listed, html[:2000]
    return re.findall(r'<a href="/console/conversations/([0-9a-f-]{36})', listed.group(1))


async def test_the_console_search_finds_the_newest_of_more_than_5000_matches(server, signup, console_client,
                                                                             owner_conn):
    owner = await signup(server)
    bot = await make_chatbot(server, owner["access_token"])
    tenant = uuid.UUID(owner["tenant_id"])
    # 6,000 conversations, one second apart, each with a matching message, written oldest first
    # (message ids grow with time, as live); every tenth is closed.
    await owner_conn.execute(
        """WITH c AS (
             INSERT INTO parley.conversations (tenant_id, chatbot_id, visitor_id, status, created_at, last_activity_at)
             SELECT $1, $2, gen_random_uuid(), CASE WHEN g % 10 = 0 THEN 'closed' ELSE 'bot' END,
                    now() - make_interval(secs => g), now() - make_interval(secs => g)
               FROM generate_series(1, $3) g
             RETURNING id, created_at)
           INSERT INTO parley.messages (tenant_id, conversation_id, author, body, created_at)
           SELECT $1, c.id, 'visitor', 'a zebra crossing', c.created_at FROM c ORDER BY c.created_at""",
        tenant, uuid.UUID(bot["id"]), MATCHES)
    await owner_conn.execute("UPDATE parley.conversations SET last_activity_at = created_at WHERE tenant_id = $1",
                             tenant)
    newest_open = [str(r["id"]) for r in await owner_conn.fetch(ORACLE, tenant, "bot", 101)]
    newest_closed = [str(r["id"]) for r in await owner_conn.fetch(ORACLE, tenant, "closed", 100)]
    c = console_client()
    await c.sign_in(owner["email"], owner["password"])
    status, html, _ = await c.get("/console/inbox?tab=all&q=zebra")
    assert status == 200
    assert _listed(html) == newest_open[:100]
    status, html, _ = await c.get("/console/inbox?tab=closed&q=zebra")
    assert _listed(html) == newest_closed
    # Mine: none assigned to the owner yet; then one, an old one, is.
    status, html, _ = await c.get("/console/inbox?tab=mine&q=zebra")
    assert _listed(html) == []
    oldest = await owner_conn.fetchval(
        "SELECT id FROM parley.conversations WHERE tenant_id = $1 AND status = 'bot'"
        " ORDER BY last_activity_at LIMIT 1", tenant)
    await owner_conn.execute("UPDATE parley.conversations SET status = 'human', assignee_id = $2 WHERE id = $1",
                             oldest, uuid.UUID(owner["user_id"]))
    status, html, _ = await c.get("/console/inbox?tab=mine&q=zebra")
    assert _listed(html) == [str(oldest)]
    # New (unassigned, never opened): the assigned one and the ones the owner opened are not.
    await c.get(f"/console/conversations/{newest_open[0]}")
    status, html, _ = await c.get("/console/inbox?tab=new&q=zebra")
    assert _listed(html) == newest_open[1:]
    assert str(oldest) not in _listed(html)
