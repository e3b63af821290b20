"""Your account (/console/account): profile, e-mail verification, password, leaving the workspace,
deleting the account; and the verification link's landing page.

Every write goes through the accounts handlers (pyapp.accounts.profile, .workspace), so tokens are
minted, mailed and audited in one place and the rules (sole owner, backoff) stay in SQL.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import ValidationError

from pyapp.console import accounts_bridge as accounts
from pyapp.console import session as sess
from pyapp.console.web import Ctx, form_errors, page, public_page, redirect, render, render_public
from pyapp.errors import ApiError

_DONE = {
    "profile": "Profile saved.",
    "verification": "A new verification link is on its way; it works once, for 24 hours.",
    "left": "You left the workspace.",
    "sso_linked": "The identity is linked: you can sign in with it.",
    "sso_unlinked": "The identity is unlinked.",
    "sso_required": "This workspace now requires single sign-on.",
    "sso_optional": "This workspace no longer requires single sign-on.",
}


async def _account_page(ctx: Ctx, *, status: int = 200, errors: dict | None = None, flash: str | None = None):
    from pyapp.console.sso import panel

    me = await accounts.me(ctx.request, ctx.session)
    return render(
        ctx.request,
        "account.html",
        status=status,
        ctx=ctx,
        me=me,
        sso=await panel(ctx),
        errors=errors or {},
        flash=flash or _DONE.get(ctx.request.query.get("done", "")),
    )


def _refusal(exc: ApiError) -> str:
    if exc.status >= 500:
        raise exc
    return exc.message


@page("GET", "/console/account", tx=False)
async def account(ctx: Ctx):
    return await _account_page(ctx)


@page("POST", "/console/account/profile", tx=False)
async def save_profile(ctx: Ctx):
    from pyapp.accounts.models import ProfileIn

    data = {"name": str(ctx.form.get("name", ""))}
    new_email = str(ctx.form.get("email", "")).strip()
    me = await accounts.me(ctx.request, ctx.session)
    if new_email and new_email.lower() != me.user.email.lower():
        data["email"] = new_email
    try:
        body = ProfileIn.model_validate(data)
    except ValidationError as exc:
        errors = {
            k: ("Enter a valid email address." if k == "email" else "One line, at most 200 characters.")
            for k in form_errors(exc)
        }
        return await _account_page(ctx, status=422, errors=errors)
    try:
        out = await accounts.account_call(ctx.request, ctx.session, "update_profile", body=body)
    except ApiError as exc:
        return await _account_page(ctx, status=exc.status, errors={"email": _refusal(exc)})
    if out.pending_email:
        return await _account_page(
            ctx, flash=f"Profile saved. Open the link we sent to {out.pending_email} to make it your email address."
        )
    return redirect("/console/account?done=profile")


@page("POST", "/console/account/verification", tx=False)
async def resend_verification(ctx: Ctx):
    try:
        await accounts.account_call(ctx.request, ctx.session, "resend_verification")
    except ApiError as exc:
        return await _account_page(ctx, status=exc.status, errors={"verification": _refusal(exc)})
    return redirect("/console/account?done=verification")


@page("POST", "/console/account/password", tx=False)
async def change_password(ctx: Ctx):
    from pyapp.accounts.models import PasswordChangeIn

    current, new, confirm = (str(ctx.form.get(k, "")) for k in ("current_password", "new_password", "confirm"))
    errors: dict = {}
    try:
        body = PasswordChangeIn.model_validate({"current_password": current, "new_password": new})
    except ValidationError as exc:
        errors = {
            k: ("At least 8 characters." if k == "new_password" else "Enter your current password.")
            for k in form_errors(exc)
        }
    if new and confirm != new:
        errors.setdefault("confirm", "The two passwords differ.")
    if errors:
        return await _account_page(ctx, status=422, errors=errors)
    try:
        out = await accounts.account_call(ctx.request, ctx.session, "change_password", body=body)
    except ApiError as exc:
        return await _account_page(ctx, status=exc.status, errors={"current_password": _refusal(exc)})
    ended = out.sessions_ended
    return await _account_page(
        ctx, flash=f"Password changed. {ended} other session{'' if ended == 1 else 's'} signed out."
    )


@page("POST", "/console/account/leave", tx=False)
async def leave_workspace(ctx: Ctx):
    """Leave the current workspace (the sole-owner rule in SQL may refuse)."""
    if ctx.tenant_id is None:
        return redirect("/console/workspaces")
    ctx.request.match_info["user_id"] = str(ctx.user_id)  # remove_member reads the member from the path
    try:
        await accounts.workspace_call(ctx.request, ctx.session, "remove_member", min_role="agent")
    except ApiError as exc:
        return await _account_page(ctx, status=exc.status, errors={"leave": _refusal(exc)})
    return redirect("/console/workspaces")


@page("POST", "/console/account/delete", tx=False)
async def delete_account(ctx: Ctx):
    from pyapp.accounts.models import DeleteAccountIn

    try:
        body = DeleteAccountIn.model_validate({"password": str(ctx.form.get("password", ""))})
    except ValidationError:
        return await _account_page(ctx, status=422, errors={"delete": "Enter your password to delete your account."})
    try:
        await accounts.account_call(ctx.request, ctx.session, "delete_account", body=body)
    except ApiError as exc:
        return await _account_page(ctx, status=exc.status, errors={"delete": _refusal(exc)})
    ctx.signed_in.renewed = False
    response = redirect("/console/sign-in?done=deleted")
    sess.clear_session_cookie(ctx.request, response)
    return response


@public_page("GET", "/console/verify-email")
async def verify_form(ctx: Ctx):
    """The emailed link lands here; a button confirms (so a mail scanner's GET uses nothing up)."""
    return render_public(ctx, "verify_email.html", token=ctx.request.query.get("token", ""), verified=None, errors={})


@public_page("POST", "/console/verify-email")
async def verify(ctx: Ctx) -> web.StreamResponse:
    token = str(ctx.form.get("token", ""))[:512]
    try:
        user = await accounts.verify_email(ctx.request, token)
    except (ApiError, ValidationError) as exc:
        message = exc.message if isinstance(exc, ApiError) and exc.status < 500 else "This link is not valid."
        if isinstance(exc, ApiError) and exc.status >= 500:
            raise
        return render_public(
            ctx, "verify_email.html", status=400, token=token, verified=None, errors={"__all__": message}
        )
    return render_public(ctx, "verify_email.html", token="", verified=user.email, errors={})
