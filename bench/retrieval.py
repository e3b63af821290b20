"""Retrieval latency of parley.knowledge_search, the assistant's streaming overhead, the
embedder's rate and retrieval-only answers per second.

    .venv/bin/python bench/retrieval.py [--quick] [--tenants 100] [--chunks 1000] [--large 20000]

Loads N tenants × M chunks (random-ish text over a 3,000-word vocabulary, vectors drawn from
4,096 random ones) plus one tenant whose chatbot holds --large passages (a whole documentation
site), builds the HNSW index, into a fresh database `parley_bench` (on DATABASE_URL's server,
else an embedded cluster in .parley/bench-cluster), then as parley_app inside tenant
transactions (RLS on):
* p50/p95 of knowledge_search full-text only and hybrid (query vector given), k=5, over the
  1,000-chunk chatbots, and the same on the large chatbot (HNSW with iterative scan);
* the server's added latency from the LLM's first token to the visitor's first `stream`
  frame: a fake OpenAI-compatible server stamps the moment it writes its first token, a
  real visitor WebSocket stamps the moment the first stream frame arrives (same clock);
* the local embedder's passages per second on real documentation passages (batches of 32);
* retrieval-only answers per second through the bot path on the large chatbot (8 visitor
  sockets, no LLM: the extractive answer or "I don't know").
The last line is `fts_p95_ms=N hybrid_p95_ms=N first_chunk_overhead_ms=N large_hybrid_p95_ms=N
embed_per_s=N answers_per_s=N`. --quick uses 30 small tenants and fewer queries.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

os.environ.setdefault("PARLEY_EMBEDDINGS", "none")   # the overhead run measures the LLM path only
os.environ["PARLEY_FETCH_ALLOW_HOSTS"] = "127.0.0.1"  # the fake LLM listens there

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import psycopg  # noqa: E402
from aiohttp import web  # noqa: E402
from pyapp.config import Settings, with_database  # noqa: E402
from pyapp.db import Actor, create_pool, tenant_tx  # noqa: E402

DB = "parley_bench"
SECRET = "bench-secret-not-for-production-use"
ORIGIN = "https://bench.example"


def load() -> str:
    """The 1-minute load average (the machine is shared: every rate is read beside it)."""
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def admin_base_url() -> str:
    url = os.environ.get("DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
    if url:
        return url
    from pyapp.embedded import EmbeddedCluster

    cluster = EmbeddedCluster(ROOT / ".parley" / "bench-cluster")
    cluster.start()
    return cluster.admin_url("postgres")


def fresh_database(admin: str) -> Settings:
    from pyapp.migrate import migrate

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
    settings = Settings(admin_url=with_database(admin, DB), secret_key=SECRET, host="127.0.0.1", port=0,
                        embedded=False)
    migrate(settings)
    return settings


SEED_SQL = """
CREATE TEMP TABLE vocab AS
  SELECT i, (SELECT string_agg(chr(97 + ((i * 7 + k * 13 + i / (k + 1)) % 26)), '')
               FROM generate_series(0, 3 + i % 6) k) AS w
    FROM generate_series(1, 3000) i;
CREATE TEMP TABLE vecs AS
  SELECT i, (SELECT array_agg(random() - 0.5) FROM generate_series(1, 384) WHERE i > 0)::vector AS v
    FROM generate_series(0, 4095) i;
INSERT INTO parley.tenants (id, slug, name)
  SELECT gen_random_uuid(), 'bench-' || t, 'Bench ' || t FROM generate_series(1, $1::int) t;
INSERT INTO parley.chatbots (tenant_id, name, config, allowed_origins)
  SELECT id, 'Bot', '{"language": "en", "handoff": {"miss_threshold": 0}}', ARRAY['https://bench.example'] FROM parley.tenants;
INSERT INTO parley.knowledge_sources (tenant_id, chatbot_id, kind, title, status)
  SELECT tenant_id, id, 'text', 'Bench', 'ready' FROM parley.chatbots;
