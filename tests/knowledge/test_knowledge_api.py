"""Knowledge sources through the REST API: text, URL, sitemap, crawl, upload; re-import in
place, checksum reuse, delete, progress, hostile URLs, tenant isolation, try-a-question."""
import asyncio
import contextlib
import uuid

import aiohttp
import pytest
from support.fakes.pdf import make_pdf

HOSTILE = [
    "http://127.1/", "http://0/", "http://2130706433/", "http://0177.0.0.1/", "http://0x7f000001/",
    "http://[::]/", "http://[::ffff:127.0.0.1]/", "http://localhost./", "http://localhost/admin",
    "http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/", "http://100.100.100.200/",
    "http://metadata.google.internal/computeMetadata/v1/", "http://user@127.0.0.1/", "http://127.0.0.1@10.0.0.1/",
    "http://10.0.0.1/", "http://192.168.1.1/", "http://[64:ff9b::7f00:1]/", "http://[::1]:8080/",
    "file:///etc/passwd", "gopher://127.0.0.1/", "ftp://example.org/",
]


@pytest.fixture
async def owner(server, signup, owner_conn):
    """A signed-up owner with one English chatbot."""
    who = await signup(server)
    chatbot_id = await owner_conn.fetchval(
        "INSERT INTO parley.chatbots (tenant_id, name, config) VALUES ($1, 'Helper', '{\"language\": \"en\"}')"
        " RETURNING id", uuid.UUID(who["tenant_id"]))
    return {**who, "chatbot_id": str(chatbot_id)}


@pytest.fixture
def allow_local(monkeypatch):
    monkeypatch.setenv("PARLEY_FETCH_ALLOW_HOSTS", "127.0.0.1")


