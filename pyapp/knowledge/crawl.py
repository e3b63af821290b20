"""Imports that fetch: one URL, a sitemap, or a whole site from a start URL.

Every fetch goes through the SSRF-guarded SafeFetcher (each redirect hop vetted, bodies
capped). An import runs as a background task of the server that accepted it and writes its
progress into the source row after each page (what the console polls).

A site crawl reads robots.txt first (its rules are obeyed, its sitemaps used), queues the
sitemap's pages before following links, and takes pages from the site's sections in turn
(first path segment), so a page limit cuts every section short rather than leaving whole
sections out. The page limit is the plan's (`parley.effective_limits.knowledge_pages`, via
`parley.knowledge_page_limit()`; `ingest_document` refuses documents beyond it); a crawl
that stops there records the URLs it had not reached (`frontier`), reports
`limited: true`, and `continue` imports from there. Re-crawls send the stored ETag /
Last-Modified back: an unchanged page costs a 304 and keeps its passages; a changed one
keeps the passages whose checksum did not change. Link-dense pages (indexes, tables of
contents) are followed but not stored, and blocks repeated on many pages of the site
(navigation the HTML does not mark as such) are dropped.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import uuid
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit
from urllib.robotparser import RobotFileParser

import asyncpg

from pyapp.db import Actor, tenant_tx
from pyapp.knowledge import extract as ex
from pyapp.knowledge.ingest import MAX_BACKLOG, backlog, ingest_document
from pyapp.net import FetchError, SafeFetcher

log = logging.getLogger("parley.knowledge")

HARD_MAX_PAGES = 50_000  # what the API accepts at all; the plan's limit applies below it
DEFAULT_MAX_DEPTH = 8
HARD_MAX_DEPTH = 20
PAGE_TYPES = ex.SUPPORTED_TYPES
SITEMAP_TYPES = (
    "application/xml",
    "text/xml",
    "application/gzip",
    "application/x-gzip",
    "text/plain",
    "application/octet-stream",
)
BACKLOG_WAIT_S = 120.0
INDEX_LINK_DENSITY = 0.5  # pages whose text is mostly links are followed, not stored
REPEATED_BLOCK_PAGES = 3  # a short block already seen on this many pages is site chrome
MAX_FRONTIER = 50_000


@dataclass
class Progress:
    pages_found: int = 0
    pages_done: int = 0
    pages_failed: int = 0
    pages_unchanged: int = 0
    pages_skipped: int = 0
    chunks_added: int = 0
    chunks_unchanged: int = 0
    chunks_removed: int = 0
    documents_pruned: int = 0
    page_limit: int = 0
    limited: bool = False
    extraction: int = 0  # the extraction every stored page was made by (ex.EXTRACTION_VERSION once a pass is whole)
    errors: list = field(default_factory=list)

    def as_json(self) -> dict:
        return {
            "pages_found": self.pages_found,
            "pages_done": self.pages_done,
            "pages_failed": self.pages_failed,
            "pages_unchanged": self.pages_unchanged,
            "pages_skipped": self.pages_skipped,
            "chunks_added": self.chunks_added,
            "chunks_unchanged": self.chunks_unchanged,
            "chunks_removed": self.chunks_removed,
            "documents_pruned": self.documents_pruned,
            "page_limit": self.page_limit,
            "limited": self.limited,
            "extraction": self.extraction,
            "errors": self.errors[-10:],
        }

    def count(self, result: dict) -> None:
        self.pages_done += 1
        self.chunks_added += result["added"]
        self.chunks_unchanged += result["unchanged"]
        self.chunks_removed += result["removed"]

    def fail(self, url: str, code: str) -> None:
        self.pages_failed += 1
        self.errors.append({"url": url[:300], "code": code})

    @property
    def visited(self) -> int:
        return self.pages_done + self.pages_failed + self.pages_skipped


def section_of(url: str) -> str:
    """The site section a page belongs to: its first path segment ("" for top-level pages)."""
    parts = [p for p in urlsplit(url).path.split("/") if p]
    return parts[0] if len(parts) > 1 else ""


class Frontier:
    """Pages waiting to be fetched, taken from the site's sections in turn (FIFO within one)."""

    def __init__(self) -> None:
        self.sections: OrderedDict[str, deque] = OrderedDict()
        self.queued: set[str] = set()
        self.size = 0

    def add(self, url: str, depth: int) -> None:
        if url in self.queued or len(self.queued) >= MAX_FRONTIER * 2:
            return
        self.queued.add(url)
        self.sections.setdefault(section_of(url), deque()).append((url, depth))
        self.size += 1

    def pop(self) -> tuple[str, int]:
        name, pages = next(iter(self.sections.items()))
        url, depth = pages.popleft()
        self.sections.move_to_end(name)
        if not pages:
            del self.sections[name]
        self.size -= 1
        return url, depth

    def remaining(self) -> list[str]:
        return [url for pages in self.sections.values() for url, _ in pages][:MAX_FRONTIER]

    def __bool__(self) -> bool:
        return self.size > 0