INSERT INTO parley.knowledge_documents (tenant_id, source_id, chatbot_id, doc_key, title, checksum)
  SELECT s.tenant_id, s.id, s.chatbot_id, 'doc-' || d, 'Document ' || d, md5(d::text)
    FROM parley.knowledge_sources s, generate_series(1, 10) d;
"""

CHUNK_SQL = """
INSERT INTO parley.knowledge_chunks (tenant_id, chatbot_id, document_id, ordinal, text, title, checksum,
                                     ts_config, tsv, embedding, embedding_model)
SELECT d.tenant_id, d.chatbot_id, d.id, n, t.body, d.title, md5(t.body), 'english',
       parley.chunk_tsv('english', d.title, '', t.body), e.v, 'random'
  FROM parley.knowledge_documents d
  CROSS JOIN generate_series(1, $1::int) n
  CROSS JOIN LATERAL (
    SELECT string_agg(v.w, ' ') AS body FROM generate_series(1, 60) g
      JOIN vocab v ON v.i = 1 + abs(hashint4(g + n * 101 + hashtext(d.id::text))) % 3000) t
  JOIN vecs e ON e.i = abs(hashint4(n * 7 + hashtext(d.id::text))) % 4096
"""


LARGE_SQL = """
WITH t AS (INSERT INTO parley.tenants (id, slug, name, plan) VALUES (gen_random_uuid(), 'bench-large', 'Bench large', 'pro')
           RETURNING id),
     b AS (INSERT INTO parley.chatbots (tenant_id, name, config, allowed_origins)
           SELECT id, 'Docs', '{"language": "en", "handoff": {"miss_threshold": 0}}', ARRAY['https://bench.example'] FROM t RETURNING tenant_id, id),
     s AS (INSERT INTO parley.knowledge_sources (tenant_id, chatbot_id, kind, title, status)
           SELECT tenant_id, id, 'crawl', 'Docs site', 'ready' FROM b RETURNING tenant_id, id, chatbot_id)
