"""Knowledge REST: sources (text, URL, sitemap, crawl, file upload), progress, re-import,
delete, documents, and "try a question" (the passages the bot would use).

URLs are vetted at the API (SSRF rules of pyapp.net, allow-list off unless
PARLEY_FETCH_ALLOW_HOSTS is set) so a hostile URL is refused with 422 before anything is
stored; the fetcher checks again on every hop while importing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from typing import Literal

from aiohttp import BodyPartReader, web
from pydantic import BaseModel, Field

from pyapp.api import Call, api, rows
from pyapp.context import EMBEDDER_WARM, POOL, SETTINGS
from pyapp.errors import ApiError, not_found
from pyapp.inputs import MALFORMED_BODY
from pyapp.knowledge import extract as ex
from pyapp.knowledge.crawl import HARD_MAX_DEPTH, HARD_MAX_PAGES, ImportManager
from pyapp.knowledge.ingest import MAX_BACKLOG, EmbeddingWorker, backlog, get_embedder, ingest_document
from pyapp.knowledge.search import HAS_VECTORS, answerable, query_vector, search_passages
from pyapp.net import FetchError, vet_url
from pyapp.net.safe_fetch import allow_hosts_from_env

IMPORTS = web.AppKey("knowledge_imports", ImportManager)
WORKER = web.AppKey("embedding_worker", EmbeddingWorker)
UPLOAD_MAX_BYTES = int(os.environ.get("PARLEY_UPLOAD_MAX_BYTES", str(10 * 1024 * 1024)))
TEXT_MAX_CHARS = 500_000
UPLOAD_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf")

# options.text: a pasted-text source's own text (read only by GET .../text, never listed)
route = api.group(tags=("knowledge",))

SOURCES = """SELECT s.id, s.chatbot_id, s.kind, s.title, s.url, s.filename, s.options - 'text' AS options,
  s.status, s.progress, s.error,
  s.created_at, s.updated_at, s.last_imported_at, n.documents, n.chunks, n.chunks_embedded,
  cardinality(s.frontier) AS pages_left
  FROM parley.knowledge_sources s CROSS JOIN LATERAL parley.knowledge_source_counts(s.tenant_id, s.id) n"""


class SourceIn(BaseModel):
    kind: Literal["text", "url", "sitemap", "crawl"]
    title: str = Field("", max_length=300)
    text: str | None = Field(default=None, max_length=TEXT_MAX_CHARS)
    url: str | None = Field(default=None, max_length=2048)
    max_pages: int | None = Field(default=None, ge=1, le=HARD_MAX_PAGES)
    max_depth: int | None = Field(default=None, ge=0, le=HARD_MAX_DEPTH)


class TextIn(BaseModel):
    title: str | None = Field(default=None, max_length=300)
    text: str = Field(..., min_length=1, max_length=TEXT_MAX_CHARS)


class SearchIn(BaseModel):
    query: str = Field(..., min_length=1, max_length=2000)
    k: int = Field(5, ge=1, le=20)


class Source(BaseModel):
    id: uuid.UUID
    chatbot_id: uuid.UUID
    kind: str
    title: str
    url: str | None
    filename: str | None
    status: str
    progress: dict
    error: str | None
    documents: int
    chunks: int
    chunks_embedded: int
    pages_left: int = 0  # pages a crawl or sitemap import did not reach at its page limit ("continue")


def _imports(call: Call) -> ImportManager:
    return call.request.app[IMPORTS]


def _poke_worker(app: web.Application) -> None:
    worker = app.get(WORKER)
    if worker is not None:
        worker.poke()


async def _vet(url: str | None) -> str:
    """Refuse hostile or malformed URLs at the API, before anything is stored."""
    if not url:
        raise ApiError(422, "url_required", "This kind of source needs a URL.")
    try:
        vetted = await vet_url(url.strip(), allow_hosts=allow_hosts_from_env())
    except FetchError as exc:
        status, code = (
            (422, "url_not_allowed")
            if exc.code in ("address_not_allowed", "scheme_not_allowed", "invalid_url")
            else (422, "url_unreachable")
        )
        raise ApiError(status, code, f"This URL cannot be imported: {exc.message}") from None
    return ex.normalise_url(str(vetted.url))


async def _source(conn, source_id: uuid.UUID) -> dict:
    row = await conn.fetchrow(f"{SOURCES} WHERE s.id = $1", source_id)
    if row is None:
        raise not_found("knowledge source")
    return dict(row)


async def _check_backlog(conn) -> None:
    if await backlog(conn) >= MAX_BACKLOG:
        raise ApiError(
            429, "embedding_backlog", "Too much knowledge is still waiting to be indexed; try again in a few minutes."
        )


def _text_document(
    title: str, text: str, *, filename: str | None = None, data: bytes | None = None, content_type: str | None = None
) -> ex.Document:
    if data is not None:
        try:
            doc = ex.extract(data, content_type=content_type, filename=filename)
        except ex.ExtractError as exc:
            raise ApiError(422, exc.code, exc.message) from None
    else:
        doc = ex.extract_text(text)
    doc.title = title or doc.title or filename or "Text"
    if not doc.text.strip():
        raise ApiError(422, "empty_document", "No text could be read from this content.")
    return doc


@route("GET", "/api/chatbots/{chatbot_id}/knowledge/sources", response=list[Source])
async def list_sources(call: Call):
    """List a chatbot's knowledge sources with progress and counts."""
    chatbot_id = call.uuid_param("chatbot_id")
    async with call.tx() as conn:
        if not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM parley.chatbots b WHERE b.id = $1 AND b.deleted_at IS NULL)", chatbot_id
        ):
            raise not_found("chatbot")  # RLS hides another tenant's: the same answer as a made-up id
        return rows(
            await conn.fetch(
                f"{SOURCES} WHERE s.tenant_id = parley.current_tenant_id() "
                "AND s.chatbot_id = $1 ORDER BY s.created_at DESC",
                chatbot_id,
            )
        )


