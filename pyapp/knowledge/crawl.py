"""Imports that fetch: one URL, a sitemap, or a same-site crawl from a start URL.

Every fetch goes through the SSRF-guarded SafeFetcher (each redirect hop vetted, bodies
capped). An import runs as a background task of the server that accepted it and writes its
progress into the source row after each page (what the console polls). Pages are bounded
(max_pages, max_depth) and the crawl pauses while the tenant's embedding backlog is too big.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from dataclasses import dataclass, field

import asyncpg

from pyapp.db import Actor, tenant_tx
from pyapp.knowledge import extract as ex
from pyapp.knowledge.ingest import MAX_BACKLOG, backlog, ingest_document
from pyapp.net import FetchError, SafeFetcher

log = logging.getLogger("parley.knowledge")

DEFAULT_MAX_PAGES = 50
HARD_MAX_PAGES = 500
DEFAULT_MAX_DEPTH = 2
HARD_MAX_DEPTH = 5
PAGE_TYPES = ex.SUPPORTED_TYPES
SITEMAP_TYPES = ("application/xml", "text/xml", "application/gzip", "application/x-gzip", "text/plain",
                 "application/octet-stream")
BACKLOG_WAIT_S = 120.0


@dataclass
class Progress:
    pages_found: int = 0
    pages_done: int = 0
    pages_failed: int = 0
    chunks_added: int = 0
    chunks_unchanged: int = 0
    chunks_removed: int = 0
    documents_pruned: int = 0
    errors: list = field(default_factory=list)

    def as_json(self) -> dict:
        return {"pages_found": self.pages_found, "pages_done": self.pages_done, "pages_failed": self.pages_failed,
                "chunks_added": self.chunks_added, "chunks_unchanged": self.chunks_unchanged,
                "chunks_removed": self.chunks_removed, "documents_pruned": self.documents_pruned,
                "errors": self.errors[-10:]}

    def count(self, result: dict) -> None:
        self.pages_done += 1
        self.chunks_added += result["added"]
        self.chunks_unchanged += result["unchanged"]
        self.chunks_removed += result["removed"]

    def fail(self, url: str, code: str) -> None:
        self.pages_failed += 1
        self.errors.append({"url": url[:300], "code": code})


class Importer:
    """Runs one source's import with a `service` actor of its tenant."""

    def __init__(self, pool: asyncpg.Pool, tenant_id: uuid.UUID, source: dict, *,
                 fetcher: SafeFetcher | None = None, on_chunks=None):
        self.pool = pool
        self.tenant_id = tenant_id
        self.source = source
        self.fetcher = fetcher or SafeFetcher()
        self.progress = Progress()
        self.on_chunks = on_chunks  # called when chunks were queued (wakes the dev embedding worker)
        opts = source.get("options") or {}
        self.max_pages = max(1, min(int(opts.get("max_pages") or DEFAULT_MAX_PAGES), HARD_MAX_PAGES))
        self.max_depth = max(0, min(int(opts.get("max_depth") if opts.get("max_depth") is not None
                                        else DEFAULT_MAX_DEPTH), HARD_MAX_DEPTH))

    def tx(self):
        return tenant_tx(self.pool, Actor(tenant_id=self.tenant_id, kind="service", actor_id="importer"))

    async def report(self, status: str, error: str | None = None) -> None:
        async with self.tx() as conn:
            await conn.execute("SELECT parley.set_source_progress($1, $2, $3, $4)",
                               self.source["id"], status, self.progress.as_json(), error)

    async def run(self) -> None:
        kind = self.source["kind"]
        try:
            await self.report("running")
            if kind == "url":
                seen = await self.import_urls([self.source["url"]])
            elif kind == "sitemap":
                seen = await self.import_urls(await self.sitemap_urls(self.source["url"]))
            elif kind == "crawl":
                seen = await self.crawl(self.source["url"])
            else:
                raise ValueError(f"{kind} sources are not fetched")
            if self.progress.pages_done == 0 and self.progress.pages_failed:
                await self.report("failed", self.progress.errors[-1]["code"])
                return
            if seen is not None and not self.progress.pages_failed:
                # A complete pass: pages that are gone from the site leave the knowledge too.
                async with self.tx() as conn:
                    self.progress.documents_pruned = await conn.fetchval(
                        "SELECT parley.prune_source_documents($1, $2)", self.source["id"], list(seen))
            await self.report("ready")
        except asyncio.CancelledError:
            await asyncio.shield(self.report("failed", "cancelled"))
            raise
        except FetchError as exc:
            await self.report("failed", exc.code)
        except ex.ExtractError as exc:
            await self.report("failed", exc.code)
        except Exception as exc:
            log.exception("import of source %s failed", self.source["id"])
            await self.report("failed", type(exc).__name__)

    async def fetch_document(self, url: str) -> tuple[str, ex.Document, bytes, str]:
        result = await self.fetcher.fetch(url, allowed_types=PAGE_TYPES)
        doc = ex.extract(result.body, content_type=result.content_type if not result.charset
                         else f"{result.content_type}; charset={result.charset}", url=result.url)
        return ex.normalise_url(url), doc, result.body, result.content_type

    async def import_page(self, url: str) -> tuple[ex.Document, bytes, str] | None:
        """Fetch, extract and store one page; failures are counted, not raised."""
        await self.wait_for_backlog()
        try:
            key, doc, body, ctype = await self.fetch_document(url)
        except (FetchError, ex.ExtractError) as exc:
            self.progress.fail(url, exc.code)
            return None
        if not doc.text.strip():
            self.progress.fail(url, "empty")
            return None
        async with self.tx() as conn:
            result = await ingest_document(conn, self.source["id"], key, doc)
            self.progress.count(result)
            await conn.execute("SELECT parley.set_source_progress($1, 'running', $2)",
                               self.source["id"], self.progress.as_json())
        if result["added"] and self.on_chunks:
            self.on_chunks()
        return doc, body, ctype

    async def import_urls(self, urls: list[str]) -> set[str]:
        urls = list(dict.fromkeys(ex.normalise_url(u) for u in urls))[: self.max_pages]
        self.progress.pages_found = len(urls)
        seen: set[str] = set()
        for url in urls:
            if await self.import_page(url) is not None:
                seen.add(url)
        return seen

    async def sitemap_urls(self, url: str) -> list[str]:
        """Page URLs of a sitemap (following a sitemap index one level deep), same site only."""
        pending, urls, visited = deque([url]), [], set()
        while pending and len(urls) < self.max_pages and len(visited) < 20:
            current = pending.popleft()
            if current in visited:
                continue
            visited.add(current)
            result = await self.fetcher.fetch(current, allowed_types=SITEMAP_TYPES, max_bytes=ex.MAX_SITEMAP_BYTES)
            sitemap = ex.parse_sitemap(result.body, base_url=url)
            urls.extend(u.loc for u in sitemap.urls)
            pending.extend(sitemap.sitemaps)
        return urls

    async def crawl(self, start: str) -> set[str] | None:
        """Breadth-first over same-site links up to max_depth and max_pages."""
        start = ex.normalise_url(start)
        queue: deque[tuple[str, int]] = deque([(start, 0)])
        queued = {start}
        seen: set[str] = set()
        while queue and self.progress.pages_done + self.progress.pages_failed < self.max_pages:
            url, depth = queue.popleft()
            self.progress.pages_found = len(queued)
            page = await self.import_page(url)
            if page is None:
                continue
            seen.add(url)
            doc, body, ctype = page
            if depth < self.max_depth and doc.kind == "html":
                for link in ex.extract_links(body, doc.url or url):
                    if link not in queued and ex.same_site(link, start):
                        queued.add(link)
                        queue.append((link, depth + 1))
        # A crawl cut short by max_pages has not seen the whole site: prune nothing then.
        return seen if not queue else None

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

    def start(self, tenant_id: uuid.UUID, source: dict) -> asyncio.Task:
        source_id = source["id"]
        old = self.tasks.get(source_id)
        if old is not None and not old.done():
            old.cancel()
        importer = Importer(self.pool, tenant_id, source, fetcher=self.fetcher_factory(), on_chunks=self.on_chunks)
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
