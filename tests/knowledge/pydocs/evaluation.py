"""Answer-quality evaluation on real documentation sites, each a Debian package's HTML served on
127.0.0.1 and imported with the product's own crawl (pyapp.knowledge.crawl.Importer, SSRF guard
on): the Python 3.11 docs (python3.11-doc, Sphinx: ``pydocs``), the PostgreSQL 15 docs
(postgresql-doc-15, DocBook: ``pgdocs``) and the GNU Octave 7 manual (octave-doc, texinfo's
makeinfo: ``octave``).

Shared by bench/answer_quality.py (whole sites) and tests/knowledge/test_answer_quality.py
(small slices in CI). Each site's questions.tsv (tests/knowledge/<name>/) holds the questions with
their acceptable pages; every other one belongs to the held-out half, never used to tune anything.
"""
from __future__ import annotations

import json
import statistics
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web
from pyapp.db import Actor, tenant_tx

HERE = Path(__file__).parent


@dataclass(frozen=True)
class Site:
    """A documentation site of the evaluation: its HTML tree, the Debian package that installs it,
    and its questions (tests/knowledge/<name>/questions.tsv)."""

    name: str
    title: str
    root: Path
    package: str
    port: int  # bench/answer_quality.py serves it there (in every URL it stores; one per site, so two run at once)

    @property
    def questions(self) -> Path:
        return HERE.parent / self.name / "questions.tsv"


SITES = {
    "pydocs": Site("pydocs", "Python docs", Path("/usr/share/doc/python3.11/html"), "python3.11-doc", 18817),
    "pgdocs": Site("pgdocs", "PostgreSQL docs", Path("/usr/share/doc/postgresql-doc-15/html"), "postgresql-doc-15",
                   18816),
    "octave": Site("octave", "GNU Octave manual", Path("/usr/share/doc/octave/octave.html"), "octave-doc", 18818),
}
DOC_ROOT = SITES["pydocs"].root
QUESTIONS = SITES["pydocs"].questions


@dataclass
class Question:
    n: int
    text: str
    pages: list[str]  # acceptable pages (paths under the doc root); empty: the site does not cover it
    half: str  # "tune" or "held"

    @property
    def answerable(self) -> bool:
        return bool(self.pages)


def load_questions(site: Site = SITES["pydocs"]) -> list[Question]:
    out: list[Question] = []
    for line in site.questions.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        text, _, pages = line.partition("\t")
        n = len(out)
        out.append(Question(n, text.strip(), pages.split(), "tune" if n % 2 == 0 else "held"))
    return out


class DocSite:
    """The doc tree served as a static site on 127.0.0.1 (ETag/Last-Modified from aiohttp's
    FileResponse). ``only``: serve just these paths (404 for the rest), with a sitemap of them."""

    def __init__(self, root: Path = DOC_ROOT, only: list[str] | None = None, robots: str | None = None):
        self.root = root
        self.only = set(only) if only is not None else None
        self.robots = robots
        self.runner: web.AppRunner | None = None
        self.base = ""
        self.requests: list[str] = []
        self.headers: list[tuple[str, dict]] = []  # (path, request headers) of every request

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/{path:.*}", self.serve)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        return self.base

    async def serve(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"] or "index.html"
        self.requests.append(path)
        self.headers.append((path, dict(request.headers)))
        if path == "robots.txt":
            if self.robots is None:
                raise web.HTTPNotFound()
            return web.Response(text=self.robots)
        if path == "sitemap.xml" and self.only is not None:
            urls = "".join(f"<url><loc>{self.base}/{p}</loc></url>" for p in sorted(self.only))
            return web.Response(text='<?xml version="1.0" encoding="UTF-8"?>'
                                '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
                                f"{urls}</urlset>", content_type="application/xml")
        if path.endswith("/"):
            path += "index.html"
        if self.only is not None and path not in self.only:
            raise web.HTTPNotFound()
        file = (self.root / path).resolve()
        if not file.is_relative_to(self.root.resolve()) or not file.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(file)

    async def close(self) -> None:
        if self.runner:
            await self.runner.cleanup()


def page_of(url: str | None, base: str) -> str:
    path = urlsplit(url or "").path.lstrip("/")
    return path or "index.html"


@dataclass
class Outcome:
    question: Question
    pages: list[str]  # pages of the top passages, best first (duplicates kept)
    declined: bool
    ms: float
    features: dict = field(default_factory=dict)  # what the decline rule saw (calibration)

    def rank(self) -> int | None:
        for i, page in enumerate(self.pages):
            if page in self.question.pages:
                return i + 1
        return None


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)

    def subset(self, half: str | None) -> list[Outcome]:
        return [o for o in self.outcomes if half is None or o.question.half == half]

    def figures(self, half: str | None = None) -> dict:
        items = self.subset(half)
        answerable = [o for o in items if o.question.answerable]
        unanswerable = [o for o in items if not o.question.answerable]

        def hit(k: int) -> float:
            return sum(1 for o in answerable if (o.rank() or 99) <= k) / max(1, len(answerable))

        times = sorted(o.ms for o in items)
        return {
            "hit1": hit(1), "hit5": hit(5), "hit10": hit(10),
            "declined": sum(o.declined for o in unanswerable) / max(1, len(unanswerable)),
            "wrong_declines": sum(o.declined for o in answerable) / max(1, len(answerable)),
            "answerable": len(answerable), "unanswerable": len(unanswerable),
            "p50_ms": statistics.median(times) if times else 0.0,
            "p95_ms": times[min(len(times) - 1, round(0.95 * len(times)) - 1)] if times else 0.0,
        }