INSERT INTO parley.knowledge_documents (tenant_id, source_id, chatbot_id, doc_key, title, checksum)
SELECT s.tenant_id, s.id, s.chatbot_id, 'page-' || d, 'Page ' || d, md5(d::text) FROM s, generate_series(1, 500) d
"""


async def seed(settings: Settings, tenants: int, chunks: int, hnsw: bool, large: int = 0) -> float:
    started = time.perf_counter()
    conn = await asyncpg.connect(settings.admin_url)
    try:
        await conn.execute("DROP INDEX IF EXISTS parley.knowledge_chunks__embedding_idx")
        await conn.execute("SET maintenance_work_mem = '512MB'")
        for statement in SEED_SQL.strip().split(";\n"):
            if "$1" in statement:
                await conn.execute(statement, tenants)
            else:
                await conn.execute(statement)
        await conn.execute(CHUNK_SQL, max(1, chunks // 10))
        if large:
            # One chatbot the size of a whole documentation site: 500 pages of large/500 passages.
            await conn.execute(LARGE_SQL)
            await conn.execute(CHUNK_SQL.rstrip() + "\n WHERE d.doc_key LIKE 'page-%'", max(1, large // 500))
        if hnsw or large:
            await conn.execute("SET max_parallel_maintenance_workers = 2")
            await conn.execute("CREATE INDEX knowledge_chunks__embedding_idx ON parley.knowledge_chunks"
                               " USING hnsw (embedding vector_cosine_ops)")
        await conn.execute("VACUUM ANALYZE parley.knowledge_chunks")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def search_latencies(settings: Settings, queries: int) -> dict:
    pool = await create_pool(settings.app_url, min_size=1, max_size=2)
    admin = await asyncpg.connect(settings.admin_url)
    try:
        bots = await admin.fetch("SELECT b.tenant_id, b.id FROM parley.chatbots b JOIN parley.tenants t"
                                 " ON t.id = b.tenant_id WHERE t.slug <> 'bench-large'")
        words = [r["t"] for r in await admin.fetch(
            "SELECT split_part(text, ' ', 1 + (id % 40)::int) AS t FROM parley.knowledge_chunks"
            " ORDER BY random() LIMIT 500")]
        plan = None
        rng = random.Random(7)
        results: dict[str, list[float]] = {"fts": [], "hybrid": []}
        for i in range(queries * 2):
            mode = "fts" if i % 2 == 0 else "hybrid"
            bot = rng.choice(bots)
            query = " ".join(rng.choice(words) for _ in range(rng.randint(2, 5)))
            vector = [rng.uniform(-0.5, 0.5) for _ in range(384)] if mode == "hybrid" else None
            async with tenant_tx(pool, Actor(tenant_id=bot["tenant_id"], kind="service", actor_id="bench")) as conn:
                t0 = time.perf_counter()
                found = await conn.fetch("SELECT chunk_id FROM parley.knowledge_search($1, $2, 5, $3)",
                                         bot["id"], query, vector)
                results[mode].append((time.perf_counter() - t0) * 1000)
                if plan is None and found:
                    plan = await explain_inner(conn, bot["id"], query)
        return {**results, "plan": plan}
    finally:
        await admin.close()
        await pool.close()


async def explain_inner(conn, chatbot_id, query) -> str:
    """The plan of knowledge_fts's candidate step (it runs as parley_auth, filtering the tenant
    itself): the (chatbot_id, tsv) GIN index, not every row of the chatbot."""
    rows = await conn.fetch(
        """EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF)
           SELECT c.id FROM parley.knowledge_chunks c
            WHERE c.chatbot_id = $1 AND c.tsv @@ to_tsquery('simple', $2)
              AND c.tenant_id = (SELECT tenant_id FROM parley.chatbots WHERE id = $1)""",
        chatbot_id, f"'{query.split()[0]}'")
    return "\n".join(r[0] for r in rows)


async def large_latencies(settings: Settings, queries: int) -> dict:
    """knowledge_search on the 20,000-passage chatbot as parley_app: hybrid at k=5 (HNSW with
    iterative scan), full text alone, and the vector step's plan."""
    pool = await create_pool(settings.app_url, min_size=1, max_size=2)
    admin = await asyncpg.connect(settings.admin_url)
    try:
        bot = await admin.fetchrow("SELECT b.tenant_id, b.id FROM parley.chatbots b JOIN parley.tenants t"
                                   " ON t.id = b.tenant_id WHERE t.slug = 'bench-large'")
        chunks = await admin.fetchval("SELECT count(*) FROM parley.knowledge_chunks WHERE chatbot_id = $1", bot["id"])
        words = [r["t"] for r in await admin.fetch(
            "SELECT split_part(text, ' ', 1 + (id % 40)::int) AS t FROM parley.knowledge_chunks WHERE chatbot_id = $1"
            " ORDER BY random() LIMIT 500", bot["id"])]
        rng = random.Random(11)
        results: dict[str, list[float]] = {"fts": [], "hybrid": []}
        plan = None
        for i in range(queries * 2):
            mode = "fts" if i % 2 == 0 else "hybrid"
            query = " ".join(rng.choice(words) for _ in range(rng.randint(2, 6)))
            vector = [rng.uniform(-0.5, 0.5) for _ in range(384)] if mode == "hybrid" else None
            async with tenant_tx(pool, Actor(tenant_id=bot["tenant_id"], kind="service", actor_id="bench")) as conn:
                t0 = time.perf_counter()
                await conn.fetch("SELECT chunk_id FROM parley.knowledge_search($1, $2, 5, $3)", bot["id"], query, vector)
                results[mode].append((time.perf_counter() - t0) * 1000)
                if plan is None and vector is not None:
                    await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
                    plan = "\n".join(r[0] for r in await conn.fetch(
                        """EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF)
                           SELECT c.id FROM parley.knowledge_chunks c WHERE c.tenant_id = parley.current_tenant_id()
                              AND c.chatbot_id = $1 ORDER BY c.embedding <=> $2 LIMIT 20""", bot["id"], vector))
        return {**results, "plan": plan, "chunks": chunks}
    finally:
        await admin.close()
        await pool.close()


