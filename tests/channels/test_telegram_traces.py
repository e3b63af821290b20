"""Traces through a channel send (issue 14 §6) against the fake Bot API on 127.0.0.1: a post that
coalesces several messages continues the first one's trace and links the others'; the Bot API's
URL holds the bot token, and no span carries it (name, attributes, events)."""
from pyapp import tracing
from support.fakes.telegram import TOKEN
from support.outbox import connect_telegram, drain_telegram, post, start_conversation
from support.traces import spans  # noqa: F401 (fixture)


async def test_a_coalesced_post_continues_its_messages_traces_and_hides_the_token(ws, tg, owner_conn, spans):  # noqa: F811  pytest fixture imported above, injected by name
    await connect_telegram(ws, owner_conn)
    conv = await start_conversation(ws.tenant)
    parents = []
    for body in ("Hello", "Are you there?", "My order is late"):
        with tracing.span(f"request {body}") as request:  # as a request's span would be
            await post(ws.tenant, conv, body, author="visitor")
            parents.append(request.get_span_context())
    assert await drain_telegram(ws.tenant, tg) == 3
    done = spans.get_finished_spans()
    sends = [s for s in done if s.name == "outbox.send"]
    post_send = next(s for s in sends if len(s.links) == 2)  # the three messages went as one post
    # Parent: the first message's transaction (under its request); links: the other two's.
    txs = {s.context.span_id: s for s in done if s.name == "db.transaction"}
    first = txs[post_send.parent.span_id]
    assert first.parent.span_id == parents[0].span_id and post_send.context.trace_id == parents[0].trace_id
    linked = {txs[link.context.span_id].parent.span_id for link in post_send.links}
    assert linked == {parents[1].span_id, parents[2].span_id}
    http = [s for s in done if s.name.startswith("HTTP ") and s.parent is not None
            and s.parent.span_id == post_send.context.span_id]
    assert http and all(s.attributes["server.address"] == "127.0.0.1" for s in http)
    secret = TOKEN.split(":")[1]
    for s in done:
        text = repr((s.name, dict(s.attributes), [(e.name, dict(e.attributes)) for e in s.events]))
        assert secret not in text, s.name
