"""The actions registry (sql/57_actions.sql): one catalog, one dispatcher, every surface from it.

Through the REST routes GET/POST /api/conversations/{id}/actions[/{key}] and the SQL the widget
socket runs as a visitor, against real PostgreSQL: roles (a visitor cannot take agent actions, a
read-only key cannot act), another tenant's conversation is 404, bad input 422 with the SQL rule's
code, an action outside its states 409, and the catalog's states agree with the functions."""
from __future__ import annotations

import re
import uuid
from pathlib import Path

import asyncpg
import pytest

ROOT = Path(__file__).resolve().parents[2]
AGENT_ACTIONS = ("claim", "release", "close", "reopen", "assign", "note", "codename")
STATUSES = ("bot", "waiting_human", "human", "closed")


async def _actions(ws, conv, token=None) -> list[str]:
    status, body = await ws.call("GET", f"/api/conversations/{conv}/actions", token=token)
    assert status == 200, body
    return [a["key"] for a in body["actions"]]


async def _act(ws, conv, key, body=None, token=None):
    return await ws.call("POST", f"/api/conversations/{conv}/actions/{key}", json=body or {}, token=token)


async def _in_status(ws, bot, status: str, agent_token: str):
    conv = await ws.start(bot["id"])
    if status == "waiting_human":
        async with ws.visitor_tx(conv) as conn:
            await conn.execute("SELECT 1 FROM parley.perform_action($1, 'human')", conv)
    elif status == "human":
        assert (await _act(ws, conv, "claim", token=agent_token))[0] == 200
    elif status == "closed":
        assert (await _act(ws, conv, "close", token=agent_token))[0] == 200
    return conv


def _input_for(key: str, ws) -> dict:
    return {"assign": {"user_id": ws.owner["user_id"]}, "note": {"body": "checked"},
            "codename": {"codename": "Blue Fox"}}.get(key, {})


async def test_catalog_states_agree_with_the_functions(ws):
    """Every action offered in a status succeeds there; every agent action not offered is refused
    (409 for the state, 403 for the role): the catalog never offers what the function refuses."""
    bot = await ws.chatbot()
    agent = ws.agents[0]["access_token"]
    for status in STATUSES:
        probe = await _in_status(ws, bot, status, agent)
        offered = await _actions(ws, probe, agent)
        for key in AGENT_ACTIONS:
            conv = await _in_status(ws, bot, status, agent)
            code, body = await _act(ws, conv, key, _input_for(key, ws), token=agent)
            if key in offered:
                assert code == 200, (status, key, body)
                assert body["action"] == key and body["conversation"]["id"] == str(conv)
            else:
                assert (code, body["error"]["code"]) == (409, "invalid_transition"), (status, key, body)
    # what the assignee is offered on a claimed conversation, and what another agent is
    conv = await _in_status(ws, bot, "human", agent)
    assert await _actions(ws, conv, agent) == ["release", "close", "assign", "note", "codename"]
    other = await ws.add_agent()
    assert await _actions(ws, conv, other["access_token"]) == ["close", "assign", "note", "codename"]
    code, body = await _act(ws, conv, "release", token=other["access_token"])
    assert (code, body["error"]["code"]) == (403, "forbidden")
    assert "release" in await _actions(ws, conv)  # the owner (an admin) may release anyone's


async def test_state_rules_answer_409_and_the_list_follows_the_state(ws):
    bot = await ws.chatbot()
    agent = ws.agents[0]["access_token"]
    conv = await ws.start(bot["id"])
    assert await _actions(ws, conv, agent) == ["claim", "close", "assign", "note", "codename"]
    code, body = await _act(ws, conv, "release", token=agent)  # can't release an unclaimed one
    assert (code, body["error"]["code"]) == (409, "invalid_transition")
    assert "not possible while the conversation is bot" in body["error"]["message"]
    code, body = await _act(ws, conv, "claim", token=agent)
    assert code == 200 and body["status"] == "human"
    assert [a["key"] for a in body["actions"]] == ["release", "close", "assign", "note", "codename"]
    code, body = await _act(ws, conv, "close", token=agent)
    assert [a["key"] for a in body["actions"]] == ["reopen", "note", "codename"]
    code, body = await _act(ws, conv, "close", token=agent)
    assert (code, body["error"]["code"]) == (409, "invalid_transition")
    code, body = await _act(ws, conv, "reopen", token=agent)
    assert (code, body["status"], body["conversation"]["assignee_id"]) == (200, "human", ws.agents[0]["user_id"])