_FENCE = re.compile(r"^(```|~~~)")


class RepeatedBlocks:
    """Drops short blocks (paragraphs, list runs) that earlier pages of the same import already
    had several times: prev/next/home link bars and footers that are not marked up as such."""

    def __init__(self, pages: int = REPEATED_BLOCK_PAGES):
        self.pages = pages
        self.seen: Counter = Counter()

    @staticmethod
    def _key(block: str) -> str | None:
        text = block.strip()
        if not text or len(text) > 400 or text.startswith("#") or _FENCE.match(text):
            return None
        return hashlib.sha1(re.sub(r"\s+", " ", text.lower()).encode()).hexdigest()

    def filter(self, text: str) -> str:
        blocks = text.split("\n\n")
        keys = [self._key(b) for b in blocks]
        kept = [b for b, k in zip(blocks, keys, strict=True) if k is None or self.seen[k] < self.pages]
        self.seen.update({k for k in keys if k})
        return "\n\n".join(kept)


class Importer:
    """Runs one source's import with a `service` actor of its tenant. ``resume``: continue a
    crawl that stopped at its page limit, from its frontier."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        tenant_id: uuid.UUID,
        source: dict,
        *,
        fetcher: SafeFetcher | None = None,
        on_chunks=None,
        resume: bool = False,
    ):
        self.pool = pool
        self.tenant_id = tenant_id
        self.source = source
        self.fetcher = fetcher or SafeFetcher()
        self.progress = Progress()
        self.on_chunks = on_chunks  # called when chunks were queued (wakes the dev embedding worker)
        self.resume = resume
        opts = source.get("options") or {}
        self.requested_pages = int(opts["max_pages"]) if opts.get("max_pages") else None
        self.max_pages = 1
        depth = opts.get("max_depth")
        self.max_depth = max(0, min(int(depth) if depth is not None else DEFAULT_MAX_DEPTH, HARD_MAX_DEPTH))
        self.known: dict[str, dict] = {}  # doc_key -> stored validators and links
        self.link_lists: set[str] = set()  # pages of this pass followed but not stored (indexes, tables of contents)
        self.repeated = RepeatedBlocks()
        self.robots: RobotFileParser | None = None

    def tx(self):
        return tenant_tx(self.pool, Actor(tenant_id=self.tenant_id, kind="service", actor_id="importer"))

    async def report(self, status: str, error: str | None = None) -> None:
        async with self.tx() as conn:
            await conn.execute(
                "SELECT parley.set_source_progress($1, $2, $3, $4)",
                self.source["id"],
                status,
                self.progress.as_json(),
                error,
            )

    async def prepare(self) -> None:
        """The page budget (the plan's limit, or less if the source asks) and what is stored."""
        async with self.tx() as conn:
            limit = await conn.fetchval("SELECT parley.knowledge_page_limit()")
            rows = await conn.fetch(
                "SELECT doc_key, etag, last_modified, links FROM parley.knowledge_documents"
                " WHERE tenant_id = parley.current_tenant_id() AND source_id = $1",
                self.source["id"],
            )
            progress = await conn.fetchval(
                "SELECT progress FROM parley.knowledge_sources WHERE id = $1", self.source["id"]
            )
        self.progress.page_limit = limit
        self.max_pages = max(1, min(self.requested_pages or limit, limit))
        if self.resume:  # continuing adds pages to those stored, within the plan's limit
            self.max_pages = max(0, min(self.max_pages, limit - len(rows)))
        self.known = {r["doc_key"]: dict(r) for r in rows}
        self.progress.extraction = int((progress or {}).get("extraction") or 0)
        if self.progress.extraction != ex.EXTRACTION_VERSION:
            # Stored by an older extraction: fetch every page whole (a 304 would keep its old text);
            # passages that come out the same keep their vectors.
            self.known = {key: {**row, "etag": None, "last_modified": None} for key, row in self.known.items()}

    async def run(self) -> None:
        kind = self.source["kind"]
        try:
            await self.prepare()
            await self.report("running")
            if kind == "url":
                seen = await self.import_urls([self.source["url"]])
            elif kind == "sitemap":
                seen = await self.import_urls(await self.sitemap_urls(self.source["url"]))
            elif kind == "crawl":
                seen = await self.crawl(self.source["url"])
            else:
                raise ValueError(f"{kind} sources are not fetched")
            if self.progress.pages_done + self.progress.pages_unchanged == 0 and self.progress.pages_failed:
                await self.report("failed", self.progress.errors[-1]["code"])
                return
            if seen is not None and not self.progress.pages_failed and not self.resume:
                # A complete pass: pages that are gone from the site leave the knowledge too, and so
                # do pages stored before that are only lists of links now.
                async with self.tx() as conn:
                    self.progress.documents_pruned = await conn.fetchval(
                        "SELECT parley.prune_source_documents($1, $2)", self.source["id"], list(seen - self.link_lists)
                    )
            if not self.progress.pages_failed and not self.resume:
                self.progress.extraction = ex.EXTRACTION_VERSION  # every page this pass reached was made now
            await self.report("ready")
        except asyncio.CancelledError:
            await asyncio.shield(self.report("failed", "cancelled"))
            raise
        except FetchError as exc:
            await self.report("failed", exc.code)
        except ex.ExtractError as exc:
            await self.report("failed", exc.code)
        except asyncpg.PostgresError as exc:
            if not (exc.sqlstate or "").startswith("PT"):
                raise
            await self.report("failed", getattr(exc, "hint", None) or "refused")
        except Exception as exc:
            log.exception("import of source %s failed", self.source["id"])
            await self.report("failed", type(exc).__name__)

    async def fetch_page(self, url: str, key: str):
        """The page, or None when the server says it has not changed since the stored copy."""
        stored = self.known.get(key) or {}
        headers = {}
        if stored.get("etag"):
            headers["If-None-Match"] = stored["etag"]
        if stored.get("last_modified"):
            headers["If-Modified-Since"] = stored["last_modified"]
        result = await self.fetcher.fetch(url, allowed_types=None if headers else PAGE_TYPES, headers=headers or None)
        if result.status == 304:
            return None
        if headers and not any(result.content_type == t for t in PAGE_TYPES):
            raise ex.ExtractError("unsupported_type", f"cannot extract text from {result.content_type}")
        return result

    async def import_page(self, url: str) -> list[str] | None:
        """Fetch, extract and store one page; returns its links (None when it failed: counted)."""
        await self.wait_for_backlog()
        key = ex.normalise_url(url)
        try:
            result = await self.fetch_page(url, key)
            if result is None:
                self.progress.pages_unchanged += 1
                return list(self.known[key].get("links") or [])
            doc = await asyncio.to_thread(  # off the event loop, as uploads: seconds of CPU for a large page
                ex.extract,
                result.body,
                content_type=result.content_type
                if not result.charset
                else f"{result.content_type}; charset={result.charset}",
                url=result.url,
            )
        except (FetchError, ex.ExtractError) as exc:
            self.progress.fail(url, exc.code)
            return None
        links = await asyncio.to_thread(ex.extract_links, result.body, doc.url or url) if doc.kind == "html" else []
        if doc.kind == "html" and doc.link_density >= INDEX_LINK_DENSITY:
            self.progress.pages_skipped += 1  # an index or table of contents: its links, not its text
            self.link_lists.add(key)
            return links
        if doc.kind == "html":
            doc.text = self.repeated.filter(doc.text)
        if not doc.text.strip():
            self.progress.fail(url, "empty")
            return None
        async with self.tx() as conn:
            stored = await ingest_document(conn, self.source["id"], key, doc)
            headers = {k.lower(): v for k, v in result.headers.items()}
            await conn.execute(
                "SELECT parley.knowledge_document_fetched($1, $2, $3, $4)",
                stored["document_id"],
                headers.get("etag"),
                headers.get("last-modified"),
                links[:2000],
            )
            self.progress.count(stored)
            await conn.execute(
                "SELECT parley.set_source_progress($1, 'running', $2)", self.source["id"], self.progress.as_json()
            )
        if stored["added"] and self.on_chunks:
            self.on_chunks()
        return links

    def allowed(self, url: str) -> bool:
        return self.robots is None or self.robots.can_fetch(self.fetcher.user_agent, url)

    async def import_urls(self, urls: list[str]) -> set[str] | None:
        """The pages seen, or None when the page limit left some out (nothing is pruned then)."""
        urls = list(dict.fromkeys(ex.normalise_url(u) for u in urls))
        if self.resume:
            urls = list(self.source.get("frontier") or [])
        todo, rest = urls[: self.max_pages], urls[self.max_pages :]
        self.progress.pages_found = len(urls)
        seen: set[str] = set()
        for url in todo:
            if await self.import_page(url) is not None:
                seen.add(url)
        await self.stopped_at(rest)
        return seen if not rest else None

    async def stopped_at(self, rest: list[str]) -> None:
        """Record the pages left when the limit was reached (the state "continue" resumes)."""
        self.progress.limited = bool(rest)
        async with self.tx() as conn:
            await conn.execute("SELECT parley.set_source_frontier($1, $2)", self.source["id"], rest[:MAX_FRONTIER])

    async def sitemap_urls(self, url: str) -> list[str]:
        """Page URLs of a sitemap (following a sitemap index one level deep), same site only."""
        pending = deque([url])
        urls: list[str] = []
        visited: set[str] = set()
        while pending and len(urls) < ex.MAX_SITEMAP_URLS and len(visited) < 20:
            current = pending.popleft()
            if current in visited:
                continue
            visited.add(current)
            result = await self.fetcher.fetch(current, allowed_types=SITEMAP_TYPES, max_bytes=ex.MAX_SITEMAP_BYTES)
            sitemap = ex.parse_sitemap(result.body, base_url=url)
            urls.extend(u.loc for u in sitemap.urls)
            pending.extend(sitemap.sitemaps)
        return urls

    async def read_robots(self, start: str) -> list[str]:
        """Parse the site's robots.txt (rules for our user agent) and return its sitemaps."""
        parts = urlsplit(start)
        try:
            result = await self.fetcher.fetch(
                f"{parts.scheme}://{parts.netloc}/robots.txt", allowed_types=("text/plain",), max_bytes=512 * 1024
            )
        except FetchError:
            return []
        text = result.text()
        self.robots = RobotFileParser()
        self.robots.parse(text.splitlines())
        return ex.sitemaps_from_robots(text)

    async def crawl(self, start: str) -> set[str] | None:
        """Robots.txt, then the sitemap's pages, then links, section by section, up to the limits."""
        start = ex.normalise_url(start)
        frontier = Frontier()
        sitemaps = await self.read_robots(start)
        if self.resume:
            for url in self.source.get("frontier") or []:
                frontier.add(url, 1)
            frontier.queued.update(self.known)
        else:
            frontier.add(start, 0)
            parts = urlsplit(start)
            for sitemap in sitemaps or [f"{parts.scheme}://{parts.netloc}/sitemap.xml"]:
                try:
                    for url in await self.sitemap_urls(sitemap):
                        if ex.same_site(url, start):
                            frontier.add(ex.normalise_url(url), 1)
                except (FetchError, ex.ExtractError):
                    continue
        seen: set[str] = set()
        while frontier and self.progress.visited < self.max_pages:
            url, depth = frontier.pop()
            self.progress.pages_found = len(frontier.queued)
            if not self.allowed(url):
                self.progress.pages_skipped += 1
                continue
            links = await self.import_page(url)
            if links is None:
                continue
            seen.add(url)
            if depth < self.max_depth:
                for link in links:
                    if ex.same_site(link, start):
                        frontier.add(link, depth + 1)
        self.progress.pages_found = len(frontier.queued)
        # A crawl cut short by its page limit has not seen the whole site: prune nothing then.
        await self.stopped_at(frontier.remaining())
        return seen if not frontier else None

    async def wait_for_backlog(self) -> None:
        waited = 0.0
        while waited < BACKLOG_WAIT_S:
            async with self.tx() as conn:
                if await backlog(conn) < MAX_BACKLOG:
                    return
            await asyncio.sleep(1.0)
            waited += 1.0


class ImportManager:
    """The background import tasks of this server process (cancelled on shutdown)."""

    def __init__(self, pool: asyncpg.Pool, *, fetcher_factory=SafeFetcher, on_chunks=None):
        self.pool = pool
        self.fetcher_factory = fetcher_factory
        self.on_chunks = on_chunks
        self.tasks: dict[uuid.UUID, asyncio.Task] = {}

    def start(self, tenant_id: uuid.UUID, source: dict, *, resume: bool = False) -> asyncio.Task:
        source_id = source["id"]
        old = self.tasks.get(source_id)
        if old is not None and not old.done():
            old.cancel()
        importer = Importer(
            self.pool, tenant_id, source, fetcher=self.fetcher_factory(), on_chunks=self.on_chunks, resume=resume
        )
        task = asyncio.get_running_loop().create_task(importer.run(), name=f"import-{source_id}")
        self.tasks[source_id] = task
        task.add_done_callback(lambda t: self.tasks.pop(source_id, None) if self.tasks.get(source_id) is t else None)
        return task

    def cancel(self, source_id: uuid.UUID) -> None:
        task = self.tasks.pop(source_id, None)
        if task is not None:
            task.cancel()

    async def stop(self) -> None:
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