def line(figures: dict) -> str:
    return (f"hit1={figures['hit1']:.3f} hit5={figures['hit5']:.3f} hit10={figures['hit10']:.3f} "
            f"declined={figures['declined']:.3f} wrong_declines={figures['wrong_declines']:.3f}")


async def ask(pool, tenant_id: uuid.UUID, chatbot_id: uuid.UUID, question: Question, base: str, embedder, *,
              k: int = 10, page=None) -> Outcome:
    """One question through the product's retrieval and decline rule, as the app role under RLS.
    ``page`` names a passage's page (default: its URL's path under ``base``)."""
    from pyapp.knowledge.search import answerable, query_vector, search_passages

    vector = await query_vector(embedder, question.text)
    started = time.perf_counter()
    async with tenant_tx(pool, Actor(tenant_id=tenant_id, kind="service", actor_id="eval")) as conn:
        found, _mode = await search_passages(conn, chatbot_id, question.text, k, vector,
                                             embedder.model if embedder is not None and vector is not None else None)
    ms = (time.perf_counter() - started) * 1000
    signals = found[0].get("signals") if found else None
    features = json.loads(signals) if isinstance(signals, str) else dict(signals or {})
    pages = [page(p) if page else page_of(p["url"], base) for p in found]
    return Outcome(question, pages, not answerable(found), ms, features)


async def evaluate(pool, tenant_id, chatbot_id, questions: list[Question], base: str, embedder, *,
                   page=None) -> Report:
    report = Report()
    for question in questions:
        report.outcomes.append(await ask(pool, tenant_id, chatbot_id, question, base, embedder, page=page))
    return report


def slice_questions(site: Site, pages: list[str]) -> list[Question]:
    """The site's questions for a slice of its pages: each answerable one with an acceptable page in
    the slice (only those pages acceptable), and every unanswerable one."""
    chosen = []
    for q in load_questions(site):
        if not q.answerable:
            chosen.append(q)
        elif set(q.pages) & set(pages):
            chosen.append(Question(q.n, q.text, [p for p in q.pages if p in pages], q.half))
    return chosen


async def evaluate_slice(tenant, embedder, site: Site, pages: list[str]) -> tuple[dict, dict]:
    """CI's share of the bench: the slice served on 127.0.0.1 with a sitemap, imported with the
    product's importer (SSRF guard on, the test host allowed) into the test tenant's chatbot,
    embedded, then slice_questions asked FTS-only and hybrid. Returns both figures (all questions)."""
    from pyapp.knowledge import ingest
    from pyapp.knowledge.crawl import Importer
    from pyapp.net import SafeFetcher

    assert site.root.is_dir(), f"{site.package} is missing (scripts/setup.sh --test installs it)"
    doc_site = DocSite(site.root, only=pages)
    base = await doc_site.start()
    try:
        pool = await tenant.pool()
        async with await tenant.tx() as conn:
            source = dict(await conn.fetchrow(
                "SELECT * FROM parley.create_knowledge_source($1, 'sitemap', $2, $3)",
                tenant.chatbot_id, site.title, base + "/sitemap.xml"))
        await Importer(pool, tenant.id, source, fetcher=SafeFetcher(allow_hosts=["127.0.0.1"])).run()
        async with await tenant.tx() as conn:
            row = await conn.fetchrow("SELECT status, progress FROM parley.knowledge_sources WHERE id = $1",
                                      source["id"])
        assert row["status"] == "ready" and row["progress"]["pages_done"] == len(pages), row
        await ingest.drain_embeddings(pool, actor_kind="service", embedder=embedder, until_empty=True,
                                      max_batches=1000)
        questions = slice_questions(site, pages)
        fts = (await evaluate(pool, tenant.id, tenant.chatbot_id, questions, base, None)).figures()
        hybrid = (await evaluate(pool, tenant.id, tenant.chatbot_id, questions, base, embedder)).figures()
    finally:
        await doc_site.close()
    print(f"\n{site.name} slice ({fts['answerable']}+{fts['unanswerable']} questions): fts {line(fts)}\n"
          f"  hybrid {line(hybrid)}")
    return fts, hybrid