async def test_invalid_input_is_422_with_the_sql_rules_code(ws):
    bot = await ws.chatbot()
    conv = await ws.start(bot["id"])
    cases = [
        ("note", {}, "invalid_input"),
        ("note", {"body": "ok", "pin": True}, "invalid_input"),
        ("note", {"body": 5}, "invalid_input"),
        ("note", {"body": "   "}, "empty_body"),
        ("note", {"body": "x" * 4001}, "body_too_long"),
        ("note", {"body": "pay \u202ehere"}, "invalid_text"),
        ("codename", {"codename": "x" * 65}, "invalid_codename"),
        ("codename", {"codename": "Fox\nHound"}, "invalid_codename"),
        ("assign", {"user_id": "not-a-uuid"}, "invalid_input"),
        ("assign", {"user_id": str(uuid.uuid4())}, "not_a_member"),
        ("close", {"reason": "spam"}, "invalid_input"),
    ]
    for key, body, code in cases:
        status, out = await _act(ws, conv, key, body)
        assert (status, out["error"]["code"]) == (422, code), (key, body, out)
    status, out = await ws.call("POST", f"/api/conversations/{conv}/actions/note", json=["a list"])
    assert status == 422, out
    status, out = await _act(ws, conv, "note", {"body": "nul\x00"})
    assert status == 422, out
    # nothing of it was stored, and good input works
    status, out = await _act(ws, conv, "note", {"body": "  VIP  ", "client_id": "n-1"})
    assert status == 200
    status, _again = await _act(ws, conv, "note", {"body": "  VIP  ", "client_id": "n-1"})  # idempotent
    status, transcript = await ws.call("GET", f"/api/conversations/{conv}")
    assert [m["body"] for m in transcript["messages"] if m["author"] == "note"] == ["  VIP  "]
    status, out = await _act(ws, conv, "codename", {"codename": "Blue Fox"})
    assert status == 200 and out["conversation"]["codename"] == "Blue Fox"


async def test_unknown_visitor_and_other_tenants_actions(ws, make_workspace):
    bot = await ws.chatbot()
    conv = await ws.start(bot["id"])
    for key, code in (("explode", 404), ("human", 404), ("new", 404), ("rate", 404), ("n%00te", 404),
                      ("Claim", 404), ("x" * 300, 404)):
        # the visitor's actions are not on the API surface at all
        status, out = await _act(ws, conv, key)
        assert (status, out["error"]["code"]) == (code, "unknown_action"), key
    other = await make_workspace()
    status, out = await other.call("GET", f"/api/conversations/{conv}/actions")
    assert (status, out["error"]["code"]) == (404, "not_found")
    for key in AGENT_ACTIONS:
        status, out = await _act(other, conv, key, _input_for(key, other))
        assert (status, out["error"]["code"]) == (404, "not_found"), key
    status, out = await other.call("GET", f"/api/conversations/{uuid.uuid4()}/actions")
    assert status == 404
    status, out = await ws.call("GET", "/api/conversations/not-a-uuid/actions")
    assert status == 404
    status, transcript = await ws.call("GET", f"/api/conversations/{conv}")
    assert transcript["conversation"]["status"] == "bot" and not transcript["messages"]


async def test_api_keys_read_only_cannot_act_and_claim_needs_a_person(ws, make_api_key):
    bot = await ws.chatbot()
    conv = await ws.start(bot["id"])
    server = await ws.api()
    reader = await make_api_key(server, ws.token, scopes=("read",))
    writer = await make_api_key(server, ws.token, scopes=("read", "write"))
    assert await _actions(ws, conv, reader) == ["close", "assign", "note", "codename"]  # no claim: no person
    for key in AGENT_ACTIONS:
        status, out = await _act(ws, conv, key, _input_for(key, ws), token=reader)
        assert (status, out["error"]["code"]) == (403, "insufficient_scope"), key
    status, out = await _act(ws, conv, "claim", token=writer)
    assert (status, out["error"]["code"]) == (403, "forbidden")
    status, out = await _act(ws, conv, "close", token=writer)
    assert (status, out["status"]) == (200, "closed")


async def _visitor_do(ws, conv, sql, *args):
    async with ws.visitor_tx(conv) as conn:
        return await conn.fetchval(sql, *args)


