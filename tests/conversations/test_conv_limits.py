"""Plan limits at their edges, per-tenant overrides (NULL inherits, 0 unlimited), rate limits."""
import uuid

import asyncpg
import pytest
from pyapp.client import ParleyError
from support.waits import day_clear
from support.workspace import override_limits


async def test_max_chatbots_plan_override_and_unlimited(make_workspace, owner_conn):
    ws = await make_workspace()  # free: 1 chatbot
    await ws.chatbot("one")
    status, body = await ws.call("POST", "/api/chatbots", json={"name": "two"})
    assert (status, body["error"]["code"]) == (402, "plan_limit")
    # a deleted chatbot no longer counts
    status, listed = await ws.call("GET", "/api/chatbots")
    await ws.call("DELETE", f"/api/chatbots/{listed['chatbots'][0]['id']}")
    await ws.chatbot("two")
    # override 2: one more fits, then 402
    await override_limits(owner_conn, ws.tenant_id, max_chatbots=2)
    await ws.chatbot("three")
    assert (await ws.call("POST", "/api/chatbots", json={"name": "four"}))[0] == 402
    # override 0: unlimited
    await override_limits(owner_conn, ws.tenant_id, max_chatbots=0)
    for n in range(3):
        await ws.chatbot(f"many {n}")
    # NULL inherits the plan again (free: 1, and 4 exist)
    await override_limits(owner_conn, ws.tenant_id, max_chatbots=None)
    assert (await ws.call("POST", "/api/chatbots", json={"name": "again"}))[0] == 402
    # a plan change is picked up by the same resolver
    await owner_conn.execute("UPDATE parley.tenants SET plan = 'pro' WHERE id = $1", ws.tenant_id)
    await ws.chatbot("pro one")
    status, limits = await ws.call("GET", "/api/limits")
    assert (status, limits["plan"], limits["max_chatbots"]) == (200, "pro", 20)


async def test_effective_limits_resolution(make_workspace, owner_conn):
    ws = await make_workspace(plan="starter")
    await override_limits(owner_conn, ws.tenant_id, msgs_per_min_ip=0, ai_msgs_per_day=7, allow_hide_branding=False)
    async with ws.tx() as conn:
        row = dict(await conn.fetchrow("SELECT * FROM parley.effective_limits($1)", ws.tenant_id))
        other = await conn.fetch("SELECT * FROM parley.effective_limits($1)", uuid.uuid4())
    plan = dict(await owner_conn.fetchrow("SELECT * FROM parley.plans WHERE id = 'starter'"))
    assert row["msgs_per_min_ip"] == 0 and row["ai_msgs_per_day"] == 7 and row["allow_hide_branding"] is False
    for key in ("max_chatbots", "max_seats", "max_open_conversations", "msgs_per_min_chatbot", "retention_days"):
        assert row[key] == plan[key], key
    assert other == []  # another tenant's limits are not visible


async def test_max_open_conversations_edge(make_workspace, owner_conn):
    ws = await make_workspace()
    bot = await ws.chatbot()
    await override_limits(owner_conn, ws.tenant_id, max_open_conversations=2)
    first = await ws.start(bot["id"])
    await ws.start(bot["id"])
    with pytest.raises(asyncpg.PostgresError) as exc:
        await ws.start(bot["id"])
    assert (exc.value.sqlstate, exc.value.hint) == ("PT402", "plan_limit")
    # closing one frees a slot; reopening it while full is refused
    await ws.call("POST", f"/api/conversations/{first}/close")
    third = await ws.start(bot["id"])
    status, body = await ws.call("POST", f"/api/conversations/{first}/reopen")
    assert (status, body["error"]["code"]) == (402, "plan_limit")
    with pytest.raises(asyncpg.PostgresError):
        await ws.visitor_says(first, "anyone there?")  # a visitor message would reopen it: refused too
    await override_limits(owner_conn, ws.tenant_id, max_open_conversations=0)
    for _ in range(3):
        await ws.start(bot["id"])
    assert third


async def test_max_seats_enforced_on_membership(make_workspace, signup, owner_conn, server):
    ws = await make_workspace()  # free: 3 seats, the owner uses one
    await ws.add_agent(signup)
    await ws.add_agent(signup)
    with pytest.raises(ParleyError) as refused:  # the invite (sign_up goes through pyapp/client)
        await ws.add_agent(signup)
    assert (refused.value.status, refused.value.code) == (402, "plan_limit")
    await override_limits(owner_conn, ws.tenant_id, max_seats=4)
    await ws.add_agent(signup)
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.members WHERE tenant_id = $1", ws.tenant_id) == 4


