"""One trace from the request to the channel send (issue 14 §6): a traced transaction hands its span
to SQL (app.traceparent), the outbox row it writes keeps it (parley.outbox.traceparent, by the
column's default), and the drainer sends as its child, down to the HTTP request. Spans go to the OTel
in-memory exporter (the `spans` fixture, tests/ops/conftest.py); the webhook receiver is a real one on 127.0.0.1."""
from __future__ import annotations

import uuid

import asyncpg
import pytest
from pyapp import tracing
from support.outbox import add_destination, make_drainer, sink  # noqa: F401 (fixture)
from support.realtime import clients, create_chatbot, placeholder_bot, visitor, widget_session  # noqa: F401 (fixture)
from support.waits import until

TRACE = "0af7651916cd43dd8448eb211c80319c"
VALID = f"00-{TRACE}-b7ad6b7169203331-01"


class _Tenant:
    """The server-made tenant, for add_destination."""

    def __init__(self, tenant_id):
        self.id = uuid.UUID(str(tenant_id))


async def _rows(owner_conn, tenant_id):
    """The tenant's message_added deliveries: (delivery id, the message's author, traceparent)."""
    return await owner_conn.fetch(
        "SELECT o.id, m.author, o.traceparent FROM parley.outbox o"
        " JOIN parley.events e ON e.tenant_id = o.tenant_id AND e.id = o.event_id"
        " JOIN parley.messages m ON m.tenant_id = e.tenant_id AND m.conversation_id = e.conversation_id"
        "  AND m.id = e.message_id"
        " WHERE o.tenant_id = $1 AND o.kind = 'conversation.message_added' ORDER BY o.id",
        uuid.UUID(str(tenant_id)))


async def _drain(settings):
    from pyapp.db import create_pool

    pool = await create_pool(settings.jobs_url, min_size=1, max_size=2)
    drainer = make_drainer(pool)
    try:
        return await drainer.drain()
    finally:
        await drainer.close()
        await pool.close()


async def _traced_reply(server, signup, owner_conn, sink):  # noqa: F811  pytest fixture imported above, injected by name
    """An agent's reply sent with the caller's traceparent (VALID) to a workspace with a webhook;
    returns its outbox row."""
    owner = await signup(server)
    bot = await create_chatbot(owner_conn, owner["tenant_id"])
    sess = await widget_session(server, bot["key"])
    await add_destination(owner_conn, _Tenant(owner["tenant_id"]), sink.url)
    status, _ = await server.call("POST", f"/api/conversations/{sess['conversation_id']}/reply",
                                  token=owner["access_token"], json={"body": "On its way", "client_id": "a-1"},
                                  headers={"traceparent": VALID})
    assert status == 201
    (row,) = await _rows(owner_conn, owner["tenant_id"])
    return row


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def _send_trace(done, delivery_id):
    """The outbox.send span of a delivery and the HTTP request under it."""
    send = next(s for s in done if s.name == "outbox.send" and s.attributes["parley.delivery_id"] == delivery_id)
    http = [s for s in done if s.name == "HTTP POST" and s.parent is not None
            and s.parent.span_id == send.context.span_id]
    return send, http


async def test_a_visitor_message_and_its_webhook_send_are_one_trace(server, signup, owner_conn, settings, sink,  # noqa: F811  pytest fixture imported above, injected by name
                                                                     spans, clients):  # noqa: F811  pytest fixture imported above, injected by name
    owner = await signup(server)
    bot = await create_chatbot(owner_conn, owner["tenant_id"])
    await add_destination(owner_conn, _Tenant(owner["tenant_id"]), sink.url)
    sess = await widget_session(server, bot["key"])
    client = await visitor(server, sess)
    clients.append(client)
    before = {r["id"] for r in await _rows(owner_conn, owner["tenant_id"])}  # a greeting, if any
    await client.send({"type": "message", "body": "Where is my parcel?", "client_id": "v-1"})
    await client.expect_message("Where is my parcel?", author="visitor")
    await client.expect_message(author="bot")  # the placeholder bot's answer, from its own task
    await until(lambda: any(s.name == "WS visitor message" for s in spans.get_finished_spans()), what="frame span")
    rows = [r for r in await _rows(owner_conn, owner["tenant_id"]) if r["id"] not in before]
    assert sorted(r["author"] for r in rows) == ["bot", "visitor"] and all(r["traceparent"] for r in rows)

    assert await _drain(settings) == len(rows) + len(before)
    assert len(sink.received) == len(rows) + len(before)
    done = spans.get_finished_spans()
    frame = next(s for s in done if s.name == "WS visitor message")
    trace_id = frame.context.trace_id
    # The frame is a trace of its own, linked to the socket's span (which lasts as long as the socket).
    assert frame.parent is None and len(frame.links) == 1
    assert frame.links[0].context.trace_id != trace_id and frame.links[0].context.is_valid
    ids = {s.context.span_id for s in done if s.context.trace_id == trace_id}
    for row in rows:
        # The row names a span of the frame's trace (the SQL that stored the message, or the bot's reply).
        _version, row_trace, row_span, _flags = row["traceparent"].split("-")
        assert row_trace == _hex(trace_id, 32) and int(row_span, 16) in ids
        send, http = _send_trace(done, row["id"])
        # The jobs side continues it: the send is that span's child, and the HTTP request the send's.
        assert send.context.trace_id == trace_id and _hex(send.parent.span_id, 16) == row_span
        assert len(http) == 1 and http[0].context.trace_id == trace_id
        assert http[0].attributes["http.response.status_code"] == 200
        assert http[0].attributes["server.address"] == "127.0.0.1"
        assert not any("/" in str(v) for v in http[0].attributes.values())  # no path (Telegram's holds a token)
    # The stored visitor message's SQL hangs under the frame.
    visitor_row = next(r for r in rows if r["author"] == "visitor")
    assert int(visitor_row["traceparent"].split("-")[2], 16) in ids


