"""Admin pages: team (members, roles, invites), API keys, audit log, workspace settings.

Reads call the accounts SQL functions inside the page's transaction (begin_request already
refused anyone below admin); writes go through the accounts handlers, so tokens and keys
are minted, hashed, mailed and audited in one place.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pydantic import ValidationError

from pyapp.console import accounts_bridge as accounts
from pyapp.console import queries
from pyapp.console.web import Ctx, button, done_flash, form_errors, form_int, json_ok, page, redirect
from pyapp.errors import ApiError

ROLES = ("agent", "admin", "owner")


async def _ws(ctx: Ctx, handler: str, **kw):
    """An accounts workspace handler (its refusals go to the error page)."""
    return await accounts.workspace_call(ctx.request, ctx.session, handler, **kw)


async def _attempt(ctx: Ctx, handler: str, **kw) -> tuple[Any, ApiError | None]:
    """An accounts workspace handler whose refusal (4xx) the page shows on its form: (its answer,
    None) or (None, the refusal); a fault (5xx) goes to the error page."""
    try:
        return await _ws(ctx, handler, **kw), None
    except ApiError as exc:
        if exc.status >= 500:
            raise
        return None, exc


# ---------------------------------------------------------------------------------- team


async def _team_page(ctx: Ctx, *, status=200, values=None, errors=None, created=None, flash=None, member_errors=None):
    members = await ctx.conn.fetchval("SELECT parley.list_members()")
    invites = [i for i in await ctx.conn.fetchval("SELECT parley.list_invites()") if i["status"] == "pending"]
    return ctx.render(
        "team.html",
        status=status,
        members=members,
        invites=invites,
        roles=ROLES,
        values=values or {"role": "agent"},
        errors=errors or {},
        created=created,
        member_errors=member_errors or {},
        flash=flash
        or done_flash(ctx, {"role": "Role changed.", "removed": "Member removed.", "revoked": "Invitation revoked."}),
    )


@page("GET", "/console/team", min_role="admin")
async def team(ctx: Ctx):
    return await _team_page(ctx)


@page("POST", "/console/team/invites", min_role="admin")
async def invite(ctx: Ctx):
    from pyapp.accounts.models import InviteIn

    values = {"email": str(ctx.form.get("email", ""))[:320], "role": str(ctx.form.get("role", "agent"))}
    try:
        body = InviteIn.model_validate(values)
    except ValidationError as exc:
        errors = form_errors(exc)
        if "email" in errors:
            errors["email"] = "Enter an email address."
        if "role" in errors:
            errors["role"] = "Choose agent, admin or owner."
        return await _team_page(ctx, status=422, values=values, errors=errors)
    created, refused = await _attempt(ctx, "create_invite", body=body)
    if refused:
        field = "role" if refused.status == 403 or "role" in refused.code else "email"
        return await _team_page(ctx, status=refused.status, values=values, errors={field: refused.message})
    flash = {
        "sent": f"Invitation sent to {created.email}.",
        "not_configured": f"The invitation to {created.email} was not emailed: this server has no mail server "
        "(SMTP) configured. Send them the link below yourself.",
        "failed": f"The invitation to {created.email} could not be emailed: the mail server refused it or did "
        "not answer. Send them the link below yourself.",
    }[created.mail]
    return await _team_page(ctx, values={"role": "agent"}, created=created, flash=flash)


@button("/console/team/invites/{invite_id}/revoke", "/console/team?done=revoked", min_role="admin")
async def revoke_invite(ctx: Ctx, _invite_id: uuid.UUID):
    await _ws(ctx, "revoke_invite")  # the handler reads invite_id from the path too


@page("POST", "/console/team/members/{user_id}/role", min_role="admin")
async def change_role(ctx: Ctx):
    from pyapp.accounts.models import MemberPatch

    user_id = ctx.uuid("user_id")
    try:
        body = MemberPatch.model_validate({"role": ctx.form.get("role")})
    except ValidationError:
        return await _team_page(ctx, status=422, member_errors={str(user_id): "Choose agent, admin or owner."})
    _, refused = await _attempt(ctx, "change_member_role", body=body)
    if refused:
        return await _team_page(ctx, status=refused.status, member_errors={str(user_id): refused.message})
    return redirect("/console/team?done=role")


@page("POST", "/console/team/members/{user_id}/remove", min_role="agent")
async def remove_member(ctx: Ctx):
    """Admins remove members; anyone may leave (the SQL rules decide)."""
    user_id = ctx.uuid("user_id")
    _, refused = await _attempt(ctx, "remove_member", min_role="agent")
    if refused and not ctx.at_least("admin"):
        raise refused  # someone leaving: the refusal's own page
    if refused:
        return await _team_page(ctx, status=refused.status, member_errors={str(user_id): refused.message})
    if user_id == ctx.user_id:
        return redirect("/console/workspaces")
    return redirect("/console/team?done=removed")


# ------------------------------------------------------------------------------ API keys


async def _keys_page(ctx: Ctx, *, status=200, values=None, errors=None, created=None, flash=None):
    keys = await ctx.conn.fetchval("SELECT parley.list_api_keys()")
    return ctx.render(
        "keys.html",
        status=status,
        keys=keys,
        values=values or {"scopes": ["read"]},
        errors=errors or {},
        created=created,
        flash=flash or done_flash(ctx, {"revoked": "API key revoked."}),
    )


@page("GET", "/console/keys", min_role="admin")
async def keys(ctx: Ctx):
    return await _keys_page(ctx)


@page("POST", "/console/keys", min_role="admin")
async def create_key(ctx: Ctx):
    from pyapp.accounts.models import ApiKeyIn

    scopes = ctx.form.get("scopes") or []
    scopes = [scopes] if isinstance(scopes, str) else list(scopes)
    expires_raw = str(ctx.form.get("expires_on", "")).strip()
    values = {"name": str(ctx.form.get("name", ""))[:100], "scopes": scopes, "expires_on": expires_raw}
    errors: dict = {}
    expires_at = None
    if expires_raw:
        try:
            day = dt.date.fromisoformat(expires_raw)
            expires_at = dt.datetime.combine(day, dt.time(23, 59, 59), dt.UTC)
            if day <= dt.date.today():
                errors["expires_on"] = "Choose a day after today."
        except ValueError:
            errors["expires_on"] = "Use a date like 2030-01-31."
    try:
        body = ApiKeyIn.model_validate({"name": values["name"], "scopes": scopes, "expires_at": expires_at})
    except ValidationError as exc:
        for k, v in form_errors(exc).items():
            errors.setdefault("scopes" if k.startswith("scopes") else k, v)
        if "name" in errors:
            errors["name"] = "Name the key (1-100 characters), e.g. the integration that uses it."
        if "scopes" in errors:
            errors["scopes"] = "Choose read, write or both."
        body = None
    if errors:
        return await _keys_page(ctx, status=422, values=values, errors=errors)
    created, refused = await _attempt(ctx, "create_api_key", body=body)
    if refused:
        return await _keys_page(ctx, status=refused.status, values=values, errors={"__all__": refused.message})
    return await _keys_page(ctx, created=created, flash="API key created. Copy it now: it is not shown again.")


@button("/console/keys/{key_id}/revoke", "/console/keys?done=revoked", min_role="admin")
async def revoke_key(ctx: Ctx, _key_id: uuid.UUID):
    await _ws(ctx, "revoke_api_key")  # the handler reads key_id from the path too


# ---------------------------------------------------------------------------------- audit


@page("GET", "/console/audit", min_role="admin")
async def audit(ctx: Ctx):
    q = ctx.request.query
    action = (q.get("action") or "").strip()[:100] or None
    actor = (q.get("actor") or "").strip()[:100] or None
    errors: dict = {}
    before = None
    if q.get("before"):
        try:
            before = int(q["before"])
            if before < 1:
                raise ValueError
        except ValueError:
            errors["before"] = "Not a valid page."
            before = None
    page_data = await ctx.conn.fetchval("SELECT parley.list_audit($1, $2, $3, $4)", before, 50, action, actor)
    actions = [r["action"] for r in await queries.fetch(ctx.conn, "audit_actions")]
    members = await queries.fetch(ctx.conn, "members")
    names = {str(m["user_id"]): m["display_name"] for m in members}
    from urllib.parse import urlencode

    keep = urlencode({k: v for k, v in (("action", action), ("actor", actor)) if v})
    return ctx.render(
        "audit.html",
        items=page_data["items"],
        next_before=page_data["next_before"],
        actions=actions,
        members=members,
        names=names,
        action=action,
        actor=actor,
        errors=errors,
        keep=keep,
    )


# ------------------------------------------------------------------------------- settings


IDLE_KEY = "conversations.idle_close"


async def _settings_page(ctx: Ctx, *, status=200, values=None, errors=None, flash=None):
    current = await ctx.conn.fetchval("SELECT parley.get_tenant_settings()")
    idle = (current["values"] or {}).get(IDLE_KEY) or {}
    if values is None:
        values = {
            "name": current["tenant"]["name"],
            "bot_minutes": idle.get("bot_minutes", ""),
            "human_minutes": idle.get("human_minutes", ""),
        }
    return ctx.render(
        "settings.html",
        status=status,
        tenant=current["tenant"],
        values=values,
        errors=errors or {},
        other=current["values"],
        flash=flash or done_flash(ctx, {"saved": "Settings saved."}),
    )


@page("GET", "/console/settings", min_role="admin")
async def settings_page(ctx: Ctx):
    return await _settings_page(ctx)


def _minutes(raw, field: str, errors: dict) -> int | None:
    return form_int(
        raw, field, 1, 43200, errors, what="Minutes, a whole number.", bounds="Between 1 minute and 30 days (43200)."
    )


@page("POST", "/console/settings", min_role="admin")
async def save_settings(ctx: Ctx):
    from pyapp.accounts.models import SettingsIn

    values = {k: str(ctx.form.get(k, ""))[:200] for k in ("name", "bot_minutes", "human_minutes")}
    errors: dict = {}
    bot = _minutes(values["bot_minutes"], "bot_minutes", errors)
    human = _minutes(values["human_minutes"], "human_minutes", errors)
    idle = {k: v for k, v in (("bot_minutes", bot), ("human_minutes", human)) if v is not None}
    try:
        body = SettingsIn.model_validate({"name": values["name"].strip(), "values": {IDLE_KEY: idle or None}})
    except ValidationError as exc:
        for k, v in form_errors(exc).items():
            errors.setdefault(k, "Give the workspace a name (1-200 characters)." if k == "name" else v)
        body = None
    if errors:
        return await _settings_page(ctx, status=422, values=values, errors=errors)
    await _ws(ctx, "put_settings", body=body)
    return redirect("/console/settings?done=saved")


@page("POST", "/console/settings/delete", min_role="owner")
async def delete_workspace(ctx: Ctx):
    current = await ctx.conn.fetchval("SELECT parley.get_tenant_settings()")
    if str(ctx.form.get("confirm", "")).strip() != current["tenant"]["slug"]:
        return await _settings_page(
            ctx, status=422, errors={"confirm": "Type the workspace address exactly to confirm."}
        )
    await _ws(ctx, "delete_tenant", min_role="owner")
    return redirect("/console/workspaces")


@page("GET", "/console/me", tx=True)
async def me(ctx: Ctx):
    """Who is signed in (for scripts and the header)."""
    row = await queries.fetchrow(ctx.conn, "me")
    return json_ok(
        {
            "user": dict(row) if row else None,
            "tenant_id": ctx.tenant_id,
            "role": ctx.role,
            "session_id": str(ctx.signed_in.claims.session_id),
        }
    )
