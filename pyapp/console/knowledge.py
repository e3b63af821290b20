"""Knowledge per chatbot: add text, import a URL / sitemap / site, upload files, progress, re-import,
delete, and "try a question" showing the passages the bot would use.

Writes and the search call the knowledge surface's handlers (pyapp.knowledge.routes), so URL
vetting (SSRF rules), extraction, chunking, background imports and the embedding worker
stay in one place; the console renders their results and errors next to the fields.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import asyncpg
from pydantic import ValidationError

from pyapp.api import Call
from pyapp.console import bridge, queries
from pyapp.console.web import (
    ENV,
    FIRST_VIEW,
    Ctx,
    Shown,
    form_errors,
    form_int,
    form_page,
    form_refused,
    json_ok,
    page,
    redirect,
)
from pyapp.errors import ApiError

KINDS = (("url", "One page"), ("sitemap", "A sitemap"), ("crawl", "A whole site (follow links)"))


def _routes():
    from pyapp.knowledge import routes

    return routes


async def _chatbot(ctx: Ctx, chatbot_id: uuid.UUID):
    bot = await queries.fetchrow(ctx.conn, "chatbot", chatbot_id)
    if bot is None:
        raise ApiError(404, "not_found", "No such chatbot.")
    return bot


@page("GET", "/console/knowledge")
async def knowledge_home(ctx: Ctx):
    bots = await queries.fetch(ctx.conn, "chatbots")
    if len(bots) == 1:
        return redirect(f"/console/knowledge/{bots[0]['id']}")
    return ctx.render("knowledge_home.html", bots=bots)


DONE = {
    "added": "Added. Passages are searchable at once; embeddings follow in the background.",
    "importing": "Import started; progress shows below.",
    "deleted": "Source deleted.",
    "reimporting": "Re-import started.",
    "continuing": "Import continues from where it stopped.",
    "uploaded": "File added.",
    "edited": "Text saved. Passages are searchable at once; embeddings follow in the background.",
}


async def _page(ctx: Ctx, chatbot_id: uuid.UUID, shown: Shown = FIRST_VIEW, *, answer: dict | None = None, form=""):
    """The chatbot's knowledge page; `form` names the form shown open (text, import, upload, try)."""
    bot = await _chatbot(ctx, chatbot_id)
    sources = await queries.fetch(ctx.conn, "knowledge_sources", chatbot_id, None)
    bots = await queries.fetch(ctx.conn, "chatbots")
    shown = replace(shown, values=shown.values or {"kind": "url"})
    data = {"bot": bot, "bots": bots, "sources": sources, "kinds": KINDS, "answer": answer, "form": form}
    return form_page(ctx, "knowledge.html", shown, DONE, **data)


@page("GET", "/console/knowledge/{chatbot_id}")
async def knowledge(ctx: Ctx):
    return await _page(ctx, ctx.uuid("chatbot_id"))


def _api_errors(exc: ApiError, default_field: str) -> dict:
    fields = (exc.details or {}).get("fields") or []
    out = {f["field"].split(".")[0]: f["message"] for f in fields if isinstance(f, dict) and "field" in f}
    return out or {default_field: exc.message}


@page("POST", "/console/knowledge/{chatbot_id}/text", min_role="admin")
async def add_text(ctx: Ctx):
    routes = _routes()
    chatbot_id = ctx.uuid("chatbot_id")
    values = {"title": str(ctx.form.get("title", ""))[:300], "text": str(ctx.form.get("text", ""))}
    source = {"kind": "text", "title": values["title"].strip(), "text": values["text"]}
    failed = await _create_source(ctx, routes, chatbot_id, source, values=values, form="text", field="text")
    return failed or redirect(f"/console/knowledge/{chatbot_id}?done=added")


async def _create_source(ctx: Ctx, routes, chatbot_id: uuid.UUID, source: dict, *, values: dict, form: str, field: str):
    """Create a source through the API's handler; the page again with the errors when refused."""
    try:
        body = routes.SourceIn.model_validate(source)
        if body.kind == "text" and not (body.text or "").strip():
            raise ApiError(422, "text_required", "Paste some text.")
        await bridge.call(ctx, routes.create_source, body=body, min_role="admin")
    except ValidationError as exc:
        return await _page(ctx, chatbot_id, Shown(422, form_errors(exc), values), form=form)
    except ApiError as exc:
        return await _page(ctx, chatbot_id, form_refused(exc, field, values), form=form)
    return None


@page("POST", "/console/knowledge/{chatbot_id}/import", min_role="admin")
async def import_url(ctx: Ctx):
    routes = _routes()
    chatbot_id = ctx.uuid("chatbot_id")
    values = {k: str(ctx.form.get(k, ""))[:2048] for k in ("kind", "url", "title", "max_pages", "max_depth")}
    errors: dict = {}
    if values["kind"] not in dict(KINDS):
        errors["kind"] = "Choose a page, a sitemap or a whole site."
    if not values["url"].strip():
        errors["url"] = "Enter the address (https://…)."
    max_pages = form_int(values["max_pages"], "max_pages", 1, routes.HARD_MAX_PAGES, errors)
    max_depth = form_int(values["max_depth"], "max_depth", 0, routes.HARD_MAX_DEPTH, errors)
    if errors:
        return await _page(ctx, chatbot_id, Shown(422, errors, values), form="import")
    source = {
        "kind": values["kind"],
        "url": values["url"].strip(),
        "title": values["title"].strip()[:300],
        "max_pages": max_pages,
        "max_depth": max_depth,
    }
    failed = await _create_source(ctx, routes, chatbot_id, source, values=values, form="import", field="url")
    return failed or redirect(f"/console/knowledge/{chatbot_id}?done=importing")


