"""Leads: list, create by hand, edit, move along the status workflow, delete, export as CSV.

The workflow (new → contacted → qualified → won | lost, lost → new) is enforced by
parley.set_lead_status; the CSV export defuses spreadsheet formulas.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field

from pyapp import types
from pyapp.api import Call, api
from pyapp.conversations.routes import Strict
from pyapp.csv_export import csv_response, stream_csv
from pyapp.errors import not_found

TAGS = ("leads",)
Status = Literal["new", "contacted", "qualified", "won", "lost"]


class LeadIn(Strict):
    chatbot_id: UUID | None = None
    name: types.LeadName | None = None
    email: types.LeadEmail | None = None
    phone: types.LeadPhone | None = None
    custom: types.LeadCustom = Field(default_factory=dict)


class LeadPatch(Strict):
    name: types.LeadName | None = Field(default=None, description="empty string clears")
    email: types.LeadEmail | None = None
    phone: types.LeadPhone | None = None
    custom: types.LeadCustom | None = Field(default=None, description="replaces the custom fields")
    status: Status | None = Field(default=None, description="new → contacted → qualified → won | lost; lost → new")


class LeadQuery(Strict):
    status: Status | None = None
    chatbot: UUID | None = None
    before: datetime | None = Field(default=None, description="keyset: created_at of the last row of the previous page")
    limit: int = Field(100, ge=1, le=500)


class LeadOut(BaseModel):
    id: UUID
    chatbot_id: UUID | None = None
    conversation_id: UUID | None = None
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    custom: dict[str, Any] = {}
    status: Status
    created_at: datetime
    updated_at: datetime


class LeadsOut(BaseModel):
    leads: list[LeadOut]
    next_before: datetime | None = None


_COLUMNS = "id, chatbot_id, conversation_id, name, email, phone, custom, status, created_at, updated_at"
_LIST = f"""SELECT {_COLUMNS} FROM parley.leads
             WHERE ($1::text IS NULL OR status = $1) AND ($2::uuid IS NULL OR chatbot_id = $2)
               AND ($3::timestamptz IS NULL OR created_at < $3)
             ORDER BY created_at DESC, id LIMIT $4"""


@api.route("GET", "/api/leads", query=LeadQuery, response=LeadsOut, tags=TAGS)
async def list_leads(call: Call):
    """The workspace's leads, newest first."""
    q = call.query
    async with call.tx() as conn:
        rows = await conn.fetch(_LIST, q.status, q.chatbot, q.before, q.limit)
    items = [dict(r) for r in rows]
    return {"leads": items, "next_before": items[-1]["created_at"] if len(items) == q.limit else None}


@api.route("POST", "/api/leads", body=LeadIn, response=LeadOut, status=201, tags=TAGS)
async def create_lead(call: Call):
    """Record a lead by hand."""
    b = call.body
    async with call.tx() as conn:
        return dict(
            await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM parley.create_lead($1, $2, $3, $4, $5)",
                b.chatbot_id,
                b.name,
                b.email,
                b.phone,
                b.custom,
            )
        )


@api.route("GET", "/api/leads/{lead_id}", response=LeadOut, tags=TAGS)
async def get_lead(call: Call):
    """One lead."""
    async with call.tx() as conn:
        row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM parley.leads WHERE id = $1", call.uuid_param("lead_id"))
    if row is None:
        raise not_found("lead")
    return dict(row)


@api.route("PATCH", "/api/leads/{lead_id}", body=LeadPatch, response=LeadOut, tags=TAGS)
async def update_lead(call: Call):
    """Edit a lead and/or move its status (409 invalid_transition for a move the workflow forbids)."""
    b = call.body
    async with call.tx() as conn:
        return dict(
            await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM parley.update_lead($1, $2, $3, $4, $5, $6)",
                call.uuid_param("lead_id"),
                b.name,
                b.email,
                b.phone,
                b.custom,
                b.status,
            )
        )


@api.route("DELETE", "/api/leads/{lead_id}", status=204, tags=TAGS)
async def delete_lead(call: Call):
    """Delete a lead."""
    async with call.tx() as conn:
        await conn.execute("SELECT parley.delete_lead($1)", call.uuid_param("lead_id"))


EXPORT_LEADS = "SELECT * FROM parley.export_leads($1, $2, $3, $4, $5, $6)"


# The header of an empty export (a test checks it equals parley.export_leads's columns).
EXPORT_COLUMNS = [
    "id",
    "created_at",
    "status",
    "name",
    "email",
    "phone",
    "chatbot_id",
    "chatbot",
    "conversation_id",
    "custom",
]


@api.route("GET", "/api/leads.csv", query=LeadQuery, tags=TAGS, media="text/csv")
async def export_leads(call: Call):
    """All matching leads as CSV (formula-looking cells are prefixed with a quote), streamed in chunks."""
    q = call.query
    async with call.tx() as conn:
        return await stream_csv(
            call.request,
            csv_response("leads.csv"),
            conn,
            EXPORT_LEADS,
            None,
            q.status,
            q.chatbot,
            None,
            q.before,
            100_000,
            columns=EXPORT_COLUMNS,
        )
