"""The jobs process as parley_jobs: idle close, retention, partitions, the schedule claim
(two runners never run one job twice), and the embedding queue drain."""
import asyncio

from jobs import runner, schedule
from pyapp.db import create_pool
from pyapp.knowledge import extract, ingest
from pyapp.providers.embeddings import OpenAICompatibleEmbedder
from pyapp.providers.http import RetryPolicy
from support.knowledge import make_tenant


async def _conversation(owner_conn, tenant, *, status="bot", idle="2 hours", closed_days=None):
    conv = await owner_conn.fetchval(
        "INSERT INTO parley.conversations (tenant_id, chatbot_id, visitor_id, status, last_activity_at, closed_at)"
        " VALUES ($1, $2, gen_random_uuid(), $3, now() - $4::text::interval,"
        "         CASE WHEN $5::int IS NOT NULL THEN now() - make_interval(days => $5::int) END) RETURNING id",
        tenant.id, tenant.chatbot_id, status, idle, closed_days)
    await owner_conn.execute(
        "INSERT INTO parley.messages (tenant_id, conversation_id, author, body, created_at)"
        " VALUES ($1, $2, 'visitor', 'hello', now() - $3::text::interval)", tenant.id, conv, idle)
    return conv


async def _make_due(owner_conn, *names):
    """Register the jobs as the jobs process does at start, then make these due now."""
    await schedule.register(owner_conn)
    await owner_conn.execute("UPDATE parley.job_schedules SET next_run_at = now() - interval '1 second'"
                             " WHERE name = ANY ($1)", list(names))


async def test_idle_close_and_retention(settings, owner_conn, tenant):
    idle = await _conversation(owner_conn, tenant, idle="2 hours")
    fresh = await _conversation(owner_conn, tenant, idle="1 minute")
    old_closed = await _conversation(owner_conn, tenant, status="closed", idle="60 days", closed_days=45)
    recent_closed = await _conversation(owner_conn, tenant, status="closed", idle="3 days", closed_days=2)
    await _make_due(owner_conn, "close_idle_conversations", "retention")
    pool = await tenant.pool("jobs")

    ran = await runner.run_due_jobs(pool, "test", only=["close_idle_conversations", "retention"])
    assert sorted(ran) == ["close_idle_conversations", "retention"]
    statuses = dict(await owner_conn.fetch("SELECT id, status FROM parley.conversations"))
    assert statuses[idle] == "closed" and statuses[fresh] == "bot" and statuses[recent_closed] == "closed"
    assert old_closed not in statuses  # free plan keeps 30 days: gone, with its messages
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.messages WHERE conversation_id = $1",
                                     old_closed) == 0
    row = await owner_conn.fetchrow("SELECT * FROM parley.job_schedules WHERE name = 'retention'")
    # Its message (the messages' batch, first) and then the conversation itself.
    assert row["last_status"] == "ok" and row["last_result"]["total"] == 2 and row["next_run_at"] > row["last_started_at"]
    # Not due any more: a second pass runs nothing.
    assert await runner.run_due_jobs(pool, "test", only=["close_idle_conversations", "retention"]) == []


async def test_partitions_rollup_and_usage_compaction(settings, owner_conn, tenant):
    ahead = await owner_conn.fetchval("SELECT to_char(now() + interval '3 months', 'YYYY_MM')")
    for table in ("parley.messages", "parley.outbox_attempts"):  # the outbox's are maintained with the others
        await owner_conn.execute(f"DROP TABLE IF EXISTS {table}_{ahead}")
    await _conversation(owner_conn, tenant, status="closed", idle="1 minute", closed_days=0)
    await _make_due(owner_conn, "maintain_partitions", "rollup_daily_stats", "compact_usage", "prune_rate_counters")
    pool = await tenant.pool("jobs")
    ran = await runner.run_due_jobs(pool, "test")
    assert {"maintain_partitions", "rollup_daily_stats", "compact_usage", "prune_rate_counters"} <= set(ran)
    result = await owner_conn.fetchval("SELECT last_result FROM parley.job_schedules WHERE name = 'maintain_partitions'")
    assert result["result"]["created"] >= 2
    assert await owner_conn.fetchval("SELECT to_regclass($1)::text", f"parley.outbox_attempts_{ahead}") \
        == f"parley.outbox_attempts_{ahead}"
    stats = await owner_conn.fetchrow("SELECT * FROM parley.daily_stats WHERE tenant_id = $1", tenant.id)
    assert (stats["conversations"], stats["closed"], stats["closed_without_human"]) == (1, 1, 1)