async def _wait_ready(server, token, source_id, timeout=15.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        status, source = await server.call("GET", f"/api/knowledge/sources/{source_id}", token=token)
        assert status == 200, source
        if source["status"] in ("ready", "failed"):
            return source
        assert loop.time() < deadline, source
        task = server.app[_imports_key()].tasks.get(uuid.UUID(source_id))
        if task is not None:
            await asyncio.wait([task], timeout=deadline - loop.time())
        else:
            await asyncio.sleep(0.05)


def _imports_key():
    from pyapp.knowledge.routes import IMPORTS

    return IMPORTS


async def test_text_source_edit_reuses_unchanged_chunks_and_delete_removes_all(server, owner, owner_conn):
    base = f"/api/chatbots/{owner['chatbot_id']}/knowledge"
    text = "# Refunds\n\nRefunds are possible within 30 days.\n\n# Shipping\n\nShipping takes 5 days."
    status, src = await server.call("POST", f"{base}/sources", json={"kind": "text", "title": "Policies", "text": text},
                                    token=owner["access_token"])
    assert status == 201, src
    assert (src["status"], src["documents"], src["chunks"]) == ("ready", 1, 2)
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.embedding_jobs") == 2
    # Pretend the queue ran: every chunk has an embedding.
    await owner_conn.execute("UPDATE parley.knowledge_chunks SET embedding = array_fill(0.1, ARRAY[384])::vector,"
                             " embedding_model = 'm'")
    await owner_conn.execute("DELETE FROM parley.embedding_jobs")
    before = {r["text"]: r["id"] for r in await owner_conn.fetch("SELECT id, text FROM parley.knowledge_chunks")}

    edited = text.replace("5 days", "3 days")
    status, src = await server.call("PUT", f"/api/knowledge/sources/{src['id']}/text", json={"text": edited},
                                    token=owner["access_token"])
    assert status == 200, src
    after = await owner_conn.fetch("SELECT id, text, embedding IS NOT NULL AS embedded FROM parley.knowledge_chunks")
    kept = [r for r in after if r["text"] in before]
    assert len(kept) == 1 and kept[0]["id"] == before[kept[0]["text"]] and kept[0]["embedded"]
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.embedding_jobs") == 1  # only the changed chunk

    status, _ = await server.call("DELETE", f"/api/knowledge/sources/{src['id']}", token=owner["access_token"])
    assert status == 204
    for table in ("knowledge_sources", "knowledge_documents", "knowledge_chunks", "embedding_jobs"):
        assert await owner_conn.fetchval(f"SELECT count(*) FROM parley.{table}") == 0, table


async def test_hostile_urls_refused_at_the_api(server, owner, owner_conn, monkeypatch):
    monkeypatch.delenv("PARLEY_FETCH_ALLOW_HOSTS", raising=False)
    for url in HOSTILE:
        for kind in ("url", "sitemap", "crawl"):
            status, body = await server.call("POST", f"/api/chatbots/{owner['chatbot_id']}/knowledge/sources",
                                             json={"kind": kind, "url": url}, token=owner["access_token"])
            assert (status, body["error"]["code"]) == (422, "url_not_allowed"), (url, body)
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.knowledge_sources") == 0


async def test_local_site_refused_without_allow_list(server, owner, fake_website, monkeypatch):
    monkeypatch.delenv("PARLEY_FETCH_ALLOW_HOSTS", raising=False)
    status, body = await server.call("POST", f"/api/chatbots/{owner['chatbot_id']}/knowledge/sources",
                                     json={"kind": "url", "url": fake_website.url("/faq")}, token=owner["access_token"])
    assert (status, body["error"]["code"]) == (422, "url_not_allowed")


async def test_url_import_then_reimport_updates_in_place(server, owner, owner_conn, fake_website,
                                                         allow_local):
    token = owner["access_token"]
    status, src = await server.call("POST", f"/api/chatbots/{owner['chatbot_id']}/knowledge/sources",
                                    json={"kind": "url", "url": fake_website.url("/faq")}, token=token)
    assert status == 201, src
    src = await _wait_ready(server, token, src["id"])
    assert src["status"] == "ready", src
    assert src["documents"] == 1 and src["chunks"] >= 1
    text = " ".join(r["text"] for r in await owner_conn.fetch("SELECT text FROM parley.knowledge_chunks"))
    assert "NAV-NOISE" not in text and "FOOTER-NOISE" not in text
    ids = sorted(r["id"] for r in await owner_conn.fetch("SELECT id FROM parley.knowledge_chunks"))

    status, again = await server.call("POST", f"/api/knowledge/sources/{src['id']}/reimport", token=token)
    assert status == 202, again
    again = await _wait_ready(server, token, src["id"])
    assert again["status"] == "ready" and again["documents"] == 1
    assert again["progress"]["chunks_unchanged"] == len(ids) and again["progress"]["chunks_added"] == 0
    assert sorted(r["id"] for r in await owner_conn.fetch("SELECT id FROM parley.knowledge_chunks")) == ids


async def test_redirect_to_metadata_fails_the_import(server, owner, owner_conn, fake_website, allow_local):
    token = owner["access_token"]
    status, src = await server.call("POST", f"/api/chatbots/{owner['chatbot_id']}/knowledge/sources",
                                    json={"kind": "url", "url": fake_website.url("/redirect/metadata")}, token=token)
    assert status == 201, src
    src = await _wait_ready(server, token, src["id"])
    assert (src["status"], src["error"], src["documents"]) == ("failed", "address_not_allowed", 0)
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.knowledge_chunks") == 0


async def test_sitemap_and_bounded_crawl(server, owner, fake_website, allow_local):
    token = owner["access_token"]
    base = f"/api/chatbots/{owner['chatbot_id']}/knowledge/sources"
    status, sm = await server.call("POST", base, json={"kind": "sitemap", "url": fake_website.url("/sitemap_index.xml")},
                                   token=token)
    assert status == 201, sm
    sm = await _wait_ready(server, token, sm["id"])
    assert sm["status"] == "ready", sm
    assert sm["documents"] == len(fake_website.sitemap_paths()), sm
    assert "/private" not in fake_website.requested_paths()

    status, crawl = await server.call("POST", base, json={"kind": "crawl", "url": fake_website.url("/"),
                                                          "max_pages": 3, "max_depth": 1}, token=token)
    assert status == 201, crawl
    crawl = await _wait_ready(server, token, crawl["id"])
    assert crawl["status"] == "ready", crawl
    assert crawl["progress"]["pages_done"] + crawl["progress"]["pages_failed"] <= 3
    assert 1 <= crawl["documents"] <= 3


async def _upload(server, token, chatbot_id, filename, data, content_type):
    form = aiohttp.FormData()
    form.add_field("title", "Uploaded")
    form.add_field("file", data, filename=filename, content_type=content_type)
    return await server.call("POST", f"/api/chatbots/{chatbot_id}/knowledge/upload", data=form, token=token)


async def test_uploads(server, owner, owner_conn, monkeypatch):
    token, bot = owner["access_token"], owner["chatbot_id"]
    status, src = await _upload(server, token, bot, "notes.md", b"# Opening hours\n\nWe open at 9 am.", "text/markdown")
    assert status == 201, src
    assert (src["kind"], src["filename"], src["chunks"]) == ("file", "notes.md", 1)
    pdf = make_pdf([["Warranty", "Devices carry a two year warranty."]], title="Guide")
    status, src = await _upload(server, token, bot, "guide.pdf", pdf, "application/pdf")
    assert status == 201, src
    assert "two year warranty" in await owner_conn.fetchval(
        "SELECT string_agg(text, ' ') FROM parley.knowledge_chunks c JOIN parley.knowledge_documents d"
        " ON d.id = c.document_id WHERE d.source_id = $1", uuid.UUID(src["id"]))
    status, body = await _upload(server, token, bot, "tool.exe", b"MZ...", "application/octet-stream")
    assert (status, body["error"]["code"]) == (415, "unsupported_type")
    import pyapp.knowledge.routes as routes
    monkeypatch.setattr(routes, "UPLOAD_MAX_BYTES", 1000)
    status, body = await _upload(server, token, bot, "big.txt", b"x" * 5000, "text/plain")
    assert (status, body["error"]["code"]) == (413, "payload_too_large")


async def test_try_question_and_tenant_isolation(server, owner, signup):
    token, bot = owner["access_token"], owner["chatbot_id"]
    status, src = await server.call("POST", f"/api/chatbots/{bot}/knowledge/sources", json={
        "kind": "text", "title": "Returns", "text": "Unused products can be returned within 30 days of delivery."},
        token=token)
    assert status == 201
    status, out = await server.call("POST", f"/api/chatbots/{bot}/knowledge/search",
                                    json={"query": "can I return a product?"}, token=token)
    assert status == 200, out
    assert out["mode"] == "fts" and out["passages"][0]["title"] == "Returns"

    other = await signup(server)
    status, _ = await server.call("GET", f"/api/knowledge/sources/{src['id']}", token=other["access_token"])
    assert status == 404
    status, _ = await server.call("POST", f"/api/chatbots/{bot}/knowledge/search", json={"query": "return"},
                                  token=other["access_token"])
    assert status == 404
    status, _ = await server.call("DELETE", f"/api/knowledge/sources/{src['id']}", token=other["access_token"])
    assert status == 404
    status, listed = await server.call("GET", f"/api/chatbots/{bot}/knowledge/sources", token=other["access_token"])
    assert status == 404, listed


async def test_agents_cannot_change_knowledge(server, owner, signup):
    agent = await signup(server, join=owner, role="agent")
    status, body = await server.call("POST", f"/api/chatbots/{owner['chatbot_id']}/knowledge/sources",
                                     json={"kind": "text", "text": "x"}, token=agent["access_token"])
    assert status == 403, body


async def test_dev_worker_in_serve_embeds_new_chunks(settings, signup, owner_conn, monkeypatch, fake_openai):
    from pyapp.knowledge import ingest
    from pyapp.providers.embeddings import OpenAICompatibleEmbedder
    from support.server import start_server

    monkeypatch.setenv("PARLEY_EMBED_WORKER", "1")
    ingest.set_embedder(OpenAICompatibleEmbedder(fake_openai.base_url, "test-key", "fake-embed"))
    srv = await start_server(settings)
    try:
        who = await signup(srv)
        bot = await owner_conn.fetchval("INSERT INTO parley.chatbots (tenant_id, name) VALUES ($1, 'B') RETURNING id",
                                        uuid.UUID(who["tenant_id"]))
        status, src = await srv.call("POST", f"/api/chatbots/{bot}/knowledge/sources",
                                     json={"kind": "text", "text": "We open at nine."}, token=who["access_token"])
        assert status == 201
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while (await srv.call("GET", f"/api/knowledge/sources/{src['id']}", token=who["access_token"]))[1][
                "chunks_embedded"] < 1:
            assert loop.time() < deadline, "the dev worker never embedded the chunk"
            await asyncio.sleep(0.05)
        status, out = await srv.call("POST", f"/api/chatbots/{bot}/knowledge/search", json={"query": "open"},
                                     token=who["access_token"])
        assert out["mode"] == "hybrid" and out["passages"][0]["vector_distance"] is not None
    finally:
        await srv.close()


async def test_embedding_backlog_refuses_new_imports(server, owner, monkeypatch):
    import pyapp.knowledge.routes as routes

    monkeypatch.setattr(routes, "MAX_BACKLOG", 2)
    base = f"/api/chatbots/{owner['chatbot_id']}/knowledge/sources"
    status, _ = await server.call("POST", base, json={"kind": "text", "text": "# A\n\none\n\n# B\n\ntwo"},
                                  token=owner["access_token"])
    assert status == 201  # two chunks now wait for an embedding
    status, body = await server.call("POST", base, json={"kind": "text", "text": "three"}, token=owner["access_token"])
    assert (status, body["error"]["code"]) == (429, "embedding_backlog")


class _GatedEmbedder:
    """An embedder whose model "loads" until the test opens the gate."""

    model = "gated"

    def __init__(self):
        self.gate = asyncio.Event()
        self.loads = 0

    async def warm_up(self):
        self.loads += 1
        await self.gate.wait()

    async def embed(self, texts):
        return [[0.1] * 384 for _ in texts]

    async def embed_queries(self, texts):
        return await self.embed(texts)


async def test_model_loads_at_start_and_readyz_waits_for_it(settings, monkeypatch):
    from dataclasses import replace

    from pyapp.context import EMBEDDER_WARM
    from pyapp.knowledge import ingest
    from support.server import start_server

    embedder = _GatedEmbedder()
    monkeypatch.setattr(ingest, "_EMBEDDER", embedder)
    srv = await start_server(replace(settings, extra={**settings.extra, "embed_warm": True}))
    try:
        assert embedder.loads == 1  # started with the server, before any question
        status, body = await srv.call("GET", "/readyz")
        assert status == 503 and body["checks"]["embedder"] == {"ok": False}, body
        embedder.gate.set()
        await srv.app[EMBEDDER_WARM]
        status, body = await srv.call("GET", "/readyz")
        assert status == 200 and body["checks"]["embedder"] == {"ok": True}, body
    finally:
        await srv.close()


async def test_continue_imports_what_the_page_limit_left(server, owner, owner_conn, fake_website, allow_local):
    token = owner["access_token"]
    base = f"/api/chatbots/{owner['chatbot_id']}/knowledge/sources"
    status, crawl = await server.call("POST", base, json={"kind": "crawl", "url": fake_website.url("/"),
                                                          "max_pages": 2}, token=token)
    assert status == 201, crawl
    crawl = await _wait_ready(server, token, crawl["id"])
    progress = crawl["progress"]
    assert crawl["status"] == "ready" and progress["limited"] is True, crawl
    assert crawl["pages_left"] >= 1 and progress["pages_found"] > progress["pages_done"] == crawl["documents"] == 2
    # The crawl read robots.txt and queued the sitemap's pages: every section was in reach.
    assert "/robots.txt" in fake_website.requested_paths()

    status, more = await server.call("POST", f"/api/knowledge/sources/{crawl['id']}/continue", token=token)
    assert status == 202, more
    more = await _wait_ready(server, token, crawl["id"])
    assert more["status"] == "ready" and more["documents"] > 2, more
    done = await owner_conn.fetchval("SELECT count(*) FROM parley.knowledge_documents WHERE source_id = $1",
                                     uuid.UUID(crawl["id"]))
    assert done == more["documents"]
    # Nothing left: continuing again is refused, as is continuing a text source.
    if not more["pages_left"]:
        status, body = await server.call("POST", f"/api/knowledge/sources/{crawl['id']}/continue", token=token)
        assert (status, body["error"]["code"]) == (409, "nothing_to_continue")


async def test_plan_page_limit_is_enforced_in_sql(server, owner, owner_conn, fake_website, allow_local):
    token = owner["access_token"]
    await owner_conn.execute("INSERT INTO parley.tenant_limits (tenant_id, knowledge_pages) VALUES ($1, 2)",
                             uuid.UUID(owner["tenant_id"]))
    status, crawl = await server.call("POST", f"/api/chatbots/{owner['chatbot_id']}/knowledge/sources",
                                      json={"kind": "crawl", "url": fake_website.url("/"), "max_pages": 50},
                                      token=token)
    assert status == 201, crawl
    crawl = await _wait_ready(server, token, crawl["id"])
    assert crawl["documents"] == 2 and crawl["progress"]["page_limit"] == 2 and crawl["progress"]["limited"], crawl
    status, body = await server.call("POST", f"/api/knowledge/sources/{crawl['id']}/continue", token=token)
    assert (status, body["error"]["code"]) == (402, "plan_limit")
    # The rule itself lives in SQL: a third page is refused whoever writes it.
    async with owner_conn.transaction():
        await owner_conn.execute("SELECT set_config('app.tenant_id', $1, true)", owner["tenant_id"])
        with pytest.raises(Exception) as refused:
            await owner_conn.execute("SELECT parley.ingest_document($1, 'http://x/third', NULL, 'T',"
                                     " '[{\"text\": \"third page\"}]')", uuid.UUID(crawl["id"]))
    assert "plan_limit" in str(getattr(refused.value, "hint", "")) or "at most 2 pages" in str(refused.value)


@contextlib.asynccontextmanager
async def sitemap_import(tenant, root, pages):
    """`pages` under `root` served on loopback (tests.knowledge.pydocs.evaluation.DocSite) as a sitemap
    knowledge source of the tenant's chatbot; yields the site, the source and crawl(): one import by
    the product's Importer, then the source's status and progress."""
    from pyapp.knowledge.crawl import Importer
    from pyapp.net import SafeFetcher
    from tests.knowledge.pydocs.evaluation import DocSite

    site = DocSite(root, only=pages)  # static files: ETag and Last-Modified on every page
    base = await site.start()
    try:
        pool = await tenant.pool()
        async with await tenant.tx() as conn:
            source = dict(await conn.fetchrow("SELECT * FROM parley.create_knowledge_source($1, 'sitemap', 'Docs', $2)",
                                              tenant.chatbot_id, base + "/sitemap.xml"))

        async def crawl() -> dict:
            await Importer(pool, tenant.id, source, fetcher=SafeFetcher(allow_hosts=["127.0.0.1"])).run()
            async with await tenant.tx() as conn:
                return dict(await conn.fetchrow("SELECT status, progress FROM parley.knowledge_sources WHERE id = $1",
                                                source["id"]))

        yield site, source, crawl
    finally:
        await site.close()


async def test_recrawl_sends_validators_and_keeps_unchanged_pages(tenant):
    from tests.knowledge.pydocs.evaluation import DOC_ROOT

    pages = ["library/json.html", "library/glob.html", "tutorial/venv.html"]
    async with sitemap_import(tenant, DOC_ROOT, pages) as (site, source, run):
        first = await run()
        assert first["status"] == "ready" and first["progress"]["pages_done"] == 3, first
        async with await tenant.tx() as conn:
            assert await conn.fetchval("SELECT count(*) FROM parley.knowledge_documents WHERE source_id = $1"
                                       " AND etag IS NOT NULL AND last_modified IS NOT NULL", source["id"]) == 3
            chunks = await conn.fetchval("SELECT count(*) FROM parley.knowledge_chunks")
        site.headers.clear()
        again = await run()
        assert again["status"] == "ready", again
        assert again["progress"]["pages_unchanged"] == 3 and again["progress"]["pages_done"] == 0, again
        assert all(h.get("If-None-Match") for path, h in site.headers if path in pages)
        async with await tenant.tx() as conn:  # nothing was pruned or re-chunked
            assert await conn.fetchval("SELECT count(*) FROM parley.knowledge_chunks") == chunks


async def test_a_newer_extraction_fetches_every_page_whole_and_keeps_unchanged_passages(tenant, owner_conn):
    # Pages stored by an older extraction answered 304 to the re-import's validators and kept the
    # text it made (every DocBook page's navigation bar, after the extraction learnt to drop it).
    from pyapp.knowledge import extract
    from tests.knowledge.pydocs.evaluation import DOC_ROOT

    pages = ["library/json.html", "library/glob.html"]
    async with sitemap_import(tenant, DOC_ROOT, pages) as (site, source, crawl):

        async def run() -> dict:
            site.headers.clear()
            return (await crawl())["progress"]

        first = await run()
        assert first["pages_done"] == 2 and first["extraction"] == extract.EXTRACTION_VERSION, first
        async with await tenant.tx() as conn:
            chunks = await conn.fetchval("SELECT count(*) FROM parley.knowledge_chunks c JOIN parley.knowledge_documents d"
                                         " ON d.id = c.document_id WHERE d.source_id = $1", source["id"])
        # As if an older extraction had made them: its pages are asked for whole and extracted again.
        await owner_conn.execute("UPDATE parley.knowledge_sources SET progress = progress || '{\"extraction\": 1}'"
                                 " WHERE id = $1", source["id"])
        again = await run()
        assert again["pages_done"] == 2 and again["pages_unchanged"] == 0, again
        assert not any(h.get("If-None-Match") or h.get("If-Modified-Since") for path, h in site.headers if path in pages)
        assert again["chunks_unchanged"] == chunks and again["chunks_added"] == 0, again  # same text: vectors kept
        assert again["extraction"] == extract.EXTRACTION_VERSION, again
        third = await run()  # made by this extraction now: "if changed" again
        assert third["pages_unchanged"] == 2, third
        assert all(h.get("If-None-Match") for path, h in site.headers if path in pages)


async def test_a_page_that_became_a_list_of_links_leaves_the_knowledge(tenant, tmp_path):
    # A stored page that a later pass finds to be an index (mostly links) was followed and counted
    # as seen, so the prune kept the text it had before.
    def page(title: str, body: str) -> str:
        return f"<html><head><title>{title}</title></head><body><main><h1>{title}</h1>{body}</main></body></html>"

    (tmp_path / "guide.html").write_text(page("Guide", "<p>Vacuum reclaims the storage of dead rows.</p>" * 5))
    (tmp_path / "topics.html").write_text(page("Topics", "<p>Replication keeps a standby server in step.</p>" * 5))
    async with sitemap_import(tenant, tmp_path, ["guide.html", "topics.html"]) as (_site, source, crawl):

        async def run() -> tuple[dict, list[str]]:
            progress = (await crawl())["progress"]
            async with await tenant.tx() as conn:
                titles = [r["title"] for r in await conn.fetch(
                    "SELECT DISTINCT c.title FROM parley.knowledge_chunks c JOIN parley.knowledge_documents d"
                    " ON d.id = c.document_id WHERE d.source_id = $1 ORDER BY 1", source["id"])]
            return progress, titles

        first, titles = await run()
        assert first["pages_done"] == 2 and titles == ["Guide", "Topics"], (first, titles)
        links = "".join(f'<li><a href="guide.html#s{n}">Replication section number {n}</a></li>' for n in range(30))
        (tmp_path / "topics.html").write_text(page("Topics", f"<ul>{links}</ul>"))
        again, titles = await run()
        assert again["pages_skipped"] == 1 and again["documents_pruned"] == 1, again
        assert titles == ["Guide"], titles
