"""/metrics (pyapp/ops/metrics.py): not served without a token or a bind of its own, the token
checked, and the figures the issue lists move with real traffic: sockets, messages, limits, outbox
depth and age and jobs lag read from SQL, pool and query latency, outbox sends and retry_after,
and the jobs process's own listener. No series names a tenant."""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pyapp import metrics
from support.database import postgres_down
from support.knowledge import ROOT
from support.outbox import add_destination, make_drainer, post, sink, start_conversation  # noqa: F401 (fixture)
from support.realtime import agent, create_chatbot, visitor, widget_session
from support.server import TEST_SECRET, free_port, start_server
from support.waits import until

TOKEN = "metrics-token-for-tests-0123456789"


def parse(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of a Prometheus text exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def scrape(url: str, token: str | None = TOKEN) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        return resp.status, await resp.text()


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
async def metered(settings):
    settings.extra["metrics_token"] = TOKEN
    srv = await start_server(settings)
    yield srv
    await srv.close()


async def test_metrics_are_not_public_by_default(server):
    status, body = await server.call("GET", "/metrics")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = await server.call("GET", "/metrics", token=TOKEN)
    assert status == 404


async def test_the_token_is_required_and_checked(metered):
    url = metered.base_url + "/metrics"
    for token in (None, "wrong", TOKEN[:-1], TOKEN + "x"):
        status, text = await scrape(url, token)
        assert status == 401, (token, text)
        assert "parley_" not in text
    status, text = await scrape(url)
    assert status == 200 and "parley_http_requests_total" in text


async def test_traffic_moves_the_figures(metered, signup, owner_conn):
    url = metered.base_url + "/metrics"
    _, text = await scrape(url)
    before = parse(text)
    owner = await signup(metered)
    bot = await create_chatbot(owner_conn, owner["tenant_id"])
    sess = await widget_session(metered, bot["key"])
    vis = await visitor(metered, sess)
    ag = await agent(metered, owner["access_token"])
    try:
        _, text = await scrape(url)
        during = parse(text)
        assert value(during, "parley_sockets_open", kind="visitor") == value(before, "parley_sockets_open",
                                                                              kind="visitor") + 1
        assert value(during, "parley_sockets_open", kind="agent") == value(before, "parley_sockets_open",
                                                                            kind="agent") + 1
        await vis.send({"type": "message", "client_id": "m-1", "body": "Hello?"})
        await vis.expect_message("Hello?", author="visitor")
        await vis.expect_message(author="bot", timeout=30)  # the assistant's turn (no model: extractive)
        status, _ = await metered.call("POST", f"/api/conversations/{sess['conversation_id']}/reply",
                                       token=owner["access_token"], json={"body": "Hi!", "client_id": "a-1"})
        assert status == 201
    finally:
        await vis.close()
        await ag.close()

    # A rate limit (SQL's, per address) refuses a widget session: counted by its code.
    await owner_conn.execute("INSERT INTO parley.tenant_limits (tenant_id, msgs_per_min_ip) VALUES ($1, 1)"
                             " ON CONFLICT (tenant_id) DO UPDATE SET msgs_per_min_ip = 1",
                             uuid.UUID(owner["tenant_id"]))
    for _ in range(3):
        status, refused = await metered.call("POST", "/api/widget/sessions",
                                             json={"chatbot_key": bot["key"], "start": True},
                                             headers={"Origin": "https://shop.example"})
    assert status == 429, refused

    async def closed():  # the socket handlers return after the clients close
        return value(parse((await scrape(url))[1]), "parley_sockets_open", kind="visitor") == value(
            before, "parley_sockets_open", kind="visitor")
    await until(closed, what="the visitor socket to be counted as closed")
    _, text = await scrape(url)
    after = parse(text)
    assert value(after, "parley_messages_total", author="visitor") >= value(
        before, "parley_messages_total", author="visitor") + 1
    assert value(after, "parley_messages_total", author="agent") == value(
        before, "parley_messages_total", author="agent") + 1
    assert value(after, "parley_rate_limited_total", code=refused["error"]["code"]) >= 1
    turns = sum(v for (name, _labels), v in after.items() if name == "parley_bot_turns_total")
    assert turns >= 1 + sum(v for (name, _labels), v in before.items() if name == "parley_bot_turns_total")
    for phase in ("retrieval", "answer"):
        assert value(after, "parley_bot_turn_seconds_count", phase=phase) > value(
            before, "parley_bot_turn_seconds_count", phase=phase), phase
    assert value(after, "parley_http_requests_total", method="POST", status="2xx") > value(
        before, "parley_http_requests_total", method="POST", status="2xx")
    assert value(after, "parley_db_pool_wait_seconds_count") > value(before, "parley_db_pool_wait_seconds_count")
    assert value(after, "parley_db_query_seconds_count", kind="transaction") > 0
    assert value(after, "parley_db_pool_connections", state="max") > 0
    assert value(after, "parley_database_up") == 1
    # From SQL's statistics, which backends report within a second or so of going idle.
    async def counted():
        return value(parse((await scrape(url))[1]), "parley_messages_inserted") >= 2
    await until(counted, timeout=70, what="parley_messages_inserted to count both messages")
    # Bounded cardinality: no series carries a tenant, conversation or chatbot id.
    for secret in (owner["tenant_id"], sess["conversation_id"], str(bot["chatbot_id"]), bot["key"]):
        assert secret not in text


async def test_outbox_depth_age_and_jobs_lag_come_from_sql(metered, tenant, owner_conn, sink):  # noqa: F811  pytest fixture imported above, injected by name
    from jobs import schedule

    url = metered.base_url + "/metrics"
    await add_destination(owner_conn, tenant, sink.url)
    conv = await start_conversation(tenant)
    await post(tenant, conv, "one", "two", "three")
    await owner_conn.execute("UPDATE parley.outbox SET created_at = now() - interval '90 seconds'"
                             " WHERE tenant_id = $1", tenant.id)
    await schedule.register(owner_conn)
    await owner_conn.execute("UPDATE parley.job_schedules SET next_run_at = now() + interval '1 hour'")
    await owner_conn.execute("UPDATE parley.job_schedules SET next_run_at = now() - interval '120 seconds'"
                             " WHERE name = 'prune_rate_counters'")
    samples = parse((await scrape(url))[1])
    assert value(samples, "parley_outbox_pending") == 3
    assert 90 <= value(samples, "parley_outbox_oldest_pending_seconds") < 600
    assert 120 <= value(samples, "parley_jobs_lag_seconds") < 600

    # The drain (the jobs process's work) counts its sends: a 429 with Retry-After, then deliveries.
    sink.script = [(429, {"Retry-After": "7"}, 0)]
    kind = ("kind", "webhook")
    retried = metrics.REGISTRY.get_sample_value("parley_channel_sends_total", dict([kind, ("outcome", "retry")])) or 0
    waits = metrics.REGISTRY.get_sample_value("parley_channel_retry_after_seconds_count", dict([kind])) or 0
    drainer = make_drainer(await tenant.pool("jobs"))
    try:
        await drainer.drain()
        assert metrics.REGISTRY.get_sample_value(
            "parley_channel_sends_total", dict([kind, ("outcome", "retry")])) == retried + 1
        assert metrics.REGISTRY.get_sample_value("parley_channel_retry_after_seconds_count", dict([kind])) == waits + 1
        assert metrics.REGISTRY.get_sample_value("parley_channel_send_seconds_count", dict([kind])) >= 1
        # The Retry-After is not waited out here (test_outbox_basics honours it): due now.
        await owner_conn.execute("UPDATE parley.outbox_destinations SET next_send_at = now() WHERE tenant_id = $1",
                                 tenant.id)
        await owner_conn.execute("UPDATE parley.outbox SET next_attempt_at = now() WHERE tenant_id = $1"
                                 " AND status = 'pending'", tenant.id)

        async def all_sent():
            await drainer.drain()
            return not await owner_conn.fetchval("SELECT count(*) FROM parley.outbox WHERE tenant_id = $1"
                                                 " AND status = 'pending'", tenant.id)
        await until(all_sent, timeout=30, what="the three deliveries")
    finally:
        await drainer.close()
    samples = parse((await scrape(url))[1])
    assert value(samples, "parley_outbox_pending") == 0 and value(samples, "parley_outbox_oldest_pending_seconds") == 0
    assert value(samples, "parley_channel_sends_total", kind="webhook", outcome="delivered") >= 3


async def test_a_listener_of_its_own(settings):
    port = free_port()
    settings.extra["metrics_bind"] = f"127.0.0.1:{port}"
    srv = await start_server(settings)
    try:
        status, text = await scrape(f"http://127.0.0.1:{port}/metrics", token=None)
        assert status == 200 and value(parse(text), "parley_database_up") == 1
        # Only /metrics there; and the public listener still does not serve it.
        assert (await scrape(f"http://127.0.0.1:{port}/api/openapi.json", token=None))[0] == 404
        assert (await srv.call("GET", "/metrics"))[0] == 404
    finally:
        await srv.close()
    with pytest.raises(aiohttp.ClientConnectionError):  # stopped with the server
        await scrape(f"http://127.0.0.1:{port}/metrics", token=None)


async def test_scrape_during_an_outage_says_the_database_is_down(metered, pg_server, owner_conn):
    await owner_conn.close()
    async with postgres_down(pg_server):
        status, text = await scrape(metered.base_url + "/metrics")
        assert status == 200 and value(parse(text), "parley_database_up") == 0
        status, body = await metered.call("POST", "/api/widget/sessions", json={"chatbot_key": "pk_" + "x" * 30},
                                          headers={"Origin": "https://shop.example"})
        assert status == 503, body
        samples = parse((await scrape(metered.base_url + "/metrics"))[1])
        assert value(samples, "parley_database_unavailable_total") >= 1
        assert value(samples, "parley_http_requests_total", method="POST", status="5xx") >= 1


async def test_the_jobs_process_serves_its_own(settings):
    port = free_port()
    env = {**os.environ, "DATABASE_URL": settings.admin_url, "PARLEY_SECRET_KEY": TEST_SECRET,
           "PARLEY_JOBS_METRICS_BIND": f"127.0.0.1:{port}", "PYTHONPATH": str(ROOT),
           "PARLEY_JOBS_HEARTBEAT": os.devnull}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "pyapp.cli", "jobs", cwd=ROOT, env=env,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        async def ran_a_job():
            try:
                status, text = await scrape(f"http://127.0.0.1:{port}/metrics", token=None)
            except aiohttp.ClientConnectionError:
                return None
            samples = parse(text)
            runs = sum(v for (name, _labels), v in samples.items() if name == "parley_job_runs_total")
            return samples if status == 200 and runs > 0 else None

        samples = await until(ran_a_job, timeout=60, what="the jobs process's /metrics to show a job run")
        assert value(samples, "parley_database_up") == 1
        assert ("parley_jobs_lag_seconds", ()) in samples
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
