"""Inside one workspace: settings, deletion, invites, members, API keys, the audit trail.

Every handler runs in `call.tx()` (parley.begin_request: tenant, actor, role gate) and calls
one SECURITY INVOKER function, so row-level security confines it to the caller's tenant and
the role rules live in SQL. Surfaces that could hand over the account (keys, roles, invites,
settings, deletion) refuse API keys (`keys=False`).
"""

from __future__ import annotations

from pyapp.api import Call, api
from pyapp.security import new_api_key, new_opaque_token

from .common import send_now
from .models import (
    ApiKeyCreatedOut,
    ApiKeyIn,
    ApiKeyOut,
    ApiKeysOut,
    AuditOut,
    AuditQuery,
    InviteCreatedOut,
    InviteIn,
    InviteOut,
    InvitesOut,
    MemberOut,
    MemberPatch,
    MembersOut,
    SettingsIn,
    SettingsOut,
)
from .sessions import invite_link

# Running the workspace (settings, invites, roles, API keys): admins, from their own session, never an API key.
admin_route = api.group(min_role="admin", keys=False)


@admin_route("GET", "/api/settings", response=SettingsOut, tags=("tenants",))
async def get_settings(call: Call):
    """The workspace and its settings."""
    async with call.tx() as conn:
        return SettingsOut.model_validate(await conn.fetchval("SELECT parley.get_tenant_settings()"))


@admin_route("PUT", "/api/settings", body=SettingsIn, response=SettingsOut, tags=("tenants",))
async def put_settings(call: Call):
    """Rename the workspace and merge settings: given keys are set, null removes one, others are kept."""
    async with call.tx() as conn:
        result = await conn.fetchval("SELECT parley.put_tenant_settings($1, $2)", call.body.name, call.body.values)
    return SettingsOut.model_validate(result)


@api.route("DELETE", "/api/tenant", min_role="owner", keys=False, status=204, tags=("tenants",))
async def delete_tenant(call: Call):
    """Delete the workspace (owners only); every token and key for it stops working."""
    async with call.tx() as conn:
        await conn.execute("SELECT parley.delete_tenant()")


@admin_route("POST", "/api/invites", body=InviteIn, response=InviteCreatedOut, status=201, tags=("invites",))
async def create_invite(call: Call):
    """Invite someone by email (7 days, single use); `mail` says whether the email went out."""
    token, token_hash = new_opaque_token()
    async with call.tx() as conn:
        invite = await conn.fetchval(
            "SELECT parley.create_invite($1, $2, $3)", call.body.email, call.body.role, token_hash
        )
    workspace = invite.pop("tenant_name")
    url = invite_link(call, token)
    mail = await send_now(
        call,
        invite["email"],
        f"You are invited to {workspace} on Parley",
        f"You have been invited to join {workspace} on Parley as {invite['role']}.\n\n"
        f"Sign in (or create an account) with this email address, then open\n\n  {url}\n\n"
        f"The invitation works once and expires in 7 days.\n",
        url,
    )
    return InviteCreatedOut(**invite, token=token, accept_url=url, mail=mail)


@admin_route("GET", "/api/invites", response=InvitesOut, tags=("invites",))
async def list_invites(call: Call):
    """Invites of the workspace, newest first, with their status."""
    async with call.tx() as conn:
        return InvitesOut(invites=await conn.fetchval("SELECT parley.list_invites()"))


@admin_route("DELETE", "/api/invites/{invite_id}", response=InviteOut, tags=("invites",))
async def revoke_invite(call: Call):
    """Revoke a pending invite."""
    invite_id = call.uuid_param("invite_id")
    async with call.tx() as conn:
        return InviteOut.model_validate(await conn.fetchval("SELECT parley.revoke_invite($1)", invite_id))


@api.route("GET", "/api/members", response=MembersOut, tags=("members",))
async def list_members(call: Call):
    """Members of the workspace with their email, name and role."""
    async with call.tx() as conn:
        return MembersOut(members=await conn.fetchval("SELECT parley.list_members()"))


@admin_route("PATCH", "/api/members/{user_id}", body=MemberPatch, response=MemberOut, tags=("members",))
async def change_member_role(call: Call):
    """Change a member's role: only owners touch owners, nobody grants above their own role, one owner stays."""
    user_id = call.uuid_param("user_id")
    async with call.tx() as conn:
        member = await conn.fetchval("SELECT parley.change_member_role($1, $2)", user_id, call.body.role)
    return MemberOut.model_validate(member)


@api.route("DELETE", "/api/members/{user_id}", keys=False, status=204, tags=("members",))
async def remove_member(call: Call):
    """Remove a member (admins; owners for owners), or leave yourself; the last owner cannot go."""
    user_id = call.uuid_param("user_id")
    async with call.tx() as conn:
        await conn.execute("SELECT parley.remove_member($1)", user_id)


@admin_route("POST", "/api/keys", body=ApiKeyIn, response=ApiKeyCreatedOut, status=201, tags=("keys",))
async def create_api_key(call: Call):
    """Create an API key for this workspace; the key is shown once and stored only as a hash."""
    key, prefix, key_hash = new_api_key()
    async with call.tx() as conn:
        row = await conn.fetchval(
            "SELECT parley.create_api_key($1, $2, $3, $4, $5)",
            call.body.name,
            prefix,
            key_hash,
            list(call.body.scopes),
            call.body.expires_at,
        )
    return ApiKeyCreatedOut(**row, key=key)


@admin_route("GET", "/api/keys", response=ApiKeysOut, tags=("keys",))
async def list_api_keys(call: Call):
    """API keys of the workspace (never the keys themselves)."""
    async with call.tx() as conn:
        return ApiKeysOut(keys=await conn.fetchval("SELECT parley.list_api_keys()"))


@admin_route("DELETE", "/api/keys/{key_id}", response=ApiKeyOut, tags=("keys",))
async def revoke_api_key(call: Call):
    """Revoke an API key; it stops working at once."""
    key_id = call.uuid_param("key_id")
    async with call.tx() as conn:
        return ApiKeyOut.model_validate(await conn.fetchval("SELECT parley.revoke_api_key($1)", key_id))


@api.route("GET", "/api/audit", min_role="admin", query=AuditQuery, response=AuditOut, tags=("audit",))
async def list_audit(call: Call):
    """The workspace's audit trail, newest first; page with ?before=<next_before>."""
    q: AuditQuery = call.query
    async with call.tx() as conn:
        page = await conn.fetchval("SELECT parley.list_audit($1, $2, $3, $4)", q.before, q.limit, q.action, q.actor)
    return AuditOut.model_validate(page)
