"""Finding 1: hostile inputs get a 4xx in the error shape (or an error frame), never a 500 or a 1011."""
from __future__ import annotations

import json
import uuid

import pytest
from support.realtime import Client, agent, visitor, widget_session

NESTED = "[" * 5000 + "]" * 5000
NESTED_OBJ = '{"a":' * 3000 + "1" + "}" * 3000


def assert_error_shape(status: int, body, *, allowed=range(400, 500)) -> None:
    assert status in allowed, (status, body)
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
    assert isinstance(body["error"].get("code"), str) and isinstance(body["error"].get("message"), str), body


async def raw_call(server, method: str, path: str, data: bytes | str, *, token=None, content_type="application/json"):
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with server.http.request(method, server.base_url + path, data=data, headers=headers) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


def json_body_routes(server):
    from pyapp.api import api
    return [(s.method, s.path, s.auth) for s in api.routes if s.body is not None]


@pytest.mark.parametrize("payload", [NESTED, NESTED_OBJ], ids=["array", "object"])
async def test_deeply_nested_json_on_every_json_route(server, tenant, payload):
    seen = 0
    for method, path, auth in json_body_routes(server):
        url = path
        for name in ("chatbot_id", "conversation_id", "lead_id", "source_id", "user_id", "invite_id", "key_id"):
            url = url.replace(f"{{{name}}}", str(tenant["chatbot_id"]) if name == "chatbot_id" else str(uuid.uuid4()))
        url = url.replace("{message_id}", "1")
        status, body = await raw_call(server, method, url, payload,
                                      token=None if auth == "public" else tenant["access_token"])
        assert_error_shape(status, body)
        seen += 1
    assert seen > 20


async def test_nul_in_jsonb_values_and_keys(server, tenant):
    token = tenant["access_token"]
    for custom in ({"note": "a\u0000b"}, {"k\u0000": "v"}, {"deep": [{"x": "\u0000"}]}):
        status, body = await server.call("POST", "/api/leads", json={"name": "Ann", "custom": custom}, token=token)
        assert_error_shape(status, body, allowed=(422,))
    status, body = await server.call("PATCH", f"/api/chatbots/{tenant['chatbot_id']}",
                                     json={"config": {"persona": {"x\u0000": "y"}}}, token=token)
    assert_error_shape(status, body, allowed=(422,))
    status, body = await server.call("PATCH", f"/api/chatbots/{tenant['chatbot_id']}",
                                     json={"config": {"greeting": "hi\u0000"}}, token=token)
    assert_error_shape(status, body, allowed=(422,))
    session = await widget_session(server, tenant["key"])
    status, body = await server.call("POST", f"/api/conversations/{session['conversation_id']}/lead",
                                     json={"custom": {"a": "\u0000"}}, token=token)
    assert_error_shape(status, body, allowed=(422,))
    # Nothing half-stored
    status, leads = await server.call("GET", "/api/leads", token=token)
    assert status == 200 and leads["leads"] == []


async def test_lone_surrogates_and_non_finite_numbers(server, tenant):
    token = tenant["access_token"]
    status, body = await raw_call(server, "POST", "/api/leads", '{"name": "\\ud800", "custom": {}}', token=token)
    assert_error_shape(status, body)
    status, body = await raw_call(server, "POST", "/api/leads", '{"custom": {"x": NaN}}', token=token)
    assert_error_shape(status, body)


async def test_integers_past_int64(server, tenant):
    token = tenant["access_token"]
    status, body = await server.call("POST", "/api/feedback/99999999999999999999999/triage", json={}, token=token)
    assert_error_shape(status, body, allowed=(404,))
    status, body = await server.call("POST", "/api/leads", json={"custom": {"n": 2 ** 70}}, token=token)
    assert_error_shape(status, body, allowed=(422,))
    status, body = await server.call("GET", "/api/events?last_event_id=99999999999999999999", token=token)
    assert_error_shape(status, body, allowed=(422,))


async def test_multipart_without_boundary(server, tenant):
    status, body = await raw_call(server, "POST", f"/api/chatbots/{tenant['chatbot_id']}/knowledge/upload",
                                  b"--x\r\n\r\n", token=tenant["access_token"], content_type="multipart/form-data")
    assert_error_shape(status, body)


async def test_visitor_socket_hostile_frames(server, tenant, clients):
    session = await widget_session(server, tenant["key"])
    # hello with last_seen_id >= 2^63: an error frame, not 1011
    c = await Client.connect(server.base_url, "/ws/visitor")
    clients.append(c) if isinstance(clients, list) else None
    await c.send({"type": "hello", "token": session["token"], "last_seen_id": 2 ** 63})
    frame = await c.expect(type="error")
    assert frame["code"]
    code = await c.expect_closed()
    assert code != 1011
    await c.close()
    # a deeply nested hello
    c = await Client.connect(server.base_url, "/ws/visitor")
    await c.ws.send_str(NESTED)
    await c.expect(type="error")
    assert await c.expect_closed() != 1011
    await c.close()
    v = await visitor(server, session)
    await v.ws.send_str(NESTED)
    await v.expect(type="error")
    await v.send({"type": "feedback", "message_id": 2 ** 70, "value": "up"})
    await v.expect(type="error")
    await v.send({"type": "read", "message_id": 2 ** 64})
    await v.expect(type="error")
    await v.send({"type": "lead", "name": "Ann", "custom": {"x": "a\u0000"}})
    await v.expect(type="error")
    await v.send({"type": "lead", "name": "Ann", "k\u0000": "v"})
    await v.expect(type="error")
    await v.send({"type": "ping"})
    await v.expect(type="pong")  # still open
    await v.close()


async def test_agent_socket_hostile_frames(server, tenant):
    c = await Client.connect(server.base_url, "/ws/agent")
    await c.ws.send_str(NESTED)
    await c.expect(type="error")
    assert await c.expect_closed() != 1011
    await c.close()
    c = await Client.connect(server.base_url, "/ws/agent")
    await c.send({"type": "hello", "token": tenant["access_token"], "last_event_id": 2 ** 63})
    await c.expect(type="error")
    assert await c.expect_closed() != 1011
    await c.close()
    a = await agent(server, tenant["access_token"])
    await a.ws.send_str(NESTED)
    await a.expect(type="error")
    await a.send({"type": "read", "conversation_id": str(uuid.uuid4()), "message_id": 2 ** 70})
    await a.expect(type="error")
    await a.send({"type": "ping"})
    await a.expect(type="pong")
    await a.close()