@route(
    "POST", "/api/chatbots/{chatbot_id}/knowledge/sources", body=SourceIn, response=Source, status=201, min_role="admin"
)
async def create_source(call: Call):
    """Add pasted text (imported at once) or a URL, sitemap or crawl (imported in the background)."""
    body: SourceIn = call.body
    chatbot_id = call.uuid_param("chatbot_id")
    url = None
    if body.kind == "text":
        if not body.text or not body.text.strip():
            raise ApiError(422, "text_required", "Paste some text.")
        doc = _text_document(body.title, body.text)
    else:
        url = await _vet(body.url)
    options: dict = {k: v for k, v in (("max_pages", body.max_pages), ("max_depth", body.max_depth)) if v is not None}
    if body.kind == "text":
        options["text"] = body.text  # kept, so the console can show and edit it
    async with call.tx() as conn:
        await _check_backlog(conn)
        created = await conn.fetchrow(
            "SELECT * FROM parley.create_knowledge_source($1, $2, $3, $4, NULL, $5)",
            chatbot_id,
            body.kind,
            body.title or (doc.title if body.kind == "text" else ""),
            url,
            options,
        )
        if body.kind == "text":
            result = await ingest_document(conn, created["id"], "text", doc)
            await conn.execute(
                "SELECT parley.set_source_progress($1, 'ready', $2)",
                created["id"],
                {"pages_found": 1, "pages_done": 1, "chunks_added": result["added"]},
            )
        source = await _source(conn, created["id"])
    if body.kind == "text":
        _poke_worker(call.request.app)
    else:
        _imports(call).start(call.member.tenant_id, source)
    return source


async def _read_upload(reader) -> tuple[bytes | None, str | None, str | None, str]:
    """The file part (its bytes, name and media type) and the title of an upload; other parts, and
    nested multipart bodies (which have no field name), are skipped."""
    data, filename, content_type, title = None, None, None, ""
    async for part in reader:
        if not isinstance(part, BodyPartReader):
            await part.release()
        elif part.name == "title":
            title = (await part.text())[:300]
        elif part.name == "file":
            filename = os.path.basename(part.filename or "upload")[:255]
            content_type = part.headers.get("Content-Type")
            buf = bytearray()
            while chunk := await part.read_chunk(65536):
                buf.extend(chunk)
                if len(buf) > UPLOAD_MAX_BYTES:
                    raise ApiError(
                        413, "payload_too_large", f"Files are limited to {UPLOAD_MAX_BYTES // (1024 * 1024)} MB."
                    )
            data = bytes(buf)
    return data, filename, content_type, title


@route("POST", "/api/chatbots/{chatbot_id}/knowledge/upload", response=Source, status=201, min_role="admin")
async def upload_source(call: Call):
    """Upload a .txt, .md, .html or .pdf file (multipart field "file"; optional "title")."""
    chatbot_id = call.uuid_param("chatbot_id")
    reader = await call.multipart()
    try:
        data, filename, content_type, title = await _read_upload(reader)
    except MALFORMED_BODY:
        # An unterminated part ("Reading after EOF"), an unknown charset, a broken part header: a 500 before.
        raise ApiError(400, "malformed_body", "The multipart body is malformed.") from None
    if data is None or filename is None:
        raise ApiError(422, "file_required", 'Send the file in the multipart field "file".')
    if not filename.lower().endswith(UPLOAD_SUFFIXES):
        raise ApiError(415, "unsupported_type", "Upload a .txt, .md, .html or .pdf file.")
    # Off the event loop: a 10 MB page or PDF takes seconds of CPU, and every other request waits meanwhile.
    doc = await asyncio.to_thread(_text_document, title, "", filename=filename, data=data, content_type=content_type)
    async with call.tx() as conn:
        await _check_backlog(conn)
        created = await conn.fetchrow(
            "SELECT * FROM parley.create_knowledge_source($1, 'file', $2, NULL, $3, '{}')",
            chatbot_id,
            title or doc.title,
            filename,
        )
        result = await ingest_document(conn, created["id"], filename, doc)
        await conn.execute(
            "SELECT parley.set_source_progress($1, 'ready', $2)",
            created["id"],
            {"pages_found": 1, "pages_done": 1, "chunks_added": result["added"]},
        )
        source = await _source(conn, created["id"])
    _poke_worker(call.request.app)
    return source


