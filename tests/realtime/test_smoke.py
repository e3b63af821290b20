from tests.realtime.conftest import agent, visitor, widget_session


async def test_visitor_bot_agent(server, tenant, clients):
    ag = await agent(server, tenant["access_token"])
    clients.append(ag)
    sess = await widget_session(server, tenant["key"])
    vis = await visitor(server, sess)
    clients.append(vis)
    await vis.send({"type": "message", "client_id": "c1", "body": "hello there"})
    mine = await vis.expect_message("hello there", author="visitor")
    bot = await vis.expect_message(author="bot")
    ev = await ag.expect_event("message_added", lambda e: e["message"]["id"] == mine["id"])
    ev2 = await ag.expect_event("message_added", lambda e: e["message"]["id"] == bot["id"])
    print(ev, ev2)