async def test_two_runners_never_run_a_job_twice(settings, owner_conn, tenant, monkeypatch):
    calls = []
    # The job's own statement holds it for a moment, so the second runner claims while it runs.
    slow = schedule.Job(every=schedule.JOBS["rollup_daily_stats"].every, per_tenant=False,
                        sql="SELECT pg_sleep(0.2)::text", args=lambda: calls.append(1) or (), name="rollup_daily_stats")
    monkeypatch.setitem(schedule.JOBS, "rollup_daily_stats", slow)
    await _make_due(owner_conn, "rollup_daily_stats")
    pool_a = await create_pool(settings.jobs_url, min_size=1, max_size=2)
    pool_b = await create_pool(settings.jobs_url, min_size=1, max_size=2)
    try:
        a, b = await asyncio.gather(*(runner.run_due_jobs(p, name, only=["rollup_daily_stats"])
                                      for p, name in ((pool_a, "a"), (pool_b, "b"))))
    finally:
        await pool_a.close()
        await pool_b.close()
    assert sorted(a + b) == ["rollup_daily_stats"] and len(calls) == 1
    assert await owner_conn.fetchval("SELECT runs FROM parley.job_schedules WHERE name = 'rollup_daily_stats'") == 1


async def test_external_jobs_are_left_to_pg_cron(settings, owner_conn, tenant):
    await _make_due(owner_conn, "retention")
    await owner_conn.execute("UPDATE parley.job_schedules SET external = true WHERE name = 'retention'")
    assert await runner.run_due_jobs(await tenant.pool("jobs"), "test", only=["retention"]) == []


async def test_embedding_queue_drained_by_the_jobs_process(settings, owner_conn, tenant, fake_openai,
                                                           monkeypatch):
    other = await make_tenant(settings, owner_conn)
    for t in (tenant, other):
        async with await t.tx() as conn:
            source = await conn.fetchrow("SELECT * FROM parley.create_knowledge_source($1, 'text', 'T')", t.chatbot_id)
            doc = extract.extract_markdown("# A\n\n" + "\n\n".join(f"Paragraph {i} " + "words " * 150
                                                                   for i in range(6)))
            await ingest.ingest_document(conn, source["id"], "text", doc)
    queued = await owner_conn.fetchval("SELECT count(*) FROM parley.embedding_jobs")
    assert queued >= 4
    embedder = OpenAICompatibleEmbedder(fake_openai.base_url, "test-key", "fake-embed")
    ingest.set_embedder(embedder)
    monkeypatch.setattr(runner, "run_due_jobs", _nothing_due)

    assert await runner.main(settings, once=True) == 0
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.embedding_jobs") == 0
    rows = await owner_conn.fetch("SELECT tenant_id, embedding_model, embedding IS NOT NULL AS done"
                                  " FROM parley.knowledge_chunks")
    assert len(rows) == queued and all(r["done"] and r["embedding_model"] == "fake-embed" for r in rows)
    assert {r["tenant_id"] for r in rows} == {tenant.id, other.id}
    await other.close()


async def _nothing_due(pool, worker=None, *, only=None, settings=None):
    return []


async def test_failed_embeddings_back_off_and_model_change_requeues(settings, owner_conn, tenant, fake_openai):
    async with await tenant.tx() as conn:
        source = await conn.fetchrow("SELECT * FROM parley.create_knowledge_source($1, 'text', 'T')", tenant.chatbot_id)
        await ingest.ingest_document(conn, source["id"], "text", extract.extract_text("Opening hours are 9 to 5."))
    pool = await tenant.pool("jobs")
    fake_openai.embedding_script.append(_embedding_failure())
    embedder = OpenAICompatibleEmbedder(fake_openai.base_url, "test-key", "model-a",
                                        retry=RetryPolicy(max_retries=0))
    assert await ingest.drain_embeddings(pool, actor_kind="system", embedder=embedder) == 0
    job = await owner_conn.fetchrow("SELECT * FROM parley.embedding_jobs")
    assert job["attempts"] == 1 and job["last_error"] and job["not_before"] > await owner_conn.fetchval("SELECT now()")

    await owner_conn.execute("UPDATE parley.embedding_jobs SET not_before = now()")
    assert await ingest.drain_embeddings(pool, actor_kind="system", embedder=embedder) == 1
    # A new model: the scheduled job queues every chunk made by another model again.
    async with await tenant.tx("system") as conn:
        assert await conn.fetchval("SELECT parley.enqueue_stale_embeddings('model-a')") == 0
        assert await conn.fetchval("SELECT parley.enqueue_stale_embeddings('model-b')") == 1
        assert await conn.fetchval("SELECT parley.enqueue_stale_embeddings('model-b')") == 0


def _embedding_failure():
    from support.fakes.llm_servers import Reply

    return Reply.server_error(500)


async def test_embedding_worker_role_cannot_see_other_tenants(settings, owner_conn, tenant):
    other = await make_tenant(settings, owner_conn)
    async with await other.tx() as conn:
        source = await conn.fetchrow("SELECT * FROM parley.create_knowledge_source($1, 'text', 'T')", other.chatbot_id)
        await ingest.ingest_document(conn, source["id"], "text", extract.extract_text("Secret of the other tenant."))
    async with await tenant.tx("system") as conn:
        assert await conn.fetch("SELECT * FROM parley.claim_embedding_jobs(10)") == []
        assert await conn.fetchval("SELECT count(*) FROM parley.knowledge_chunks") == 0
    await other.close()