@route("GET", "/api/knowledge/sources/{source_id}", response=Source)
async def get_source(call: Call):
    """One source with its import status and progress (poll this while it runs)."""
    async with call.tx() as conn:
        return await _source(conn, call.uuid_param("source_id"))


async def _text_source(conn, source_id: uuid.UUID) -> dict:
    """A pasted-text source (404 when unknown, 409 not_text for the other kinds)."""
    source = await _source(conn, source_id)
    if source["kind"] != "text":
        raise ApiError(409, "not_text", "Only pasted-text sources have a text to show or edit.")
    return source


class SourceTextOut(BaseModel):
    title: str
    text: str
    exact: bool = Field(description="false: an older source whose text was not kept, joined from its passages")


@route("GET", "/api/knowledge/sources/{source_id}/text", response=SourceTextOut)
async def get_text(call: Call):
    """The text of a pasted-text source, to read or edit (PUT the same path to replace it)."""
    source_id = call.uuid_param("source_id")
    async with call.tx() as conn:
        source = await _text_source(conn, source_id)
        kept = await conn.fetchval(
            "SELECT s.options->>'text' FROM parley.knowledge_sources s WHERE s.id = $1", source_id
        )
        if kept is not None:
            return {"title": source["title"], "text": kept, "exact": True}
        passages = await conn.fetch(
            "SELECT c.text FROM parley.knowledge_chunks c JOIN parley.knowledge_documents d"
            "  ON d.tenant_id = c.tenant_id AND d.id = c.document_id"
            " WHERE d.source_id = $1 ORDER BY c.ordinal",
            source_id,
        )
    return {"title": source["title"], "text": "\n\n".join(r["text"] for r in passages), "exact": False}


@route("PUT", "/api/knowledge/sources/{source_id}/text", body=TextIn, response=Source, min_role="admin")
async def replace_text(call: Call):
    """Replace the text of a pasted-text source; unchanged passages keep their embeddings."""
    source_id = call.uuid_param("source_id")
    async with call.tx() as conn:
        source = await _text_source(conn, source_id)
        title = call.body.title if call.body.title is not None else source["title"]
        await ingest_document(conn, source_id, "text", _text_document(title, call.body.text))
        await conn.execute(
            "UPDATE parley.knowledge_sources SET title = $2, options = options || jsonb_build_object('text', $3::text),"
            " updated_at = now() WHERE id = $1",
            source_id,
            title,
            call.body.text,
        )
        await conn.execute("SELECT parley.set_source_progress($1, 'ready')", source_id)
        source = await _source(conn, source_id)
    _poke_worker(call.request.app)
    return source


@route("POST", "/api/knowledge/sources/{source_id}/reimport", response=Source, status=202, min_role="admin")
async def reimport_source(call: Call):
    """Fetch a URL, sitemap or crawl source again; documents update in place, unchanged chunks are kept."""
    source_id = call.uuid_param("source_id")
    async with call.tx() as conn:
        source = await _source(conn, source_id)
        if source["kind"] not in ("url", "sitemap", "crawl"):
            raise ApiError(409, "not_reimportable", "Only URL, sitemap and crawl sources can be re-imported.")
        await _check_backlog(conn)
        await _vet(source["url"])
        await conn.execute("SELECT parley.set_source_progress($1, 'pending', '{}', NULL)", source_id)
        source = await _source(conn, source_id)
    _imports(call).start(call.member.tenant_id, source)
    return source


@route("POST", "/api/knowledge/sources/{source_id}/continue", response=Source, status=202, min_role="admin")
async def continue_source(call: Call):
    """Import the pages a crawl or sitemap import had not reached when it stopped at its page
    limit (`pages_left`); the pages already imported stay as they are."""
    source_id = call.uuid_param("source_id")
    async with call.tx() as conn:
        source = await _source(conn, source_id)
        if source["kind"] not in ("sitemap", "crawl") or not source["pages_left"]:
            raise ApiError(409, "nothing_to_continue", "This import did not stop at its page limit.")
        if source["status"] in ("pending", "running"):
            raise ApiError(409, "import_running", "This source is being imported; wait for it to finish.")
        if source["documents"] >= await conn.fetchval("SELECT parley.knowledge_page_limit()"):
            raise ApiError(
                402, "plan_limit", "Your plan's page limit is reached for this source; upgrade to import more."
            )
        await _check_backlog(conn)
        await _vet(source["url"])
        frontier = await conn.fetchval("SELECT frontier FROM parley.knowledge_sources WHERE id = $1", source_id)
        await conn.execute("SELECT parley.set_source_progress($1, 'pending', '{}', NULL)", source_id)
        source = await _source(conn, source_id)
    _imports(call).start(call.member.tenant_id, {**source, "frontier": frontier}, resume=True)
    return source