async def test_ai_messages_per_day(make_workspace, owner_conn):
    ws = await make_workspace()
    bot = await ws.chatbot()
    conv = await ws.start(bot["id"])
    await override_limits(owner_conn, ws.tenant_id, ai_msgs_per_day=3)
    await day_clear(owner_conn)
    async with ws.tx() as conn:
        for n in range(3):
            await conn.fetchrow("SELECT * FROM parley.post_message($1, 'bot', $2)", conv, f"answer {n}")
    async with ws.tx() as conn:
        with pytest.raises(asyncpg.PostgresError) as exc:
            await conn.fetchrow("SELECT * FROM parley.post_message($1, 'bot', 'one too many')", conv)
    assert (exc.value.sqlstate, exc.value.hint) == ("PT402", "plan_limit")


async def test_hide_branding_needs_plan(make_workspace, owner_conn):
    ws = await make_workspace()
    cfg = {"branding": {"hide_powered_by": True}}
    status, body = await ws.call("POST", "/api/chatbots", json={"name": "b", "config": cfg})
    assert (status, body["error"]["code"]) == (402, "plan_limit")
    bot = await ws.chatbot("b")
    status, body = await ws.call("PATCH", f"/api/chatbots/{bot['id']}", json={"config": cfg})
    assert status == 402
    await owner_conn.execute("UPDATE parley.tenants SET plan = 'starter' WHERE id = $1", ws.tenant_id)
    status, body = await ws.call("PATCH", f"/api/chatbots/{bot['id']}", json={"config": cfg})
    assert status == 200 and body["config"]["branding"]["hide_powered_by"] is True
    row = await owner_conn.fetchrow("SELECT * FROM parley.widget_chatbot($1)", bot["public_key"])
    assert row["public_config"]["branding"]["hide_powered_by"] is True
    # after a downgrade the widget shows the branding again, whatever the stored config says
    await owner_conn.execute("UPDATE parley.tenants SET plan = 'free' WHERE id = $1", ws.tenant_id)
    row = await owner_conn.fetchrow("SELECT * FROM parley.widget_chatbot($1)", bot["public_key"])
    assert row["public_config"]["branding"]["hide_powered_by"] is False


async def _burst(ws, conv, n, ip, prefix):
    statuses = []
    for i in range(n):
        try:
            await ws.visitor_says(conv, f"{prefix} {i}", ip=ip)
            statuses.append("ok")
        except asyncpg.PostgresError as exc:
            statuses.append(exc.hint)
    return statuses


async def test_rate_limit_per_ip_hit_then_recovered(make_workspace, owner_conn):
    ws = await make_workspace()
    bot = await ws.chatbot()
    await override_limits(owner_conn, ws.tenant_id, msgs_per_min_ip=5, msgs_per_min_chatbot=0)
    conv = await ws.start(bot["id"])
    assert await _burst(ws, conv, 7, "198.51.100.1", "a") == ["ok"] * 5 + ["rate_limited"] * 2
    # another address is not affected
    other = await ws.start(bot["id"])
    assert await _burst(ws, other, 2, "198.51.100.2", "b") == ["ok", "ok"]
    # the minute passes (the hits moved 70 s into the past instead of sleeping)
    await owner_conn.execute("UPDATE parley.rate_counters SET window_start = window_start - interval '70 seconds' "
                             "WHERE tenant_id = $1", ws.tenant_id)
    assert await _burst(ws, conv, 1, "198.51.100.1", "c") == ["ok"]
    # refused messages were not stored
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.messages WHERE conversation_id = $1", conv) == 6