async def test_a_rest_reply_continues_the_callers_trace_to_the_send(server, signup, owner_conn, settings, sink,  # noqa: F811  pytest fixture imported above, injected by name
                                                                    spans):
    row = await _traced_reply(server, signup, owner_conn, sink)
    assert row["author"] == "agent" and row["traceparent"].startswith(f"00-{TRACE}-")
    tx = next(s for s in spans.get_finished_spans() if s.name == "db.transaction"
              and _hex(s.context.span_id, 16) == row["traceparent"].split("-")[2])
    assert _hex(tx.context.trace_id, 32) == TRACE  # the span of the transaction that wrote the row
    assert await _drain(settings) == 1
    send, http = _send_trace(spans.get_finished_spans(), row["id"])
    assert _hex(send.context.trace_id, 32) == TRACE and send.parent.span_id == tx.context.span_id
    assert len(http) == 1


async def test_traces_off_write_no_trace_context(server, signup, owner_conn, sink):  # noqa: F811  pytest fixture imported above, injected by name
    assert not tracing.enabled()
    row = await _traced_reply(server, signup, owner_conn, sink)  # a caller's trace is not followed
    assert row["traceparent"] is None


@pytest.mark.parametrize("value", [
    "garbage",
    f"00-{TRACE}-b7ad6b7169203331-01'; DROP TABLE parley.outbox; --",
    f"00-{'0' * 32}-b7ad6b7169203331-01",  # all-zero trace id: invalid
    f"00-{TRACE}-{'0' * 16}-01",  # all-zero span id: invalid
    f"ff-{TRACE}-b7ad6b7169203331-01",  # version ff is forbidden
    f"00-{TRACE.upper()}-b7ad6b7169203331-01",
    "",
])
async def test_only_a_valid_traceparent_reaches_an_outbox_row(tenant, owner_conn, sink, value):  # noqa: F811  pytest fixture imported above, injected by name
    """Whatever sets app.traceparent, the row gets a valid W3C value or nothing (and the write succeeds)."""
    await add_destination(owner_conn, tenant, sink.url)
    async with await tenant.tx("service") as conn:
        conv = await conn.fetchval(
            "SELECT id FROM parley.start_conversation($1, gen_random_uuid(), NULL, NULL, NULL, 'en', NULL, NULL)",
            tenant.chatbot_id)
        await conn.execute("SELECT set_config('app.traceparent', $1, true)", value)
        await conn.fetchval("SELECT id FROM parley.post_message($1, 'bot', 'hello')", conv)
        assert await conn.fetchval("SELECT parley.current_traceparent()") is None
    assert await owner_conn.fetchval(
        "SELECT array_agg(traceparent) FROM parley.outbox WHERE tenant_id = $1", tenant.id) == [None]


async def test_a_batch_gives_each_message_its_own_trace_context(tenant, owner_conn, sink):  # noqa: F811  pytest fixture imported above, injected by name
    """post_visitor_messages sets app.traceparent per message: a message sent without a trace does
    not inherit the one before it, and nothing is left set after the batch."""
    await add_destination(owner_conn, tenant, sink.url)
    async with await tenant.tx("service") as conn:
        convs = [await conn.fetchval(
            "SELECT id FROM parley.start_conversation($1, gen_random_uuid(), NULL, NULL, NULL, 'en', NULL, NULL)",
            tenant.chatbot_id) for _ in range(3)]
    other = f"00-{'1' * 32}-{'2' * 16}-01"
    pool = await tenant.pool("app")
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "SELECT * FROM parley.post_visitor_messages($1, $2, $3, $4, $5, $6, $7)", tenant.id, convs,
            ["one", "two", "three"], ["c1", "c2", "c3"], [None] * 3, [None] * 3, [VALID, None, other])
        assert [r["error_state"] for r in rows] == [None] * 3
        assert await conn.fetchval("SELECT parley.current_traceparent()") is None
    found = await owner_conn.fetch(
        "SELECT o.conversation_id, o.traceparent FROM parley.outbox o WHERE o.tenant_id = $1", tenant.id)
    by_conv = {r["conversation_id"]: r["traceparent"] for r in found}
    assert [by_conv[c] for c in convs] == [VALID, None, other]
    # Without the array (traces off) nothing is set; a wrong-sized one is refused.
    async with pool.acquire() as conn, conn.transaction():
        with pytest.raises(asyncpg.PostgresError, match="one entry per message"):
            await conn.fetch("SELECT * FROM parley.post_visitor_messages($1, $2, $3, $4, $5, $6, $7)", tenant.id,
                             convs[:1], ["x"], ["c9"], [None], [None], [VALID, VALID])