def process_cpu() -> float:
    """CPU seconds of this process, all its threads (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _proc_cpu(pid: int, children: bool = False) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = [int(x) for x in fields[11:15]]  # utime, stime, cutime, cstime
    return sum(ticks if children else ticks[:2]) / os.sysconf("SC_CLK_TCK")


async def postgres_cpu(admin_url: str) -> float | None:
    """CPU seconds PostgreSQL's processes have used (the postmaster, its reaped children and the
    live ones), when it runs on this machine; None otherwise."""
    conn = await asyncpg.connect(admin_url)
    try:
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        postmaster = int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None
    finally:
        await conn.close()
    try:
        total = _proc_cpu(postmaster, children=True)
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                        total += _proc_cpu(int(entry.name))
                except (OSError, ValueError):
                    continue
        return total
    except OSError:
        return None


def embed_rate(n: int = 256) -> tuple[float, int, float]:
    """Passages per second through the local embedder as the queue drains (batches of 32),
    on real documentation passages when python3.11-doc is installed, and the CPU milliseconds
    per passage (independent of other processes' load)."""
    from pyapp.knowledge import extract
    from pyapp.knowledge.ingest import EMBED_BATCH, chunk_document, passage_text
    from pyapp.providers.embeddings import LocalMiniLMEmbedder

    texts: list[str] = []
    docs = Path("/usr/share/doc/python3.11/html/library")
    for page in sorted(docs.glob("*.html"))[:60] if docs.is_dir() else []:
        doc = extract.extract(page.read_bytes(), content_type="text/html", url=f"http://docs/{page.name}")
        texts.extend(passage_text(doc.title, c["heading_path"], c["text"]) for c in chunk_document(doc))
        if len(texts) >= n:
            break
    while len(texts) < n:
        texts.append(" ".join(f"word{i} sample passage text about configuration" for i in range(20)))
    texts = texts[:n]
    embedder = LocalMiniLMEmbedder()
    embedder._encode(["warm up"])
    started, cpu = time.perf_counter(), process_cpu()
    for i in range(0, n, EMBED_BATCH):
        embedder._encode(texts[i:i + EMBED_BATCH])
    return n / (time.perf_counter() - started), n, (process_cpu() - cpu) * 1000 / n


async def visitor_socket(http: aiohttp.ClientSession, base: str, chatbot_key: str):
    """A widget session for a new visitor and its socket, said hello on (the widget's own path)."""
    async with http.post(base + "/api/widget/sessions", headers={"Origin": ORIGIN}, json={
            "chatbot_key": chatbot_key, "conversation_id": None, "page_url": ORIGIN + "/",
            "referrer": None, "locale": "en"}) as resp:
        session = await resp.json()
        assert resp.status == 201, session
    ws = await http.ws_connect(base.replace("http", "ws") + "/ws/visitor")
    await ws.send_json({"type": "hello", "token": session["token"], "last_seen_id": 0})
    return ws


async def ask_bot(ws, client_id: str, question: str) -> None:
    """Send one question and wait for the bot's (or a system) message back."""
    await ws.send_json({"type": "message", "client_id": client_id, "body": question})
    while True:
        frame = json.loads((await ws.receive(timeout=60)).data)
        if frame.get("type") == "error":
            raise RuntimeError(f"refused: {frame}")
        if frame.get("type") == "message" and frame["message"].get("author") in ("bot", "system"):
            return


async def answer_rate(settings: Settings, visitors: int, per_visitor: int) -> dict:
    """Retrieval-only answers per second through the bot path on the large chatbot: visitor
    sockets ask, the assistant searches (full text: no embedder here) and stores an extractive
    answer or "I don't know"; counted when the bot's message reaches the visitor."""
    from pyapp.app import create_app

    admin = await asyncpg.connect(settings.admin_url)
    bot = await admin.fetchrow("SELECT b.tenant_id, b.id, b.public_key FROM parley.chatbots b JOIN parley.tenants t"
                               " ON t.id = b.tenant_id WHERE t.slug = 'bench-large'")
    columns = [r["column_name"] for r in await admin.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'parley'"
        " AND table_name = 'tenant_limits' AND data_type = 'integer'")]
    await admin.execute(f"INSERT INTO parley.tenant_limits (tenant_id, {', '.join(columns)})"
                        f" VALUES ($1, {', '.join('0' for _ in columns)})", bot["tenant_id"])
    words = [r["t"] for r in await admin.fetch(
        "SELECT split_part(text, ' ', 1 + (id % 40)::int) AS t FROM parley.knowledge_chunks WHERE chatbot_id = $1"
        " ORDER BY random() LIMIT 200", bot["id"])]
    await admin.close()
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    rng = random.Random(5)

    async def visitor(http: aiohttp.ClientSession, n: int) -> int:
        ws = await visitor_socket(http, base, bot["public_key"])
        for i in range(n):
            await ask_bot(ws, f"q{i}", "how do I " + " ".join(rng.choice(words) for _ in range(3)))
        await ws.close()
        return n

    try:
        async with aiohttp.ClientSession() as http:
            started, cpu, pg_cpu = time.perf_counter(), process_cpu(), await postgres_cpu(settings.admin_url)
            done = await asyncio.gather(*(visitor(http, per_visitor) for _ in range(visitors)))
            took, answered = time.perf_counter() - started, sum(done)
            cpu = process_cpu() - cpu  # the server and the visitors' clients (one process)
            pg_after = await postgres_cpu(settings.admin_url)
            pg_cpu = pg_after - pg_cpu if pg_after is not None and pg_cpu is not None else None
            return {"per_s": answered / took, "app_cpu_ms": cpu * 1000 / answered,
                    "pg_cpu_ms": pg_cpu * 1000 / answered if pg_cpu is not None else None}
    finally:
        await runner.cleanup()


