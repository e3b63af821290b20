"""Leads: table with the status workflow, search and filters, CSV export of the same selection."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
from aiohttp import web
from pydantic import BaseModel, ValidationError, field_validator

from pyapp.console import queries
from pyapp.console.web import Ctx, form_errors, json_ok, page, redirect, safe_query, shown_refusal
from pyapp.csv_export import csv_response, stream_csv
from pyapp.errors import ApiError
from pyapp.leads.routes import EXPORT_COLUMNS, EXPORT_LEADS

STATUSES = ("new", "contacted", "qualified", "won", "lost")
# The workflow of parley.set_lead_status, to offer only the moves it accepts.
NEXT = {
    "new": ("contacted", "qualified", "lost"),
    "contacted": ("qualified", "won", "lost"),
    "qualified": ("contacted", "won", "lost"),
    "lost": ("new",),
    "won": (),
}
CSV_LIMIT = 50_000


class LeadFilters(BaseModel):
    q: str | None = None
    status: str | None = None
    chatbot: uuid.UUID | None = None
    date_from: dt.date | None = None
    date_to: dt.date | None = None

    @field_validator("q", "status", "chatbot", "date_from", "date_to", mode="before")
    @classmethod
    def _blank(cls, value):
        if isinstance(value, str):
            value = value.strip()
        return value or None

    @field_validator("q")
    @classmethod
    def _short(cls, value):
        return value[:200] if value else value

    @field_validator("status")
    @classmethod
    def _status(cls, value):
        if value is not None and value not in STATUSES:
            raise ValueError(f"Choose one of: {', '.join(STATUSES)}.")
        return value

    def args(self, limit: int) -> list:
        start = dt.datetime.combine(self.date_from, dt.time(), dt.UTC) if self.date_from else None
        end = dt.datetime.combine(self.date_to + dt.timedelta(days=1), dt.time(), dt.UTC) if self.date_to else None
        return [self.q, self.status, self.chatbot, start, end, limit]

    def query_string(self) -> str:
        from urllib.parse import urlencode

        pairs = {
            "q": self.q,
            "status": self.status,
            "chatbot": self.chatbot,
            "date_from": self.date_from,
            "date_to": self.date_to,
        }
        return urlencode({k: str(v) for k, v in pairs.items() if v is not None})


def _filters(request: web.Request) -> tuple[LeadFilters, dict]:
    raw = {k: request.query.get(k, "") for k in ("q", "status", "chatbot", "date_from", "date_to")}
    try:
        return LeadFilters.model_validate(raw), {}
    except ValidationError as exc:
        errors = form_errors(exc)
        cleaned = {k: v for k, v in raw.items() if k not in errors}
        return LeadFilters.model_validate(cleaned), errors


@page("GET", "/console/leads")
async def leads(ctx: Ctx):
    return await _leads_page(ctx)


async def _leads_page(ctx: Ctx, *, status: int = 200, row_errors: dict | None = None):
    filters, errors = _filters(ctx.request)
    rows = await queries.fetch(ctx.conn, "leads", *filters.args(500))
    counts = {r["status"]: r["n"] for r in await queries.fetch(ctx.conn, "lead_status_counts")}
    chatbots = await queries.fetch(ctx.conn, "chatbots")
    flash = {"updated": "Lead updated."}.get(ctx.request.query.get("done", ""))
    return ctx.render(
        "leads.html",
        status=status,
        rows=rows,
        filters=filters,
        raw=dict(ctx.request.query),
        errors=errors,
        statuses=STATUSES,
        next_statuses=NEXT,
        counts=counts,
        chatbots=chatbots,
        flash=flash,
        export_qs=filters.query_string(),
        row_errors=row_errors or {},
    )


@page("GET", "/console/leads.csv")
async def leads_csv(ctx: Ctx):
    filters, _ = _filters(ctx.request)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M")
    response = csv_response(f"leads-{stamp}.csv", {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})
    ctx.carry_session(response)
    return await stream_csv(
        ctx.request, response, ctx.conn, EXPORT_LEADS, *filters.args(CSV_LIMIT), columns=EXPORT_COLUMNS, bom=True
    )


class StatusForm(BaseModel):
    status: str

    @field_validator("status")
    @classmethod
    def _status(cls, value):
        if value not in STATUSES:
            raise ValueError(f"Choose one of: {', '.join(STATUSES)}.")
        return value


@page("POST", "/console/leads/{lead_id}/status")
async def lead_status(ctx: Ctx):
    lead_id = ctx.uuid("lead_id")
    try:
        data = StatusForm.model_validate(ctx.form)
    except ValidationError as exc:
        raise ApiError(422, "validation_failed", "Choose a valid status.", {"fields": form_errors(exc)}) from None
    try:
        async with ctx.savepoint() as conn:
            await conn.execute("SELECT 1 FROM parley.set_lead_status($1, $2)", lead_id, data.status)
    except asyncpg.PostgresError as exc:
        refused = shown_refusal(ctx, exc, (409, 422))
        return await _leads_page(ctx, status=refused.status, row_errors={str(lead_id): refused.message})
    if ctx.wants_json:
        return json_ok({"ok": True, "status": data.status})
    back = safe_query(ctx.form.get("back"))
    return redirect(f"/console/leads?{back}&done=updated" if back else "/console/leads?done=updated")
