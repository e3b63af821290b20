"""GDPR over REST: export (a zip, streamed), erase a visitor, restore a deleted workspace.

Admins and owners only, signed-in members (API keys cannot export or erase a workspace); SQL
re-checks the role (sql/66_gdpr.sql) and audits each export and erasure without the erased data.
"""

from __future__ import annotations

import uuid

from aiohttp import web
from pydantic import BaseModel, Field, model_validator

from pyapp.accounts.common import auth_tx
from pyapp.accounts.models import Email, Input, TenantOut
from pyapp.api import Call, api
from pyapp.context import REQUEST_ID

from .archive import archive_chunks, begin_export

TAGS = ("gdpr",)


class VisitorQuery(BaseModel):
    """Unknown query parameters are ignored (cache busters); give neither for the whole workspace."""

    conversation_id: uuid.UUID | None = Field(default=None, description="A conversation of the visitor.")
    email: Email | None = Field(default=None, description="The email address the visitor left in a lead form.")


class EraseIn(Input):
    conversation_id: uuid.UUID | None = Field(default=None, description="A conversation of the visitor.")
    email: Email | None = Field(default=None, description="The email address the visitor left in a lead form.")

    @model_validator(mode="after")
    def _one_visitor(self):
        if self.conversation_id is None and self.email is None:
            raise ValueError("name the visitor by conversation_id or email")
        return self


class ErasedOut(BaseModel):
    conversations: int = Field(description="Conversations kept, with every personal field cleared.")
    messages: int
    leads: int
    feedback: int = Field(description="Thumbs and ratings deleted.")
    by: str


class DeletedTenant(BaseModel):
    id: uuid.UUID
    slug: str
    name: str
    deleted_at: str
    purge_after: str = Field(description="When its data is purged for good; restorable until then.")


class DeletedTenantsOut(BaseModel):
    tenants: list[DeletedTenant]


def zip_response(filename: str, request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Disposition": f'attachment; filename="{filename}"'})
    response.content_type = "application/zip"
    response.enable_chunked_encoding()
    if REQUEST_ID in request:
        response.headers["X-Request-Id"] = request[REQUEST_ID]
    return response


@api.route("GET", "/api/gdpr/export", min_role="admin", keys=False, query=VisitorQuery, tags=TAGS)
async def export(call: Call):
    """A zip of CSV files: one visitor's data (by conversation or email), or the whole workspace's
    (conversations, messages, leads, feedback, knowledge sources, audit). Streamed; audited."""
    q: VisitorQuery = call.query
    async with call.tx() as conn:
        scope = await begin_export(conn, q.conversation_id, q.email)
        response = zip_response(f"parley-{scope['scope']}-export.zip", call.request)
        await response.prepare(call.request)
        async for chunk in archive_chunks(conn, scope):
            if chunk:
                await response.write(chunk)
    await response.write_eof()
    return response


@api.route("POST", "/api/gdpr/erase", min_role="admin", keys=False, body=EraseIn, response=ErasedOut, tags=TAGS)
async def erase(call: Call):
    """Erase a visitor: messages, leads, feedback go; their conversations stay without personal fields."""
    async with call.tx() as conn:
        result = await conn.fetchval(
            "SELECT parley.gdpr_erase_visitor($1, $2)", call.body.conversation_id, call.body.email
        )
    return ErasedOut.model_validate(result)


@api.route("GET", "/api/tenants/deleted", auth="user", response=DeletedTenantsOut, tags=("tenants",))
async def deleted_tenants(call: Call):
    """Workspaces you own that were deleted and can still be restored, with when they are purged."""
    async with auth_tx(call, signed_in=True) as conn:
        return DeletedTenantsOut(tenants=await conn.fetchval("SELECT parley.list_my_deleted_tenants()"))


@api.route("POST", "/api/tenants/{tenant_id}/restore", auth="user", response=TenantOut, tags=("tenants",))
async def restore_tenant(call: Call):
    """Cancel a workspace's deletion during its grace period (owners of it)."""
    tenant_id = call.uuid_param("tenant_id")
    async with auth_tx(call, signed_in=True) as conn:
        return TenantOut.model_validate(await conn.fetchval("SELECT parley.restore_tenant($1)", tenant_id))
