"""CSAT frames (thumbs, rating), the negative-feedback triage list, member analytics and
what the analyst role may (and may not) read."""
import uuid

import asyncpg
import pytest
from pyapp.config import ANALYST_ROLE
from support.assistant import open_visitor


async def test_thumbs_rating_triage_and_analytics(server, bot, owner_conn, clients):
    token = bot["access_token"]
    _session, v = await open_visitor(server, bot, clients)
    await v.send({"type": "message", "client_id": "c1", "body": "How many days do I have to ask for a refund?"})
    answer = await v.expect_message(author="bot")
    await v.send({"type": "message", "client_id": "c2", "body": "What is the airspeed of a swallow?"})
    unknown = await v.expect_message(author="bot")

    await v.send({"type": "feedback", "message_id": answer["id"], "value": "up"})
    assert (await v.expect(type="feedback_saved"))["value"] == "up"
    await v.send({"type": "feedback", "message_id": unknown["id"], "value": "down", "comment": "useless"})
    await v.expect(type="feedback_saved", value="down")
    # A visitor message is not a bot reply: refused, nothing stored.
    await v.send({"type": "feedback", "message_id": answer["id"] - 1, "value": "down"})
    await v.expect(type="error")
    await v.send({"type": "rating", "score": 4, "comment": "ok"})
    await v.expect(type="rating_saved", score=4)

    status, items = await server.call("GET", "/api/feedback/negative", token=token)
    assert status == 200 and len(items) == 1, items
    item = items[0]
    assert (item["message_id"], item["comment"]) == (unknown["id"], "useless")
    assert item["question"] == "What is the airspeed of a swallow?" and item["reply"] == unknown["body"]
    status, _ = await server.call("POST", f"/api/feedback/{unknown['id']}/triage", json={"done": True}, token=token)
    assert status == 204
    status, items = await server.call("GET", "/api/feedback/negative", token=token)
    assert items == []

    status, summary = await server.call("GET", "/api/analytics/summary?days=7", token=token)
    assert status == 200, summary
    assert (summary["conversations"], summary["ai_turns"], summary["ai_unanswered"]) == (1, 2, 1)
    assert (summary["ratings"], float(summary["avg_rating"])) == (1, 4.0)
    status, per_day = await server.call("GET", f"/api/analytics/conversations?days=30&chatbot_id={bot['chatbot_id']}",
                                        token=token)
    assert status == 200 and len(per_day) == 30 and per_day[-1]["conversations"] == 1
    status, questions = await server.call("GET", "/api/analytics/questions?days=7&unanswered=true", token=token)
    assert status == 200 and questions == [
        {"question": "what is the airspeed of a swallow", "asked": 1, "unanswered": 1,
         "last_asked": questions[0]["last_asked"]}]
    status, csat = await server.call("GET", "/api/analytics/csat?days=7", token=token)
    assert status == 200 and csat[-1]["thumbs_up"] == 1 and csat[-1]["thumbs_down"] == 1
    status, _body = await server.call("GET", "/api/analytics/summary?days=12", token=token)
    assert status == 422


async def test_median_first_human_response(server, bot, owner_conn, clients):
    session, v = await open_visitor(server, bot, clients)
    conv = session["conversation_id"]
    await v.send({"type": "human"})
    await v.expect(type="status", status="waiting_human")
    await owner_conn.execute("UPDATE parley.events SET at = at - interval '90 seconds'"
                             " WHERE conversation_id = $1 AND kind = 'human_requested'", uuid.UUID(conv))
    status, out = await server.call("POST", f"/api/conversations/{conv}/reply", json={"body": "Hi, I'm Sam."},
                                    token=bot["access_token"])
    assert status == 201, out
    status, summary = await server.call("GET", "/api/analytics/summary?days=7", token=bot["access_token"])
    assert summary["human_requests"] == 1 and 89 <= float(summary["median_first_human_response_s"]) <= 100


@pytest.mark.parametrize("view", ["conversations_daily", "questions", "csat_daily", "ai_resolution_daily",
                                  "first_human_response"])
async def test_analyst_views_and_nothing_else(settings, view):
    conn = await asyncpg.connect(settings.role_url(ANALYST_ROLE))
    try:
        await conn.fetch(f"SELECT * FROM analytics.{view} LIMIT 1")
        for forbidden in ("parley.messages", "parley.knowledge_chunks", "parley.message_feedback"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch(f"SELECT 1 FROM {forbidden} LIMIT 1")
        columns = {r["attname"] for r in await conn.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0", f"analytics.{view}")}
        assert not columns & {"body", "comment", "text", "email", "ip", "meta"}
    finally:
        await conn.close()
