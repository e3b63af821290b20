"""The staff back-office API (/api/staff): operators of this installation, member sessions only.

Staff are the people whose verified email is in PARLEY_ADMIN_EMAILS (written to SQL at server
start). Cross-tenant reads run in a staff transaction (`parley.begin_staff_request`); work
inside a tenant runs in that tenant's transaction as actor `staff` through begin_request, so
plan changes use parley.change_plan like the webhook and every action lands in the tenant's
audit trail with actor staff.
"""

from __future__ import annotations

import os
import uuid
from contextlib import asynccontextmanager
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from pyapp.api import Call, api
from pyapp.context import POOL, REQUEST_ID, SETTINGS, client_ip
from pyapp.db import Actor, acquire, tenant_tx

TAGS = ("staff",)
staff_route = api.group(auth="user", tags=TAGS)
# Staff acting in one tenant: in_tenant(call) opens the transaction as the path's tenant.
tenant_route = api.group("/api/staff/tenants/{tenant_id}", auth="user", tags=TAGS)


class TenantsQuery(BaseModel):
    q: str = Field("", max_length=200)
    limit: int = Field(50, ge=1, le=200)


class AuditQuery(BaseModel):
    tenant_id: uuid.UUID | None = None
    limit: int = Field(100, ge=1, le=500)


class PlanIn(BaseModel):
    plan: str = Field(min_length=1, max_length=40, pattern=r"^[a-z_]+$")
    interval: Literal["month", "year"] = "month"


class LimitsIn(BaseModel):
    """Overrides: null inherits the plan, 0 is unlimited."""

    model_config = ConfigDict(extra="forbid")
    max_chatbots: int | None = Field(default=None, ge=0)
    max_seats: int | None = Field(default=None, ge=0)
    max_open_conversations: int | None = Field(default=None, ge=0)
    msgs_per_min_chatbot: int | None = Field(default=None, ge=0)
    msgs_per_min_ip: int | None = Field(default=None, ge=0)
    msgs_per_min_tenant: int | None = Field(default=None, ge=0)
    msgs_per_min_conversation: int | None = Field(default=None, ge=0)
    api_requests_per_min: int | None = Field(default=None, ge=0)
    ai_msgs_per_day: int | None = Field(default=None, ge=0)
    included_conversations: int | None = Field(default=None, ge=0)
    included_ai_messages: int | None = Field(default=None, ge=0)
    retention_days: int | None = Field(default=None, ge=0)
    knowledge_pages: int | None = Field(default=None, ge=0)
    max_open_conversations_per_ip: int | None = Field(default=None, ge=0)
    conversations_per_min_chatbot: int | None = Field(default=None, ge=0)
    allow_hide_branding: bool | None = None
    note: str | None = Field(default=None, max_length=500)


class SuspendIn(BaseModel):
    reason: str = Field("", max_length=500)


def admin_emails(settings) -> list[str]:
    configured = settings.extra.get("admin_emails")
    if configured is None:
        configured = os.environ.get("PARLEY_ADMIN_EMAILS", "").split(",")
    return [e.strip().lower() for e in configured if e.strip()]


@asynccontextmanager
async def staff_transaction(pool, request: web.Request, user_id, session_id):
    """A cross-tenant staff transaction for a signed-in person (API or console): SQL checks they are staff first."""
    async with acquire(pool) as conn, conn.transaction():
        await conn.execute(
            "SELECT parley.begin_staff_request($1, $2, $3, $4)",
            user_id,
            session_id,
            client_ip(request),
            request.get(REQUEST_ID),
        )
        yield conn


def staff_in_tenant(pool, request: web.Request, tenant_id, user_id, session_id):
    """A tenant's transaction, acting as staff (begin_request checks staff and the session)."""
    return tenant_tx(
        pool,
        Actor(
            tenant_id=tenant_id,
            kind="staff",
            actor_id=str(user_id),
            session_id=session_id,
            ip=client_ip(request),
            request_id=request.get(REQUEST_ID),
            min_role="owner",
        ),
    )


def staff_tx(call: Call):
    """A cross-tenant staff transaction for an API call."""
    return staff_transaction(call.pool, call.request, call.user_id, call.session_id)


def in_tenant(call: Call):
    """The target tenant's transaction, as staff, for an API call."""
    return staff_in_tenant(call.pool, call.request, call.uuid_param("tenant_id"), call.user_id, call.session_id)


@staff_route("GET", "/api/staff/stats", summary="Installation-wide figures")
async def stats(call: Call):
    async with staff_tx(call) as conn:
        return await conn.fetchval("SELECT parley.staff_stats()")


@staff_route("GET", "/api/staff/tenants", query=TenantsQuery, summary="Find tenants")
async def find_tenants(call: Call):
    async with staff_tx(call) as conn:
        return {
            "tenants": await conn.fetchval("SELECT parley.staff_find_tenants($1, $2)", call.query.q, call.query.limit)
        }


@staff_route("GET", "/api/staff/audit", query=AuditQuery, summary="Audit trail across tenants")
async def audit(call: Call):
    async with staff_tx(call) as conn:
        return {
            "events": await conn.fetchval("SELECT parley.staff_audit($1, $2)", call.query.tenant_id, call.query.limit)
        }


@tenant_route("POST", "/plan", body=PlanIn, summary="Assign a plan (the same plan change the webhook makes)")
async def assign_plan(call: Call):
    async with in_tenant(call) as conn:
        return await conn.fetchval(
            "SELECT parley.change_plan($1, 'staff', $2)",
            call.body.plan,
            {"provider": "staff", "status": "active", "interval": call.body.interval},
        )


@tenant_route("POST", "/limits", body=LimitsIn, summary="Set per-tenant limit overrides (null inherits, 0 unlimited)")
async def set_limits(call: Call):
    async with in_tenant(call) as conn:
        return await conn.fetchval("SELECT parley.staff_set_limits($1)", call.body.model_dump(exclude_unset=True))


async def _suspended(call: Call, suspended: bool) -> dict:
    async with in_tenant(call) as conn:
        return {"suspended_at": await conn.fetchval("SELECT parley.staff_suspend($1, $2)", suspended, call.body.reason)}


@tenant_route("POST", "/suspend", body=SuspendIn, summary="Suspend a tenant (data kept)")
async def suspend(call: Call):
    return await _suspended(call, True)


@tenant_route("POST", "/unsuspend", body=SuspendIn, summary="Lift a suspension")
async def unsuspend(call: Call):
    return await _suspended(call, False)


@tenant_route(
    "DELETE",
    "",
    status=204,
    summary="Delete a tenant (purged after the grace period; its owners can restore it until then)",
)
async def delete_tenant(call: Call):
    """The owners' own deletion (parley.delete_tenant), as staff: the purge job deletes its rows after the grace."""
    async with in_tenant(call) as conn:
        await conn.execute("SELECT parley.delete_tenant()")


def setup(app: web.Application) -> None:
    async def sync(app: web.Application):
        await app[POOL].fetchval("SELECT parley.sync_staff_emails($1)", admin_emails(app[SETTINGS]))

    app.on_startup.append(sync)