@page("POST", "/console/knowledge/{chatbot_id}/upload", min_role="admin", stream=True)
async def upload(ctx: Ctx):
    routes = _routes()
    chatbot_id = ctx.uuid("chatbot_id")
    try:
        if ctx.multipart is None:
            raise ApiError(422, "file_required", "Choose a file to upload.")
        await bridge.call(ctx, routes.upload_source, min_role="admin")
    except ApiError as exc:
        return await _page(ctx, chatbot_id, form_refused(exc, "file"), form="upload")
    return redirect(f"/console/knowledge/{chatbot_id}?done=uploaded")


async def _source(ctx: Ctx, source_id: uuid.UUID) -> asyncpg.Record:
    """One knowledge source of the workspace with its counts; 404 when there is none."""
    row = await queries.fetchrow(ctx.conn, "knowledge_sources", None, source_id)
    if row is None:
        raise ApiError(404, "not_found", "No such knowledge source.")
    return row


async def _source_chatbot(ctx: Ctx, source_id: uuid.UUID) -> uuid.UUID:
    return (await _source(ctx, source_id))["chatbot_id"]


async def _source_action(ctx: Ctx, handler: Callable[[Call], Awaitable[Any]], done: str):
    """Run a source's API action; a refusal (plan limit, busy import) re-renders the chatbot's page."""
    chatbot_id = await _source_chatbot(ctx, ctx.uuid("source_id"))
    try:
        await bridge.call(ctx, handler, min_role="admin")
    except ApiError as exc:
        return await _page(ctx, chatbot_id, form_refused(exc, "__all__"))
    return redirect(f"/console/knowledge/{chatbot_id}?done={done}")


@page("POST", "/console/knowledge/sources/{source_id}/reimport", min_role="admin")
async def reimport(ctx: Ctx):
    return await _source_action(ctx, _routes().reimport_source, "reimporting")


@page("POST", "/console/knowledge/sources/{source_id}/continue", min_role="admin")
async def continue_import(ctx: Ctx):
    """Import the pages a crawl left when it stopped at its page limit."""
    return await _source_action(ctx, _routes().continue_source, "continuing")


async def _text_page(ctx: Ctx, shown: Shown = FIRST_VIEW):
    """A pasted-text source's text, shown to members and editable by admins (the API's GET/PUT .../text)."""
    routes = _routes()
    source_id = ctx.uuid("source_id")
    chatbot_id = await _source_chatbot(ctx, source_id)
    try:
        kept = await bridge.call(ctx, routes.get_text)
    except ApiError as exc:
        if exc.code != "not_text":
            raise
        return redirect(f"/console/knowledge/{chatbot_id}")
    shown = replace(shown, values=shown.values or {"title": kept["title"], "text": kept["text"]})
    bot = await _chatbot(ctx, chatbot_id)
    return form_page(ctx, "source_text.html", shown, {}, bot=bot, source_id=source_id, exact=kept["exact"])


@page("GET", "/console/knowledge/sources/{source_id}/text")
async def source_text(ctx: Ctx):
    return await _text_page(ctx)


@page("POST", "/console/knowledge/sources/{source_id}/text", min_role="admin")
async def save_source_text(ctx: Ctx):
    routes = _routes()
    chatbot_id = await _source_chatbot(ctx, ctx.uuid("source_id"))
    values = {"title": str(ctx.form.get("title", ""))[:300], "text": str(ctx.form.get("text", ""))}
    try:
        body = routes.TextIn.model_validate({"title": values["title"].strip() or None, "text": values["text"]})
        if not values["text"].strip():
            raise ApiError(422, "text_required", "Paste some text.")
        await bridge.call(ctx, routes.replace_text, body=body, min_role="admin")
    except ValidationError as exc:
        return await _text_page(ctx, Shown(422, form_errors(exc), values))
    except ApiError as exc:
        return await _text_page(ctx, replace(form_refused(exc, "text", values), errors=_api_errors(exc, "text")))
    return redirect(f"/console/knowledge/{chatbot_id}?done=edited")


@page("POST", "/console/knowledge/sources/{source_id}/delete", min_role="admin")
async def delete(ctx: Ctx):
    chatbot_id = await _source_chatbot(ctx, ctx.uuid("source_id"))
    await bridge.call(ctx, _routes().delete_source, min_role="admin")
    return redirect(f"/console/knowledge/{chatbot_id}?done=deleted")


@page("GET", "/console/knowledge/sources/{source_id}/status")
async def source_status(ctx: Ctx):
    """The progress cells of one source, for polling while an import runs."""
    row = await _source(ctx, ctx.uuid("source_id"))
    html = ENV.get_template("console/_source_status.html").render(s=row)
    return json_ok({"html": html, "done": row["status"] in ("ready", "failed"), "status": row["status"]})


@page("POST", "/console/knowledge/{chatbot_id}/try")
async def try_question(ctx: Ctx):
    routes = _routes()
    chatbot_id = ctx.uuid("chatbot_id")
    values = {"query": str(ctx.form.get("query", ""))[:2000]}
    try:
        body = routes.SearchIn.model_validate({"query": values["query"].strip(), "k": 5})
    except ValidationError:
        errors = {"query": "Ask a question (up to 2000 characters)."}
        return await _page(ctx, chatbot_id, Shown(422, errors, values), form="try")
    result = await bridge.call(ctx, routes.try_question, body=body)
    return await _page(ctx, chatbot_id, Shown(values=values), answer=result, form="try")
