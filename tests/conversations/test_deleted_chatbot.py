"""A deleted chatbot takes nothing new: every function that attaches something to a chatbot asks
parley.require_live_chatbot (sql/40_chatbots.sql), so each answers 404 for a deleted one as for
an unknown one, and still works for a live one."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import pytest

# Each attaches something to the chatbot $1 (a fresh id where one is needed is made in SQL).
ATTACH = {
    "lead": "SELECT id FROM parley.create_lead($1, 'Ann', 'ann@example.test', NULL)",
    "knowledge source": "SELECT id FROM parley.create_knowledge_source($1, 'text', 'Notes')",
    "alert channel": "SELECT parley.create_alert_channel(gen_random_uuid(), $1, 'email', 'Desk', 'desk@example.test',"
                     " '{lead_captured}')",
    "webhook endpoint": "SELECT parley.create_webhook_endpoint(gen_random_uuid(), 'Orders', 'https://hooks.example.test/x',"
                        " '{message_added}', $1)",
    "telegram group": "SELECT parley.connect_telegram(gen_random_uuid(), 'Desk', -1001234567890, 42, 'desk_bot', $1)",
}


@pytest.mark.parametrize("what", ATTACH)
async def test_deleted_or_unknown_chatbot_takes_nothing(tenant_conn, what):
    bot = await tenant_conn.fetchval("SELECT id FROM parley.create_chatbot('Gone')")
    await tenant_conn.execute("SELECT parley.delete_chatbot($1)", bot)
    live = await tenant_conn.fetchval("SELECT id FROM parley.create_chatbot('Here')")  # Free: one live chatbot
    for chatbot in (bot, uuid.uuid4()):
        with pytest.raises(asyncpg.PostgresError, match="No such chatbot") as refused:
            async with tenant_conn.transaction():
                await tenant_conn.fetchval(ATTACH[what], chatbot)
        assert refused.value.sqlstate == "PT404"
    assert await tenant_conn.fetchval(ATTACH[what], live) is not None


async def test_an_import_running_when_its_chatbot_is_deleted_stores_no_more_pages(tenant_conn):
    """The race of an import with the chatbot's deletion: the import's next page is refused (404,
    the import reports failed) instead of adding knowledge to a deleted chatbot."""
    bot = await tenant_conn.fetchval("SELECT id FROM parley.create_chatbot('Importing')")
    source = await tenant_conn.fetchval("SELECT id FROM parley.create_knowledge_source($1, 'crawl', 'Site',"
                                        " 'https://shop.example/')", bot)
    page = "SELECT parley.ingest_document($1, $2, $2, 'A page', '[{\"text\": \"Opening hours: 9 to 5.\"}]')"
    assert (await tenant_conn.fetchval(page, source, "https://shop.example/a"))["added"] == 1
    await tenant_conn.execute("SELECT parley.delete_chatbot($1)", bot)
    with pytest.raises(asyncpg.PostgresError, match="No such chatbot") as refused:
        async with tenant_conn.transaction():
            await tenant_conn.fetchval(page, source, "https://shop.example/b")
    assert refused.value.sqlstate == "PT404"
    assert await tenant_conn.fetchval("SELECT count(*) FROM parley.knowledge_documents WHERE source_id = $1",
                                      source) == 1


def test_no_other_file_checks_a_chatbot_itself():
    """Outside sql/40_chatbots.sql (the home, and the writers that change the chatbot row itself)
    nothing answers 'No such chatbot': a copy of the check written again elsewhere fails here."""
    sql = Path(__file__).resolve().parents[2] / "sql"
    assert sorted(p.name for p in sql.glob("*.sql") if "No such chatbot" in p.read_text()) == ["40_chatbots.sql"]
