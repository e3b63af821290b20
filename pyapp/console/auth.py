"""Sign-in, sign-up, sign-out, workspaces, password reset, invite landing, and the realtime token."""

from __future__ import annotations

import re
import uuid

from aiohttp import web
from pydantic import ValidationError

from pyapp.console import accounts_bridge as accounts
from pyapp.console import session as sess
from pyapp.console.web import (
    Ctx,
    error_response,
    form_errors,
    json_ok,
    page,
    public_page,
    redirect,
    render,
    render_public,
)
from pyapp.errors import ApiError

_SAFE_NEXT = re.compile(r"^/console/[A-Za-z0-9/_\-.?=&%:+,~]*$")


def _next(value: str | None) -> str:
    value = (value or "").strip()
    if value == "/console" or (_SAFE_NEXT.match(value) and "//" not in value and "\\" not in value):
        return value
    return "/console/"


def _signed_in(ctx: Ctx, access: str, refresh: str, location: str) -> web.Response:
    response = redirect(location)
    sess.set_session_cookie(ctx.request, response, access, refresh)
    response.del_cookie(sess.PRE_COOKIE, path=sess.COOKIE_PATH)
    return response


@public_page("GET", "/console/sign-in")
async def sign_in_form(ctx: Ctx):
    nxt = _next(ctx.request.query.get("next"))
    if ctx.session is not None:
        return redirect(nxt)
    flash = {
        "signed_out": "You are signed out.",
        "reset": "Password changed; sign in with the new one.",
        "expired": "Your session has ended; sign in again.",
        "deleted": "Your account is deleted.",
    }.get(ctx.request.query.get("done", ""))
    return render_public(
        ctx, "sign_in.html", next=nxt, values={}, errors={}, flash=flash, providers=accounts.sso_providers(ctx.request)
    )


@public_page("POST", "/console/sign-in")
async def sign_in(ctx: Ctx):
    from pyapp.accounts.models import LoginIn

    nxt = _next(ctx.form.get("next"))
    values = {"email": str(ctx.form.get("email", ""))[:320]}
    try:
        body = LoginIn.model_validate({"email": ctx.form.get("email", ""), "password": ctx.form.get("password", "")})
    except ValidationError as exc:
        errors = form_errors(exc)
        errors = {k: ("Enter your email address." if k == "email" else "Enter your password.") for k in errors}
        return render_public(
            ctx,
            "sign_in.html",
            status=422,
            next=nxt,
            values=values,
            errors=errors,
            providers=accounts.sso_providers(ctx.request),
        )
    try:
        out = await accounts.sign_in(ctx.request, body.email, body.password)
    except ApiError as exc:
        if exc.status in (401, 429):
            return render_public(
                ctx,
                "sign_in.html",
                status=exc.status,
                next=nxt,
                values=values,
                errors={"__all__": exc.message, "password": " "},
                providers=accounts.sso_providers(ctx.request),
            )
        raise
    location = nxt if out.tenant is not None or nxt.startswith("/console/accept-invite") else "/console/workspaces"
    return _signed_in(ctx, out.access_token, out.refresh_token, location)


@public_page("GET", "/console/sign-up")
async def sign_up_form(ctx: Ctx):
    if ctx.session is not None:
        return redirect("/console/")
    return render_public(
        ctx,
        "sign_up.html",
        values={"ref": str(ctx.request.query.get("ref", ""))[:64]},
        errors={},
        next=_next(ctx.request.query.get("next")) if ctx.request.query.get("next") else "",
    )


@public_page("POST", "/console/sign-up")
async def sign_up(ctx: Ctx):
    from pyapp.accounts.models import SignupIn

    nxt = _next(ctx.form.get("next")) if ctx.form.get("next") else ""
    values = {k: str(ctx.form.get(k, ""))[:320] for k in ("email", "name", "tenant_name", "slug", "ref")}
    data = {
        "email": ctx.form.get("email", ""),
        "password": ctx.form.get("password", ""),
        "name": ctx.form.get("name", ""),
        "ref": str(ctx.form.get("ref") or "")[:64] or None,
    }
    if not nxt or ctx.form.get("tenant_name") or ctx.form.get("slug"):
        data["tenant_name"] = ctx.form.get("tenant_name") or None
        data["slug"] = (ctx.form.get("slug") or "").strip().lower() or None
    errors: dict = {}
    if not nxt and not data.get("tenant_name"):
        errors["tenant_name"] = "Name your workspace."
    if not nxt and not data.get("slug"):
        errors["slug"] = "Choose an address: 2-63 lower-case letters, digits or dashes."
    try:
        body = SignupIn.model_validate(data)
    except ValidationError as exc:
        errors = {**form_errors(exc), **errors}
        body = None
    if errors:
        if "slug" in errors:
            errors["slug"] = "Choose an address: 2-63 lower-case letters, digits or dashes."
        if "password" in errors:
            errors["password"] = "At least 8 characters."
        if errors.keys() - {"__all__"}:
            errors.pop("__all__", None)  # a field error says it better
        return render_public(ctx, "sign_up.html", status=422, values=values, errors=errors, next=nxt)
    try:
        out = await accounts.sign_up(ctx.request, body)
    except ApiError as exc:
        field = {"email_taken": "email", "slug_taken": "slug"}.get(exc.code, "__all__")
        if exc.status >= 500:
            raise
        return render_public(
            ctx, "sign_up.html", status=exc.status, values=values, errors={field: exc.message}, next=nxt
        )
    location = nxt or ("/console/onboarding" if out.tenant is not None else "/console/workspaces")
    return _signed_in(ctx, out.access_token, out.refresh_token, location)