async def first_answer_after_ready(settings: Settings) -> dict:
    """`parley serve` started as its own process (local embedder, warm-up on): seconds until
    /readyz answers 200, then milliseconds from that moment until the bot's answer to one
    question reaches a visitor (session, socket, question: the widget's own path), and a
    second question for comparison. The chatbot holds the tests' 30-document help centre,
    embedded by the local model beforehand (the restart case: vectors already stored)."""
    import socket
    import subprocess

    from pyapp.providers.embeddings import LocalMiniLMEmbedder
    from tests.knowledge.pydocs import evaluation as ev

    admin = await asyncpg.connect(settings.admin_url)
    tenant_id = await admin.fetchval("INSERT INTO parley.tenants (slug, name, plan) VALUES ('bench-first', 'First', 'pro')"
                                     " RETURNING id")
    bot = await admin.fetchrow("INSERT INTO parley.chatbots (tenant_id, name, config, allowed_origins) VALUES"
                               " ($1, 'Help', '{\"language\": \"en\"}', $2) RETURNING id, public_key", tenant_id, [ORIGIN])
    await admin.close()
    pool = await create_pool(settings.app_url, min_size=1, max_size=2)
    try:
        await ev.ingest_texts(pool, tenant_id, bot["id"], ev.help_documents(), LocalMiniLMEmbedder())
    finally:
        await pool.close()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "DATABASE_URL": settings.admin_url, "PARLEY_SECRET_KEY": SECRET, "PARLEY_EMBEDDINGS": "local",
           "PARLEY_EMBED_WORKER": "0"}
    base = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-c", "import sys; from pyapp.cli import main; sys.exit(main())",
                               "serve", "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession() as http:
            while True:  # the readiness probe, as an orchestrator polls it
                if server.poll() is not None:
                    raise RuntimeError(f"parley serve exited with {server.returncode}")
                try:
                    async with http.get(base + "/readyz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.02)
            ready = time.perf_counter()
            gaps = []
            ws = await visitor_socket(http, base, bot["public_key"])
            for i, question in enumerate(("What are your opening hours?", "How do I enable 2FA?")):
                asked = time.perf_counter()
                await ask_bot(ws, f"f{i}", question)
                gaps.append((time.perf_counter() - (ready if i == 0 else asked)) * 1000)
            await ws.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {"ready_s": ready - started, "first_answer_ms": gaps[0], "second_answer_ms": gaps[1]}


class TimedLLM:
    """A minimal OpenAI-compatible streaming endpoint that stamps its first token's send time."""

    def __init__(self, chunks: int = 20, gap: float = 0.005):
        self.chunks = chunks
        self.gap = gap
        self.first_sent: list[float] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1"

    async def chat(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(self.chunks):
            payload = {"id": "x", "object": "chat.completion.chunk", "model": "bench",
                       "choices": [{"index": 0, "delta": {"content": f" word{i}"}, "finish_reason": None}]}
            await resp.write(f"data: {json.dumps(payload)}\n\n".encode())
            if i == 0:
                self.first_sent.append(time.perf_counter())
            await asyncio.sleep(self.gap)
        await resp.write(b'data: {"id":"x","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n')
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def close(self) -> None:
        if self.runner:
            await self.runner.cleanup()


async def first_chunk_overhead(settings: Settings, turns: int) -> list[float]:
    from pyapp.app import create_app

    llm = TimedLLM()
    await llm.start()
    admin = await asyncpg.connect(settings.admin_url)
    bot = await admin.fetchrow("SELECT tenant_id, id, public_key FROM parley.chatbots LIMIT 1")
    await admin.execute("INSERT INTO parley.llm_settings (tenant_id, provider, base_url, model) VALUES ($1, 'openai',"
                        " $2, 'bench')", bot["tenant_id"], llm.url)
    # One visitor sends every turn: lift the per-minute and daily limits of the bench tenant.
    await admin.execute("INSERT INTO parley.tenant_limits (tenant_id, msgs_per_min_chatbot, msgs_per_min_ip,"
                        " ai_msgs_per_day, msgs_per_min_conversation, included_ai_messages)"
                        " VALUES ($1, 0, 0, 0, 0, 0)", bot["tenant_id"])
    await admin.close()
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    overheads: list[float] = []
    try:
        async with aiohttp.ClientSession() as http:
            ws = await visitor_socket(http, base, bot["public_key"])
            for i in range(turns):
                await ws.send_json({"type": "message", "client_id": f"m{i}", "body": f"question number {i}?"})
                got_stream = False
                while True:
                    frame = json.loads((await ws.receive(timeout=30)).data)
                    if frame.get("type") == "error":
                        raise RuntimeError(f"refused: {frame}")
                    if frame.get("type") == "stream" and not got_stream:
                        overheads.append((time.perf_counter() - llm.first_sent[-1]) * 1000)
                        got_stream = True
                    if frame.get("type") == "message" and frame["message"].get("author") == "bot":
                        break
            await ws.close()
    finally:
        await runner.cleanup()
        await llm.close()
    return overheads


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="under a minute: no HNSW build, fewer queries")
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--chunks", type=int, default=1000, help="chunks per tenant (one chatbot each)")
    parser.add_argument("--large", type=int, default=20000, help="passages of the one large chatbot")
    parser.add_argument("--queries", type=int, default=None, help="queries per mode")
    parser.add_argument("--turns", type=int, default=None, help="assistant turns for the overhead figure")
    args = parser.parse_args()
    queries = args.queries or (150 if args.quick else 500)
    if args.quick and args.tenants == 100:
        args.tenants = 30  # the HNSW build over every tenant's vectors is the slow part
    turns = args.turns or (15 if args.quick else 50)

    t0 = time.perf_counter()
    settings = fresh_database(admin_base_url())
    print(f"migrated in {time.perf_counter() - t0:.1f} s", flush=True)
    took = await seed(settings, args.tenants, args.chunks, hnsw=not args.quick, large=args.large)
    print(f"loaded {args.tenants} tenants x {args.chunks} chunks + one chatbot of {args.large} in {took:.1f} s"
          " (HNSW index built)", flush=True)

    lat = await search_latencies(settings, queries)
    for mode in ("fts", "hybrid"):
        values = lat[mode]
        print(f"knowledge_search {mode:6s} as parley_app: n={len(values)} p50={statistics.median(values):.2f} ms "
              f"p95={pct(values, 95):.2f} ms max={max(values):.2f} ms")
    print("plan of the full-text candidates (knowledge_fts runs as parley_auth):\n  "
          + (lat["plan"] or "n/a").replace("\n", "\n  "))
    large = await large_latencies(settings, queries)
    for mode in ("fts", "hybrid"):
        values = large[mode]
        print(f"large chatbot ({large['chunks']} passages) {mode:6s} k=5 as parley_app: n={len(values)} "
              f"p50={statistics.median(values):.2f} ms p95={pct(values, 95):.2f} ms max={max(values):.2f} ms")
    print("plan of the vector step on the large chatbot:\n  " + (large["plan"] or "n/a").replace("\n", "\n  "))

    overheads = await first_chunk_overhead(settings, turns)
    print(f"first-token → visitor first chunk: n={len(overheads)} p50={statistics.median(overheads):.2f} ms "
          f"p95={pct(overheads, 95):.2f} ms")
    per_s, n, cpu_ms = embed_rate(128 if args.quick else 512)
    cores = os.cpu_count() or 1
    print(f"local embedder: {n} documentation passages at {per_s:.1f}/s (batches of 32); {cpu_ms:.1f} CPU ms per"
          f" passage, i.e. {1000 * cores / cpu_ms:.0f}/s on {cores} idle cores; load {load()}")
    rate = await answer_rate(settings, visitors=8, per_visitor=10 if args.quick else 40)
    answers = rate["per_s"]
    cpu_ms = rate["app_cpu_ms"] + (rate["pg_cpu_ms"] or 0)
    print(f"retrieval-only answers through the bot path (large chatbot, 8 visitors): {answers:.1f}/s; CPU ms per"
          f" answer: server and clients {rate['app_cpu_ms']:.1f}, PostgreSQL {rate['pg_cpu_ms'] or float('nan'):.1f},"
          f" i.e. {1000 * cores / cpu_ms:.0f}/s on {cores} idle cores; load {load()}")
    first = await first_answer_after_ready(settings)
    print(f"parley serve (a process): /readyz after {first['ready_s']:.1f} s; first answer {first['first_answer_ms']:.0f} ms"
          f" after ready (session, socket, question), the next {first['second_answer_ms']:.0f} ms; load {load()}")
    print(f"total {time.perf_counter() - t0:.1f} s")
    print(f"fts_p95_ms={pct(lat['fts'], 95):.1f} hybrid_p95_ms={pct(lat['hybrid'], 95):.1f} "
          f"first_chunk_overhead_ms={statistics.median(overheads):.1f} "
          f"large_hybrid_p95_ms={pct(large['hybrid'], 95):.1f} embed_per_s={per_s:.1f} answers_per_s={answers:.1f} "
          f"first_answer_after_ready_ms={first['first_answer_ms']:.0f}")


if __name__ == "__main__":
    asyncio.run(main())
