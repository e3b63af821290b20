"""Answer quality on a real documentation site, crawled whole: the Python 3.11 docs (Sphinx), the
PostgreSQL 15 docs (DocBook) or the GNU Octave 7 manual (texinfo).

    .venv/bin/python bench/answer_quality.py [--corpus pydocs|pgdocs|octave] [--fresh] [--max-pages N]
                                             [--fts-only] [--misses] [--typos]

Needs the site's Debian package (python3.11-doc, postgresql-doc-15, octave-doc). Serves its HTML on
127.0.0.1:--port, imports it with the product's crawl (pyapp.knowledge.crawl.Importer, SSRF
guard on, the test host allowed) into the database `parley_quality`, one tenant per corpus
(kept between runs: a re-import keeps unchanged passages and their vectors, so only what a
change touched is re-embedded; --fresh starts over), embeds the queue with the local model,
then asks every question of tests/knowledge/<corpus>/questions.tsv through
parley.knowledge_search and the decline rule as parley_app under RLS.

Prints the figures of the tuning half, the held-out half and both, FTS-only and hybrid; the
last line is the held-out hybrid one: `hit1= hit5= hit10= declined= wrong_declines=`.
--typos asks every question with one slip in its longest word (misspell): the same figures for
questions typed in a hurry.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["PARLEY_FETCH_ALLOW_HOSTS"] = "127.0.0.1"  # the doc site listens there

import asyncpg  # noqa: E402
import psycopg  # noqa: E402
from pyapp.config import Settings, with_database  # noqa: E402
from pyapp.db import Actor, create_pool, tenant_tx  # noqa: E402
from tests.knowledge.pydocs import evaluation as ev  # noqa: E402

DB = "parley_quality"
SECRET = "bench-secret-not-for-production-use"
SLUG = "quality-pydocs"  # the tenant of the pydocs corpus; another site's is quality-<name>


def admin_base_url() -> str:
    url = os.environ.get("DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
    if url:
        return url
    from pyapp.embedded import EmbeddedCluster

    cluster = EmbeddedCluster(ROOT / ".parley" / "bench-cluster")
    cluster.start()
    return cluster.admin_url("postgres")


def database(admin: str, fresh: bool, db: str = DB) -> Settings:
    from pyapp.migrate import migrate

    if fresh:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    settings = Settings(admin_url=with_database(admin, db), secret_key=SECRET, host="127.0.0.1", port=0,
                        embedded=False)
    migrate(settings)
    return settings


async def tenant_and_bot(settings: Settings, slug: str = SLUG, config: str = '{"language": "en"}') -> tuple:
    conn = await asyncpg.connect(settings.admin_url)
    try:
        row = await conn.fetchrow("SELECT t.id AS tenant_id, b.id AS chatbot_id FROM parley.tenants t"
                                  " JOIN parley.chatbots b ON b.tenant_id = t.id WHERE t.slug = $1", slug)
        if row is None:
            plan = await conn.fetchval("SELECT id FROM parley.plans ORDER BY max_chatbots = 0 DESC,"
                                       " max_chatbots DESC LIMIT 1")
            tenant_id = await conn.fetchval("INSERT INTO parley.tenants (slug, name, plan) VALUES ($1, 'Quality', $2)"
                                            " RETURNING id", slug, plan)
            chatbot_id = await conn.fetchval("INSERT INTO parley.chatbots (tenant_id, name, config) VALUES"
                                             " ($1, 'Docs bot', $2::jsonb) RETURNING id", tenant_id, config)
            return tenant_id, chatbot_id
        return row["tenant_id"], row["chatbot_id"]
    finally:
        await conn.close()


async def import_site(pool, tenant_id, chatbot_id, url: str, max_pages: int | None, title: str) -> dict:
    from pyapp.knowledge.crawl import Importer
    from pyapp.net import SafeFetcher

    actor = Actor(tenant_id=tenant_id, kind="service", actor_id="bench")
    async with tenant_tx(pool, actor) as conn:
        # A source kept from a run on another port holds the same pages under other URLs: dropped, not
        # left beside the new one (each site has had its own port since the third site came).
        stale = await conn.fetch("DELETE FROM parley.knowledge_sources WHERE chatbot_id = $1 AND kind = 'crawl'"
                                 " AND url <> $2 RETURNING url", chatbot_id, url)
        for row in stale:
            print(f"dropped the source kept for {row['url']} (another port): its pages are imported again", flush=True)
        source = await conn.fetchrow("SELECT * FROM parley.knowledge_sources WHERE chatbot_id = $1 AND url = $2",
                                     chatbot_id, url)
        if source is None:
            options = {"max_pages": max_pages} if max_pages else {}
            source = await conn.fetchrow("SELECT * FROM parley.create_knowledge_source($1, 'crawl', $4,"
                                         " $2, NULL, $3)", chatbot_id, url, options, title)
        source = dict(source)
    if max_pages:
        source["options"] = {**(source.get("options") or {}), "max_pages": max_pages}
    importer = Importer(pool, tenant_id, source, fetcher=SafeFetcher(allow_hosts=["127.0.0.1"]))
    started = time.perf_counter()
    await importer.run()
    took = time.perf_counter() - started
    async with tenant_tx(pool, actor) as conn:
        row = await conn.fetchrow("SELECT status, progress, error FROM parley.knowledge_sources WHERE id = $1",
                                  source["id"])
        chunks = await conn.fetchval("SELECT count(*) FROM parley.knowledge_chunks WHERE chatbot_id = $1", chatbot_id)
        docs = await conn.fetchval("SELECT count(*) FROM parley.knowledge_documents WHERE chatbot_id = $1",
                                   chatbot_id)
    return {"seconds": took, "status": row["status"], "progress": row["progress"], "error": row["error"],
            "chunks": chunks, "documents": docs}


async def embed_all(pool, embedder) -> tuple[int, float]:
    from pyapp.knowledge.ingest import drain_embeddings

    started, total = time.perf_counter(), 0
    while True:
        n = await drain_embeddings(pool, actor_kind="service", embedder=embedder, until_empty=True, max_batches=50)
        total += n
        if not n:
            break
        print(f"  embedded {total} passages ({total / (time.perf_counter() - started):.1f}/s)", flush=True)
    return total, time.perf_counter() - started


KEYBOARD = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def misspell(text: str, n: int) -> str:
    """The question typed in a hurry: its longest word of five letters or more (the first of equals) gets
    one slip in its middle, the kind chosen by the question's number: a letter left out, a letter
    doubled, two letters swapped, or a letter replaced by its neighbour on the keyboard."""
    words = list(re.finditer(r"[A-Za-z]{5,}", text))
    if not words:
        return text
    m = max(words, key=lambda w: len(w.group()))
    word, i = m.group(), len(m.group()) // 2
    kind = n % 4
    if kind == 0:
        slipped = word[:i] + word[i + 1:]
    elif kind == 1:
        slipped = word[:i] + word[i] + word[i:]
    elif kind == 2 and word[i - 1].lower() != word[i].lower():
        slipped = word[:i - 1] + word[i] + word[i - 1] + word[i + 1:]
    else:
        row = next(r for r in KEYBOARD if word[i].lower() in r)
        j = row.index(word[i].lower())
        slipped = word[:i] + row[j + 1 if j + 1 < len(row) else j - 1] + word[i + 1:]
    return text[:m.start()] + slipped + text[m.end():]


def show(label: str, report: ev.Report, misses: bool) -> None:
    for half in ("tune", "held", None):
        f = report.figures(half)
        print(f"{label:6s} {half or 'all':4s} n={f['answerable']}+{f['unanswerable']} {ev.line(f)} "
              f"p50={f['p50_ms']:.1f}ms p95={f['p95_ms']:.1f}ms")
    if misses:
        for o in report.subset("tune"):
            if o.question.answerable and (o.rank() or 99) > 5:
                print(f"   miss: {o.question.text[:70]!r} want {o.question.pages[:2]} got {o.pages[:3]}")
            elif o.declined != (not o.question.answerable):
                print(f"   {'wrong decline' if o.declined else 'answered'}: {o.question.text[:70]!r} {o.pages[:2]}")


def dump(path: str, fts: ev.Report, hybrid: ev.Report | None) -> None:
    """Each question's outcome and the decline rule's inputs as JSON lines (calibration)."""
    with open(path, "w") as out:
        for mode, report in (("fts", fts), ("hybrid", hybrid)):
            for o in (report.outcomes if report else []):
                out.write(json.dumps({"mode": mode, "n": o.question.n, "half": o.question.half,
                                      "answerable": o.question.answerable, "rank": o.rank(),
                                      "declined": o.declined, "features": o.features}) + "\n")


async def small_corpus(settings: Settings, args) -> None:
    """The help centre (30 documents, as the tests' chatbot: English) or the demo's text (as
    seeded: no language), each in its own tenant of the bench database."""
    from pyapp.providers.embeddings import LocalMiniLMEmbedder
    from pyapp.widget.demo import DEMO_KNOWLEDGE

    if args.corpus == "help":
        tenant_id, chatbot_id = await tenant_and_bot(settings, "quality-help")
        documents, questions = ev.help_documents(), ev.help_questions()
    else:
        tenant_id, chatbot_id = await tenant_and_bot(settings, "quality-demo", "{}")
        documents, questions = [("demo", DEMO_KNOWLEDGE)], ev.demo_questions()
    embedder = None if args.fts_only else LocalMiniLMEmbedder()
    pool = await create_pool(settings.app_url, min_size=1, max_size=4)
    try:
        names = await ev.ingest_texts(pool, tenant_id, chatbot_id, documents, embedder)
        page = ev.page_by_document(names)
        fts = await ev.evaluate(pool, tenant_id, chatbot_id, questions, "", None, page=page)
        show("fts", fts, args.misses and args.fts_only)
        hybrid = None
        if embedder is not None:
            hybrid = await ev.evaluate(pool, tenant_id, chatbot_id, questions, "", embedder, page=page)
            show("hybrid", hybrid, args.misses)
        if args.dump:
            dump(args.dump, fts, hybrid)
        print(ev.line((hybrid or fts).figures("held")))
    finally:
        await pool.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fresh", action="store_true", help="drop the database first (re-embeds everything)")
    parser.add_argument("--max-pages", type=int, default=None, help="the crawl's page limit (default: the plan's)")
    parser.add_argument("--port", type=int, default=None,
                        help="the doc site's port (default the site's own: it is in every URL the site's passages keep)")
    parser.add_argument("--fts-only", action="store_true", help="no embeddings at all")
    parser.add_argument("--no-import", action="store_true", help="ask only (the corpus is already loaded)")
    parser.add_argument("--reextract", action="store_true",
                        help="forget the pages' validators first, so the import fetches and extracts every page again"
                             " (after an extraction change; unchanged passages keep their vectors)")
    parser.add_argument("--misses", action="store_true", help="list the tuning half's misses")
    parser.add_argument("--typos", action="store_true",
                        help="ask every question with one slip in its longest word (misspell)")
    parser.add_argument("--db", default=DB, help="the database (kept between runs)")
    parser.add_argument("--dump", default=None, help="write each question's outcome as JSON lines here")
    parser.add_argument("--corpus", default="pydocs", choices=(*ev.SITES, "help", "demo"),
                        help="pydocs: the whole Python docs site; pgdocs: the whole PostgreSQL docs site; octave: the"
                             " whole GNU Octave manual; help: the"
                             " 30-document help centre of the tests; demo: the demo tenant's text (as seeded: no"
                             " language set)")
    parser.add_argument("--fusion", default=None, metavar="K,W_FTS,W_VEC",
                        help="try other fusion constants (replaces parley.knowledge_fusion in the bench database)")
    args = parser.parse_args()
    settings = database(admin_base_url(), args.fresh, args.db)
    if args.corpus not in ev.SITES:
        await small_corpus(settings, args)
        return
    doc = ev.SITES[args.corpus]
    if not doc.root.is_dir():
        sys.exit(f"{doc.root} is missing: apt-get install {doc.package}")
    tenant_id, chatbot_id = await tenant_and_bot(settings, f"quality-{doc.name}")
    if args.reextract:
        conn = await asyncpg.connect(settings.admin_url)
        await conn.execute("UPDATE parley.knowledge_documents SET etag = NULL, last_modified = NULL"
                           " WHERE tenant_id = $1", tenant_id)
        await conn.close()
    if args.fusion:
        k, w_fts, w_vec = (float(x) for x in args.fusion.split(","))
        conn = await asyncpg.connect(settings.admin_url)
        await conn.execute(f"CREATE OR REPLACE FUNCTION parley.knowledge_fusion(OUT k int, OUT w_fts real, OUT w_vec real)"
                           f" LANGUAGE sql IMMUTABLE AS $$ SELECT {int(k)}, {w_fts}::real, {w_vec}::real $$")
        await conn.close()
    pool = await create_pool(settings.app_url, min_size=1, max_size=4)
    site = ev.DocSite(doc.root)
    site_port = args.port or doc.port
    try:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/{path:.*}", site.serve)
        site.runner = web.AppRunner(app, access_log=None)
        await site.runner.setup()
        await web.TCPSite(site.runner, "127.0.0.1", site_port).start()
        site.base = f"http://127.0.0.1:{site_port}"
        if not args.no_import:
            result = await import_site(pool, tenant_id, chatbot_id, site.base + "/index.html", args.max_pages,
                                       doc.title)
            p = result["progress"]
            print(f"import: {result['status']} in {result['seconds']:.1f} s, {result['documents']} documents, "
                  f"{result['chunks']} passages; pages done {p.get('pages_done')} found {p.get('pages_found')} "
                  f"failed {p.get('pages_failed')} skipped {p.get('pages_skipped')}; added {p.get('chunks_added')} unchanged "
                  f"{p.get('chunks_unchanged')}", flush=True)
        embedder = None
        if not args.fts_only:
            from pyapp.providers.embeddings import LocalMiniLMEmbedder

            embedder = LocalMiniLMEmbedder()
            await embedder.warm_up()
            n, took = await embed_all(pool, embedder)
            if n:
                print(f"embedded {n} passages in {took:.1f} s: {n / took:.1f}/s", flush=True)
        questions = ev.load_questions(doc)
        if args.typos:
            questions = [ev.Question(q.n, misspell(q.text, q.n), q.pages, q.half) for q in questions]
        fts = await ev.evaluate(pool, tenant_id, chatbot_id, questions, site.base, None)
        show("fts", fts, args.misses and args.fts_only)
        if embedder is not None:
            hybrid = await ev.evaluate(pool, tenant_id, chatbot_id, questions, site.base, embedder)
            show("hybrid", hybrid, args.misses)
            final = hybrid
        else:
            final = fts
        if args.dump:
            dump(args.dump, fts, final if embedder is not None else None)
        print(ev.line(final.figures("held")))
    finally:
        await site.close()
        await pool.close()


if __name__ == "__main__":
    asyncio.run(main())