async def test_rate_limit_counts_the_last_sixty_seconds(make_workspace, owner_conn):
    """A limit per minute holds in any 60 seconds, across a minute's turn: fixed one-minute windows
    let a client send the limit at 00:59 and again at 01:00. The refusal's retry_after says when
    enough hits have left the last minute."""
    ws = await make_workspace()
    bot = await ws.chatbot()
    await override_limits(owner_conn, ws.tenant_id, msgs_per_min_ip=4, msgs_per_min_chatbot=0)
    conv = await ws.start(bot["id"])
    assert await _burst(ws, conv, 4, "198.51.100.7", "a") == ["ok"] * 4
    hits_at = ("WITH gone AS (DELETE FROM parley.rate_counters WHERE tenant_id = $1 AND scope = 'ip' RETURNING hits)"
               " INSERT INTO parley.rate_counters (tenant_id, scope, key, window_start, shard, hits)"
               " SELECT $1, 'ip', '198.51.100.7', parley.rate_bucket({}), 0, sum(hits) FROM gone")
    # The four hits a second before this minute began (the last fixed minute): still within the
    # last 60 seconds, so the fifth is refused until this minute ends.
    await owner_conn.execute(hits_at.format("date_trunc('minute', clock_timestamp()) - interval '1 second'"),
                             ws.tenant_id)
    with pytest.raises(asyncpg.PostgresError) as refused:
        await ws.visitor_says(conv, "b", ip="198.51.100.7")
    assert refused.value.hint == "rate_limited"
    assert 1 <= int(refused.value.detail.removeprefix("retry_after=")) <= 60, refused.value.detail
    # Once they are more than a minute old, the next is taken.
    await owner_conn.execute(hits_at.format("clock_timestamp() - interval '70 seconds'"), ws.tenant_id)
    assert await _burst(ws, conv, 1, "198.51.100.7", "c") == ["ok"]


async def test_rate_limit_per_chatbot_across_visitors(make_workspace, owner_conn):
    ws = await make_workspace()
    bot = await ws.chatbot()
    await override_limits(owner_conn, ws.tenant_id, msgs_per_min_chatbot=4, msgs_per_min_ip=0)
    convs = [await ws.start(bot["id"]) for _ in range(3)]
    results = []
    for i, conv in enumerate(convs * 2):
        results += await _burst(ws, conv, 1, f"198.51.100.{10 + i}", "x")
    assert results == ["ok"] * 4 + ["rate_limited"] * 2
    # the counter is sharded by backend: several rows may hold the window, their sum is the count
    assert await owner_conn.fetchval("SELECT sum(hits) FROM parley.rate_counters WHERE tenant_id = $1 "
                                     "AND scope = 'chatbot'", ws.tenant_id) == 4
    await owner_conn.execute("UPDATE parley.rate_counters SET window_start = window_start - interval '70 seconds'")
    assert await _burst(ws, convs[0], 1, "198.51.100.99", "y") == ["ok"]
    # agents and the bot are never rate limited
    status, _ = await ws.call("POST", f"/api/conversations/{convs[1]}/reply", json={"body": "hi"})
    assert status == 201


async def test_retention_days_edge(make_workspace, owner_conn, settings):
    """retention_days (free: 30) through the jobs' retention sweep; override 0 keeps everything."""
    from pyapp.config import role_password, url_for_role
    from support.server import TEST_SECRET

    ws = await make_workspace()
    bot = await ws.chatbot()
    old, young, open_old = [await ws.start(bot["id"]) for _ in range(3)]
    for conv in (old, young):
        await ws.visitor_says(conv, "bye")
        await ws.call("POST", f"/api/conversations/{conv}/close")
    back = "UPDATE parley.conversations SET closed_at = now() - make_interval(days => $2), " \
           "last_activity_at = now() - make_interval(days => $2) WHERE id = $1"
    await owner_conn.execute(back, old, 31)
    await owner_conn.execute(back, young, 29)
    await owner_conn.execute("UPDATE parley.conversations SET last_activity_at = now() - interval '90 days' "
                             "WHERE id = $1", open_old)
    jobs = await asyncpg.connect(url_for_role(settings.admin_url, "parley_jobs", role_password(TEST_SECRET, "parley_jobs")))

    async def sweep():
        async with jobs.transaction():
            await jobs.execute("SELECT parley.begin_request($1, 'system', 'jobs', NULL, NULL, NULL, 'agent')", ws.tenant_id)
            return await jobs.fetchval("SELECT parley.apply_retention()")

    try:
        await override_limits(owner_conn, ws.tenant_id, retention_days=0)
        assert await sweep() == 0
        await override_limits(owner_conn, ws.tenant_id, retention_days=None)  # inherit free: 30 days
        assert await sweep() == 1
    finally:
        await jobs.close()
    left = {r["id"] for r in await owner_conn.fetch("SELECT id FROM parley.conversations WHERE tenant_id = $1", ws.tenant_id)}
    assert left == {young, open_old}
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.messages WHERE conversation_id = $1", old) == 0
