"""Leads: capture from a conversation, CRUD, the status workflow, and a formula-safe CSV export."""
import csv
import io

import asyncpg
import pytest


async def test_capture_from_conversation_upserts_one_lead(ws, owner_conn):
    bot = await ws.chatbot()
    conv = await ws.start(bot["id"])
    async with ws.visitor_tx(conv) as conn:
        first = await conn.fetchrow("SELECT id, email FROM parley.capture_lead($1, 'Ann', ' Ann@Example.TEST ', NULL, '{\"plan\": \"pro\"}')", conv)
    async with ws.visitor_tx(conv) as conn:
        second = await conn.fetchrow("SELECT id FROM parley.capture_lead($1, NULL, NULL, '+49 30 123', '{\"size\": 5}')", conv)
    assert first["id"] == second["id"] and first["email"] == "ann@example.test"
    status, lead = await ws.call("GET", f"/api/leads/{first['id']}")
    assert (lead["name"], lead["phone"], lead["custom"], lead["conversation_id"]) == \
        ("Ann", "+49 30 123", {"plan": "pro", "size": 5}, str(conv))
    assert await owner_conn.fetchval(
        "SELECT count(*) FROM parley.events WHERE conversation_id = $1 AND kind = 'lead_captured'", conv) == 2
    for bad in ({"email": "not-an-email"}, {"phone": "call me maybe"}, {}):
        status, body = await ws.call("POST", f"/api/conversations/{conv}/lead", json=bad)
        assert status == 422, (bad, body)


async def test_crud_and_status_workflow(ws):
    status, lead = await ws.call("POST", "/api/leads", json={"name": "Bo", "email": "bo@example.test"})
    assert status == 201 and lead["status"] == "new"
    path = f"/api/leads/{lead['id']}"
    status, body = await ws.call("PATCH", path, json={"status": "won"})
    assert (status, body["error"]["code"]) == (409, "invalid_transition")
    for step in ("contacted", "qualified", "won"):
        status, body = await ws.call("PATCH", path, json={"status": step})
        assert (status, body["status"]) == (200, step)
    status, body = await ws.call("PATCH", path, json={"status": "lost"})
    assert (status, body["error"]["code"]) == (409, "invalid_transition")  # won is final
    status, body = await ws.call("PATCH", path, json={"status": "bogus"})
    assert status == 422
    status, body = await ws.call("PATCH", path, json={"phone": "+1 555 0100", "name": ""})
    assert (status, body["phone"], body["name"], body["status"]) == (200, "+1 555 0100", None, "won")

    status, other = await ws.call("POST", "/api/leads", json={"email": "lost@example.test"})
    await ws.call("PATCH", f"/api/leads/{other['id']}", json={"status": "lost"})
    status, body = await ws.call("PATCH", f"/api/leads/{other['id']}", json={"status": "new"})
    assert (status, body["status"]) == (200, "new")  # lost → new reopens

    status, listed = await ws.call("GET", "/api/leads?status=won")
    assert [item["id"] for item in listed["leads"]] == [lead["id"]]
    assert (await ws.call("DELETE", path))[0] == 204
    assert (await ws.call("GET", path))[0] == 404
    assert (await ws.call("DELETE", path))[0] == 404


async def test_a_lead_of_a_deleted_chatbot_is_refused(ws):
    bot = await ws.chatbot()
    status, lead = await ws.call("POST", "/api/leads", json={"email": "kept@example.test", "chatbot_id": bot["id"]})
    assert status == 201 and lead["chatbot_id"] == bot["id"]
    assert (await ws.call("DELETE", f"/api/chatbots/{bot['id']}"))[0] == 204
    status, body = await ws.call("POST", "/api/leads", json={"email": "late@example.test", "chatbot_id": bot["id"]})
    assert (status, body["error"]["code"]) == (404, "not_found"), body
    assert (await ws.call("GET", f"/api/leads/{lead['id']}"))[0] == 200  # its earlier lead is kept


async def test_csv_export_defuses_formulas(ws):
    nasty = {
        "=HYPERLINK(\"http://evil.test\",\"click\")": "=1+1",
        "+SUM(A1:A9)": "+cmd",
        "-2+3": "-x",
        "@SUM(1)": "@me",
    }
    made = []
    for name, extra in nasty.items():
        status, lead = await ws.call("POST", "/api/leads", json={"name": name, "email": "ok@example.test",
                                                                  "custom": {"note": extra}})
        assert status == 201, lead
        made.append(lead)
    status, plain = await ws.call("POST", "/api/leads", json={"name": "Plain, \"quoted\"\nname", "phone": "+44 20 7946 0000"})
    assert status == 201

    status, text = await ws.call("GET", "/api/leads.csv")
    assert status == 200
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 5
    by_id = {r["id"]: r for r in rows}
    for lead in made:
        cell = by_id[lead["id"]]["name"]
        assert cell == "'" + lead["name"], cell
    for row in rows:
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@")), value
    p = by_id[plain["id"]]
    assert p["name"] == "Plain, \"quoted\"\nname"  # quoting survives the round trip
    assert p["phone"] == "'+44 20 7946 0000"
    assert p["custom"] == "" and by_id[made[0]["id"]]["custom"] == '{"note": "=1+1"}'


async def test_visitor_lead_form_validation_is_sql_side_too(ws):
    bot = await ws.chatbot()
    conv = await ws.start(bot["id"])
    async with ws.visitor_tx(conv) as conn:
        with pytest.raises(asyncpg.PostgresError) as exc:
            await conn.fetchrow("SELECT id FROM parley.capture_lead($1, NULL, 'nope', NULL)", conv)
    assert (exc.value.sqlstate, exc.value.hint) == ("PT422", "invalid_email")