# Small knowledge bases ---------------------------------------------------------------------
# The decline rule must hold at both ends: a help centre of 30 short documents (tests/knowledge/
# corpus: 42 answerable questions, each naming its document, and 22 the corpus does not cover)
# and the demo tenant's five passages (pyapp/widget/demo.py). Halves alternate within the
# answerable and within the unanswerable questions, as above.

CORPUS = HERE.parent / "corpus"

# The demo's knowledge text: questions a visitor of the demo asks, and ones it cannot answer.
DEMO_QUESTIONS = [
    ("What are your support hours?", True), ("When are you open?", True), ("Can I get a refund?", True),
    ("How much is shipping to Germany?", True), ("Can I put the mugs in the dishwasher?", True),
    ("how long does delivery to the US take", True), ("Where is your studio?", True),
    ("do you ship outside europe", True),
    ("What is your phone number?", False), ("Are you hiring?", False), ("tell me a joke", False),
    ("What's the weather in Lisbon?", False), ("Do you have a loyalty program?", False),
    ("Can I pay with bitcoin?", False), ("who is your CEO", False), ("hi", False),
]


def _halved(items: list[tuple[str, list[str]]]) -> list[Question]:
    out: list[Question] = []
    seen = {True: 0, False: 0}
    for text, pages in items:
        kind = bool(pages)
        out.append(Question(len(out), text, pages, "tune" if seen[kind] % 2 == 0 else "held"))
        seen[kind] += 1
    return out


def help_documents() -> list[tuple[str, str]]:
    """The 30 help-centre documents: (name, markdown)."""
    return sorted((p.stem, p.read_text()) for p in (CORPUS / "docs").glob("*.md"))


def help_questions() -> list[Question]:
    """The help centre's questions: pages are the answering document's name (none: not covered)."""
    answerable = [(q["q"], [q["doc"]]) for q in json.loads((CORPUS / "questions.json").read_text())]
    others = [(q["q"], []) for q in json.loads((CORPUS / "unanswerable.json").read_text())]
    return _halved(answerable + others)


def demo_questions() -> list[Question]:
    """The demo tenant's questions (pages: "demo" when its text answers them)."""
    return _halved([(text, ["demo"] if covered else []) for text, covered in DEMO_QUESTIONS])


async def ingest_texts(pool, tenant_id: uuid.UUID, chatbot_id: uuid.UUID, documents: list[tuple[str, str]],
                       embedder) -> dict[str, str]:
    """Each (name, markdown) as its own file source of the chatbot (re-ingesting keeps unchanged
    passages), then the embedding queue drained; returns document id -> name."""
    from pyapp.knowledge import extract, ingest

    names: dict[str, str] = {}
    async with tenant_tx(pool, Actor(tenant_id=tenant_id, kind="service", actor_id="eval")) as conn:
        for name, text in documents:
            source_id = await conn.fetchval(
                "SELECT id FROM parley.knowledge_sources WHERE chatbot_id = $1 AND title = $2", chatbot_id, name)
            if source_id is None:
                source_id = await conn.fetchval(
                    "SELECT s.id FROM parley.create_knowledge_source($1, 'file', $2, NULL, $3) s",
                    chatbot_id, name, f"{name}.md")
            doc = extract.extract(text.encode(), filename=f"{name}.md")
            result = await ingest.ingest_document(conn, source_id, f"{name}.md", doc)
            names[str(result["document_id"])] = name
    if embedder is not None:
        await ingest.drain_embeddings(pool, actor_kind="service", embedder=embedder, until_empty=True,
                                      max_batches=100)
    return names


def page_by_document(names: dict[str, str]):
    """A ``page`` function for ask/evaluate: the passage's document name."""
    return lambda passage: names.get(str(passage["document_id"]), "?")
