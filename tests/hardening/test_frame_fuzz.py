"""Schema-driven fuzzing of both sockets' frames: every field of every frame model (from its JSON schema)
gets hostile values (wrong types, integers past int64, NUL and lone surrogates, deep nesting, huge strings,
nulls); each frame must get an answer other than an internal error, and the socket must stay open."""
from __future__ import annotations

import json
import random
import uuid

import pytest
from pyapp.agent import socket as agent_socket
from pyapp.realtime import throttle
from pyapp.widget import frames as visitor_frames
from support.realtime import agent, visitor, widget_session

HOSTILE = [None, True, 0, -1, 2 ** 63, -(2 ** 63) - 1, 2 ** 70, 1.5, 1e308, "", "x" * 20000, "a\u0000b",
           "\ud800", "\u202egnp.exe", [], {}, [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["deep"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
           {"nested": {"k\u0000": 1}}, "NaN", str(uuid.uuid4()), "null"]


def _frames(models: dict, rnd: random.Random, valid: dict) -> list[str]:
    """For each frame type: its valid form, then each field set to each hostile value, then some at random."""
    out = []
    for kind, model in models.items():
        base = {"type": kind, **valid.get(kind, {})}
        out.append(json.dumps(base))
        props = [p for p in model.model_json_schema().get("properties", {}) if p != "type"]
        for prop in props:
            for value in HOSTILE:
                out.append(json.dumps({**base, prop: value}))
        for _ in range(10):
            frame = dict(base)
            for prop in rnd.sample(props, k=min(len(props), rnd.randint(0, 3))):
                frame[prop] = rnd.choice(HOSTILE)
            if rnd.random() < 0.3:
                frame.pop("type")
            out.append(json.dumps(frame))
    out += ['{"type": ' + "[" * 3000 + "]" * 3000 + "}", "not json", "[]", '"hello"', "1e999", '{"type": null}']
    return out


async def _exercise(ws, frames: list[str]) -> None:
    for raw in frames:
        await ws.ws.send_str(raw)
        await ws.send({"type": "ping"})
        await ws.expect(type="pong")  # processed in order, and still open
    internal = [f for f in ws.frames if f.get("type") == "error" and f.get("code") in ("internal", "error")]
    assert not internal, internal[:5]


@pytest.fixture
def no_frame_limits(monkeypatch):
    """The fuzz sends far more than the per-socket limits allow; every frame should reach validation."""
    monkeypatch.setattr(throttle, "FRAME_BURST", 1e9)


async def test_visitor_frames(server, tenant, no_frame_limits):
    session = await widget_session(server, tenant["key"])
    ws = await visitor(server, session)
    valid = {"message": {"client_id": "c1", "body": "hello"}, "typing": {"on": True}, "read": {"message_id": 1},
             "lead": {"name": "Ann", "email": "ann@example.test"}, "feedback": {"message_id": 1, "value": "up"},
             "rating": {"score": 5}}
    await _exercise(ws, _frames(visitor_frames.FRAME_MODELS, random.Random(17), valid))
    await ws.close()


async def test_agent_frames(server, tenant, no_frame_limits):
    ws = await agent(server, tenant["access_token"])
    conv = str(uuid.uuid4())
    models = {"typing": agent_socket._Typing, "read": agent_socket._Read, "hello": agent_socket._Hello}
    valid = {"typing": {"conversation_id": conv, "on": True}, "read": {"conversation_id": conv, "message_id": 1},
             "hello": {"token": tenant["access_token"]}}
    await _exercise(ws, _frames(models, random.Random(17), valid))
    await ws.close()