@route("DELETE", "/api/knowledge/sources/{source_id}", status=204, min_role="admin")
async def delete_source(call: Call):
    """Delete a source and every document, chunk and queued embedding of it."""
    source_id = call.uuid_param("source_id")
    _imports(call).cancel(source_id)
    async with call.tx() as conn:
        if not await conn.fetchval("SELECT parley.delete_knowledge_source($1)", source_id):
            raise not_found("knowledge source")
    return None


@route("GET", "/api/knowledge/sources/{source_id}/documents")
async def list_documents(call: Call):
    """The documents (pages, files) of a source with their chunk counts."""
    async with call.tx() as conn:
        await _source(conn, call.uuid_param("source_id"))
        return rows(
            await conn.fetch(
                """SELECT d.id, d.doc_key, d.url, d.title, d.chars, d.created_at, d.updated_at,
                      (SELECT count(*) FROM parley.knowledge_chunks c
                        WHERE c.tenant_id = d.tenant_id AND c.document_id = d.id) AS chunks
                 FROM parley.knowledge_documents d
                WHERE d.tenant_id = parley.current_tenant_id() AND d.source_id = $1
                ORDER BY d.doc_key""",
                call.uuid_param("source_id"),
            )
        )


@route("POST", "/api/chatbots/{chatbot_id}/knowledge/search", body=SearchIn)
async def try_question(call: Call):
    """Try a question: the passages the bot would ground its answer in, and whether it would answer or decline."""
    chatbot_id = call.uuid_param("chatbot_id")
    async with call.tx() as conn:
        embedded = await conn.fetchval(HAS_VECTORS, chatbot_id)
        if embedded is None:
            raise not_found("chatbot")
    embedder = get_embedder() if embedded else None
    vector = await query_vector(embedder, call.body.query)
    async with call.tx() as conn:
        passages, mode = await search_passages(
            conn, chatbot_id, call.body.query, call.body.k, vector, embedder.model if embedder else None
        )
    # the decline rule is SQL's (parley.knowledge_answerable), the same on every row
    return {"mode": mode, "answerable": answerable(passages), "passages": passages}


def setup(app: web.Application) -> None:
    """Background imports, and the dev embedding worker when enabled (see docs/knowledge.md)."""

    async def ctx(app: web.Application):
        worker = None
        if _worker_enabled(app):
            worker = EmbeddingWorker(app[POOL])
            worker.start()
            app[WORKER] = worker
        app[IMPORTS] = ImportManager(app[POOL], on_chunks=lambda: _poke_worker(app))
        warming = _warm_embedder(app)
        yield
        if warming is not None and not warming.done():
            warming.cancel()
        await app[IMPORTS].stop()
        if worker is not None:
            await worker.stop()

    app.cleanup_ctx.append(ctx)


def _warm_embedder(app: web.Application) -> asyncio.Task | None:
    """Load the local model now, in a thread, so the first question does not wait seconds
    for it (settings.extra["embed_warm"], on for `parley serve` unless PARLEY_EMBED_WARM=0)."""
    if not app[SETTINGS].extra.get("embed_warm"):
        return None
    try:
        embedder = get_embedder()
    except ValueError as exc:  # a bad embeddings setting: retrieval falls back to full text
        logging.getLogger("parley.knowledge").warning("embeddings misconfigured: %s", exc)
        return None
    if embedder is None or not hasattr(embedder, "warm_up"):
        return None

    async def warm() -> None:
        try:
            await embedder.warm_up()
        except Exception as exc:  # an unloadable model must not keep the server from serving
            logging.getLogger("parley.knowledge").warning("embedding model did not load: %s", exc)

    task = asyncio.get_running_loop().create_task(warm(), name="parley-embedder-warm")
    app[EMBEDDER_WARM] = task
    return task


def _worker_enabled(app: web.Application) -> bool:
    """PARLEY_EMBED_WORKER=1/0 decides; by default only the embedded (dev) setup runs it."""
    value = os.environ.get("PARLEY_EMBED_WORKER")
    if value is not None:
        return value.strip().lower() in ("1", "true", "yes", "on")
    settings = app[SETTINGS]
    return bool(settings.extra.get("embed_worker", settings.embedded))
