"""Console → Privacy (/console/privacy, admins): export a visitor's data or the whole workspace's,
erase a visitor. (Restoring a deleted workspace is on the workspace list, pyapp/console/auth.py.)

The export is the API's archive (pyapp.gdpr.archive) streamed in the page's own transaction; the
erasure is parley.gdpr_erase_visitor in it. SQL checks the role and audits both.
"""

from __future__ import annotations

import datetime as dt

import asyncpg
from aiohttp import web
from pydantic import ValidationError

from pyapp.console.web import Ctx, page
from pyapp.errors import ApiError, from_postgres
from pyapp.gdpr.archive import archive_chunks, begin_export
from pyapp.gdpr.routes import EraseIn, VisitorQuery, zip_response


def _visitor(values) -> tuple[VisitorQuery | None, dict]:
    """The visitor named in a form or query (conversation id or email); both empty = the workspace."""
    data = {k: str(values.get(k, "")).strip() or None for k in ("conversation_id", "email")}
    try:
        return VisitorQuery.model_validate(data), {}
    except ValidationError as exc:
        fields = {str(e["loc"][0]) for e in exc.errors()}
        return None, {
            f: (
                "Paste a conversation id (from its address in the inbox)."
                if f == "conversation_id"
                else "Enter an email address."
            )
            for f in fields
        }


def _values(ctx: Ctx) -> dict:
    return {k: str(ctx.form.get(k, ""))[:320] for k in ("conversation_id", "email")}


def _refusal(exc: asyncpg.PostgresError) -> ApiError:
    """A SQL rule's refusal (404 no such visitor, 403 role); anything else is the server's fault."""
    refusal = from_postgres(exc)
    if refusal is None or refusal.status >= 500:
        raise exc
    return refusal


async def _privacy_page(ctx: Ctx, *, status: int = 200, values=None, errors=None, erased=None):
    grace = await ctx.conn.fetchval("SELECT parley.tenant_purge_grace()")
    return ctx.render(
        "privacy.html",
        status=status,
        values=values or {},
        errors=errors or {},
        erased=erased,
        grace_days=grace.days,
    )


@page("GET", "/console/privacy", min_role="admin")
async def privacy(ctx: Ctx):
    return await _privacy_page(ctx)


@page("POST", "/console/privacy/export.zip", min_role="admin")
async def export(ctx: Ctx) -> web.StreamResponse:
    values = _values(ctx)
    visitor, errors = _visitor(ctx.form)
    if visitor is None:
        return await _privacy_page(ctx, status=422, values=values, errors=errors)
    try:
        async with ctx.savepoint():
            scope = await begin_export(ctx.conn, visitor.conversation_id, visitor.email)
    except asyncpg.PostgresError as exc:
        refusal = _refusal(exc)
        return await _privacy_page(
            ctx, status=refusal.status, values=dict(ctx.request.query), errors={"__all__": refusal.message}
        )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M")
    response = zip_response(f"parley-{scope['scope']}-export-{stamp}.zip", ctx.request)
    response.headers["Cache-Control"] = "no-store"
    ctx.carry_session(response)
    await response.prepare(ctx.request)
    async for chunk in archive_chunks(ctx.conn, scope):
        if chunk:
            await response.write(chunk)
    await response.write_eof()
    return response


@page("POST", "/console/privacy/erase", min_role="admin")
async def erase(ctx: Ctx):
    values = _values(ctx)
    visitor, errors = _visitor(ctx.form)
    if visitor is not None and visitor.conversation_id is None and visitor.email is None:
        errors = {"__all__": "Name the visitor: a conversation id or the email they left."}
    if visitor is None or errors:
        return await _privacy_page(ctx, status=422, values=values, errors=errors)
    body = EraseIn(conversation_id=visitor.conversation_id, email=visitor.email)
    try:
        async with ctx.savepoint():
            erased = await ctx.conn.fetchval(
                "SELECT parley.gdpr_erase_visitor($1, $2)", body.conversation_id, body.email
            )
    except asyncpg.PostgresError as exc:
        refusal = _refusal(exc)
        return await _privacy_page(ctx, status=refusal.status, values=values, errors={"__all__": refusal.message})
    return await _privacy_page(ctx, erased=erased)
