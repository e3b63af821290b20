"""Through the real relay: a visitor's socket carries what SQL shaped for it, never a note."""
from __future__ import annotations

from support.realtime import agent, visitor, widget_session


async def test_notes_never_reach_the_visitor_socket(server, tenant, clients):
    ag = await agent(server, tenant["access_token"])
    clients.append(ag)
    sess = await widget_session(server, tenant["key"])
    conv = sess["conversation_id"]
    vis = await visitor(server, sess)
    clients.append(vis)
    token = tenant["access_token"]
    status, note = await server.call("POST", f"/api/conversations/{conv}/notes", token=token,
                                     json={"body": "VIP, staff only"})
    assert status == 201
    await ag.expect_event("note_added", lambda e: e["message"]["id"] == note["id"])  # staff see it
    status, reply = await server.call("POST", f"/api/conversations/{conv}/reply", token=token,
                                      json={"body": "Hello from Ana"})
    assert status == 201
    got = await vis.expect_message("Hello from Ana", author="agent")
    assert got["id"] == reply["id"] and "meta" not in got and "author_id" not in got
    # Everything the visitor got came in order, so the note (written first) would be here by now.
    assert not any("staff only" in str(f) for f in vis.frames), vis.frames
    assert [f.get("status") for f in vis.frames if f["type"] == "status"] == ["human"]