@page("POST", "/console/sign-out", tx=False)
async def sign_out(ctx: Ctx):
    await accounts.sign_out(ctx.request, ctx.session)
    ctx.signed_in.renewed = False
    response = redirect("/console/sign-in?done=signed_out")
    sess.clear_session_cookie(ctx.request, response)
    return response


@page("GET", "/console/workspaces", tx=False)
async def workspaces(ctx: Ctx):
    tenants = await accounts.my_tenants(ctx.request, ctx.session)
    deleted = await deleted_workspaces(ctx)
    return render(ctx.request, "workspaces.html", ctx=ctx, tenants=tenants, deleted=deleted, current=ctx.tenant_id)


@page("POST", "/console/workspaces/switch", tx=False)
async def switch_workspace(ctx: Ctx):
    return await enter_workspace(ctx, ctx.form_uuid("tenant_id", "No such workspace."))


async def enter_workspace(ctx: Ctx, tenant_id: uuid.UUID) -> web.Response:
    """Switch the session to a workspace (its rules in SQL) and open its inbox."""
    access = await accounts.switch(ctx.request, ctx.session, tenant_id)
    ctx.signed_in.renewed = False
    response = redirect("/console/inbox")
    sess.set_session_cookie(ctx.request, response, access, ctx.signed_in.refresh_token)
    return response


@page("POST", "/console/workspaces/restore", tx=False)
async def restore_workspace(ctx: Ctx):
    """Cancel a workspace's deletion during its grace (owners of it), then work in it."""
    from pyapp.gdpr import routes

    tenant_id = ctx.form_uuid("tenant_id", "No such workspace.")
    call = accounts.session_call(ctx.request, ctx.session)
    call.request.match_info["tenant_id"] = str(tenant_id)
    await routes.restore_tenant(call)
    return await enter_workspace(ctx, tenant_id)


async def deleted_workspaces(ctx: Ctx) -> list:
    """Workspaces the person owns that are deleted but restorable (for the workspace list)."""
    from pyapp.gdpr import routes

    return list((await routes.deleted_tenants(accounts.session_call(ctx.request, ctx.session))).tenants)


@page("POST", "/console/session/token", tx=False)
async def realtime_token(ctx: Ctx):
    """The current access token, for the /ws/agent hello (the cookie itself is HttpOnly)."""
    if ctx.tenant_id is None:
        raise ApiError(409, "no_tenant", "Choose a workspace first.")
    return json_ok({"token": ctx.signed_in.access_token, "expires_at": sess.token_exp(ctx.signed_in.access_token)})


# ------------------------------------------------------------------ password reset, invites


@public_page("GET", "/console/forgot-password")
async def forgot_form(ctx: Ctx):
    return render_public(ctx, "forgot.html", values={}, errors={}, sent=False)


@public_page("POST", "/console/forgot-password")
async def forgot(ctx: Ctx):
    from pyapp.accounts.models import ForgotIn

    values = {"email": str(ctx.form.get("email", ""))[:320]}
    try:
        body = ForgotIn.model_validate({"email": ctx.form.get("email", "")})
    except ValidationError:
        return render_public(
            ctx, "forgot.html", status=422, values=values, errors={"email": "Enter your email address."}, sent=False
        )
    try:
        await accounts.forgot(ctx.request, body.email)
    except ApiError as exc:
        if exc.status != 429:
            raise
        return render_public(ctx, "forgot.html", status=429, values=values, errors={"__all__": exc.message}, sent=False)
    return render_public(ctx, "forgot.html", values=values, errors={}, sent=True)


@public_page("GET", "/console/reset-password")
async def reset_form(ctx: Ctx):
    return render_public(ctx, "reset.html", token=ctx.request.query.get("token", ""), errors={})


@public_page("POST", "/console/reset-password")
async def reset(ctx: Ctx):
    from pyapp.accounts.models import ResetIn

    token = str(ctx.form.get("token", ""))
    password, confirm = str(ctx.form.get("password", "")), str(ctx.form.get("confirm", ""))
    errors: dict = {}
    try:
        ResetIn.model_validate({"token": token, "password": password})
    except ValidationError as exc:
        errors = {
            k: ("At least 8 characters." if k == "password" else "This link is not valid.") for k in form_errors(exc)
        }
    if password and confirm != password:
        errors.setdefault("confirm", "The two passwords differ.")
    if errors:
        if "token" in errors:
            errors["__all__"] = errors.pop("token")
        return render_public(ctx, "reset.html", status=422, token=token, errors=errors)
    try:
        await accounts.reset(ctx.request, token, password)
    except ApiError as exc:
        if exc.status >= 500:
            raise
        return render_public(
            ctx,
            "reset.html",
            status=exc.status,
            token=token,
            errors={"__all__": "This reset link is invalid or has expired. Ask for a new one."},
        )
    response = redirect("/console/sign-in?done=reset")
    sess.clear_session_cookie(ctx.request, response)
    return response


@public_page("GET", "/console/accept-invite")
async def accept_invite_form(ctx: Ctx):
    token = ctx.request.query.get("token", "")
    here = f"/console/accept-invite?token={token}"
    session_csrf = sess.csrf_token(ctx.request, ctx.signed_in.claims.session_id) if ctx.session else ""
    return render_public(
        ctx,
        "accept_invite.html",
        token=token,
        signed_in=ctx.session is not None,
        here=here,
        session_csrf=session_csrf,
        errors={},
    )


@page("POST", "/console/accept-invite", tx=False)
async def accept_invite(ctx: Ctx):
    token = str(ctx.form.get("token", ""))[:512]
    try:
        joined = await accounts.accept_invite(ctx.request, ctx.session, token)
    except ApiError as exc:
        if exc.status >= 500:
            raise
        return error_response(ctx.request, ctx, exc.status, exc.code, exc.message)
    return await enter_workspace(ctx, joined.tenant.id)