async def test_visitor_actions_and_refusals(ws):
    bot = await ws.chatbot()
    conv = await ws.start(bot["id"])
    mine = await _visitor_do(ws, conv, "SELECT parley.conversation_actions($1)", conv)
    assert [a["key"] for a in mine] == ["human", "new"]
    for key in AGENT_ACTIONS:
        with pytest.raises(asyncpg.PostgresError) as exc:
            await _visitor_do(ws, conv, "SELECT parley.perform_action($1, $2, $3)", conv, key, _input_for(key, ws))
        assert (exc.value.sqlstate, exc.value.hint) == ("PT403", "forbidden"), key
    other = await ws.start(bot["id"])
    with pytest.raises(asyncpg.PostgresError) as exc:
        await _visitor_do(ws, conv, "SELECT parley.perform_action($1, 'human')", other)
    assert exc.value.sqlstate == "PT403"
    with pytest.raises(asyncpg.PostgresError) as exc:
        await _visitor_do(ws, conv, "SELECT parley.conversation_actions($1)", other)
    assert exc.value.sqlstate == "PT403"
    with pytest.raises(asyncpg.PostgresError) as exc:  # new is the widget's own: the next message starts one
        await _visitor_do(ws, conv, "SELECT parley.perform_action($1, 'new')", conv)
    assert (exc.value.sqlstate, exc.value.hint) == ("PT409", "surface_action")
    with pytest.raises(asyncpg.PostgresError) as exc:  # rating is offered once it ended
        await _visitor_do(ws, conv, "SELECT parley.perform_action($1, 'rate', '{\"score\": 5}')", conv)
    assert (exc.value.sqlstate, exc.value.hint) == ("PT409", "invalid_transition")
    done = await _visitor_do(ws, conv, "SELECT parley.perform_action($1, 'human')", conv)
    assert done["status"] == "waiting_human" and done["conversation"] is None  # no member details for visitors
    await ws.call("POST", f"/api/conversations/{conv}/close")
    mine = await _visitor_do(ws, conv, "SELECT parley.conversation_actions($1)", conv)
    assert [a["key"] for a in mine] == ["rate", "new"]
    with pytest.raises(asyncpg.PostgresError) as exc:
        await _visitor_do(ws, conv, "SELECT parley.perform_action($1, 'rate', '{\"score\": 9}')", conv)
    assert (exc.value.sqlstate, exc.value.hint) == ("PT422", "invalid_rating")
    await _visitor_do(ws, conv, "SELECT parley.perform_action($1, 'rate', '{\"score\": 4}')", conv)
    async with ws.tx() as conn:
        assert await conn.fetchval("SELECT score FROM parley.conversation_ratings WHERE conversation_id = $1", conv) == 4


async def test_labels_per_language_and_limits_from_the_enforcing_functions(ws):
    async with ws.tx() as conn:
        de = await conn.fetchval("SELECT parley.widget_actions('{}', 'de-AT')")
        xx = await conn.fetchval("SELECT parley.widget_actions('{\"language\": \"xx\"}', 'de')")
        catalog = await conn.fetchval("SELECT parley.action_catalog()")
        note_max, codename_max = await conn.fetchrow(
            "SELECT parley.message_body_max('note'), parley.codename_max()")
        commands = await conn.fetchval("SELECT parley.action_catalog('telegram_command')")
        keyboard = await conn.fetchval("SELECT parley.action_catalog('telegram_keyboard')")
    assert [(a["key"], a["label"], a["states"]) for a in de] == [
        ("human", "Mit einem Menschen sprechen", ["bot"]),
        ("rate", "Wie war dieses Gespräch?", ["closed"]),
        ("new", "Neue Unterhaltung", ["bot", "waiting_human", "human", "closed"])]
    assert next(a["label"] for a in xx) == "Talk to a human"  # a language not shipped: English
    by_key = {a["key"]: a for a in catalog}
    assert set(by_key) == {*AGENT_ACTIONS, "human", "rate", "new"}
    assert by_key["note"]["input"]["properties"]["body"]["maxLength"] == note_max
    assert by_key["codename"]["input"]["properties"]["codename"]["maxLength"] == codename_max
    assert [a["key"] for a in commands] == ["claim", "release", "close", "reopen", "note", "codename"]
    assert [a["key"] for a in keyboard] == ["claim", "release", "close", "reopen"]
    for a in catalog:  # every function the catalog names exists with the arguments it passes
        if a["function"] is not None:
            async with ws.tx() as conn:
                names, nargs, defaults = await conn.fetchrow(
                    "SELECT proargnames, pronargs, pronargdefaults FROM pg_proc WHERE oid = to_regprocedure($1)",
                    a["function"])
                transition = await conn.fetchval(
                    "SELECT name FROM parley.conversation_transitions WHERE name = $1", a["key"])
            keyed = names[1] == "p_action"  # transition_conversation: perform_action passes the key
            assert nargs - defaults <= 1 + keyed + len(a["args"]) <= nargs, a["key"]
            assert (transition == a["key"]) == keyed, a["key"]  # a transition's action names its row


def test_no_surface_keeps_its_own_list_of_actions():
    """The Telegram adapter and its update handler, the console and its template name no action:
    they render and dispatch what the catalog says (a second list would drift from the rules)."""
    checks = {
        "pyapp/channels/adapter.py": r'Action\("|COMMANDS\s*=|"(claim|release|close|reopen|note)"',
        "pyapp/channels/telegram.py": r'Action\("|"(claim|release|close|reopen|note|codename)"',
        "pyapp/channels/telegram_updates.py": r'"(claim|release|reopen|codename|note)"|transition_conversation',
        "pyapp/console/inbox.py": r'"(claim|release|reopen|codename|assign|note)"|transition_conversation',
        "pyapp/templates/console/_conversation.html": r"/(claim|release|close|reopen|assign|note)\b|>Claim<",
    }
    for path, pattern in checks.items():
        text = (ROOT / path).read_text()
        assert not re.search(pattern, text), (path, re.search(pattern, text))
