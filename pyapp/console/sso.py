"""Single sign-on pages: "Sign in with <provider>" (/console/sso/{provider}), the provider's
return (/console/sso/{provider}/callback), linking and unlinking identities from the account
page, and the owners' "require SSO" switch.

A sign-in is tied to the browser that started it by a short-lived cookie (scoped to
/console/sso) whose hash SQL keeps with the state. Starting a link is a GET (a form POST that
redirects to another origin would break the console's form-action policy), so it carries the
session's CSRF token in the query instead.
"""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from pyapp.console import accounts_bridge as accounts
from pyapp.console import session as sess
from pyapp.console.auth import _next, _signed_in
from pyapp.console.web import Ctx, page, public_page, redirect, render_public
from pyapp.errors import ApiError

BINDING_COOKIE = "parley_sso"
BINDING_PATH = "/console/sso"


def _to_provider(request: web.Request, url: str, binding: str) -> web.Response:
    response = web.Response(status=303, headers={"Location": url, "Cache-Control": "no-store"})
    response.set_cookie(
        BINDING_COOKIE, binding, path=BINDING_PATH, httponly=True, secure=sess.is_https(request),
        samesite="Lax", max_age=600,
    )  # fmt: skip
    return response


def _sign_in_again(ctx: Ctx, status: int, message: str) -> web.Response:
    return render_public(
        ctx, "sign_in.html", status=status, next="/console/", values={}, errors={"__all__": message},
        providers=accounts.sso_providers(ctx.request),
    )  # fmt: skip


@public_page("GET", "/console/sso/{provider}")
async def start(ctx: Ctx):
    """Sign in (or, with ?link=1 and the session's CSRF token, link) with an identity provider."""
    request = ctx.request
    provider = request.match_info["provider"]
    link = request.query.get("link") == "1"
    if link:
        if ctx.session is None:
            return redirect("/console/sign-in?next=/console/account")
        if not sess.csrf_ok(request, ctx.session.claims.session_id, request.query.get("csrf")):
            raise ApiError(403, "csrf_failed", "This link has expired. Reload the account page and try again.")
        next_path = "/console/account"
    else:
        next_path = _next(request.query.get("next"))
    url, binding = await accounts.sso_start(request, ctx.session, provider, next_path=next_path, link=link)
    return _to_provider(request, url, binding)


@public_page("GET", "/console/sso/{provider}/callback")
async def callback(ctx: Ctx):
    request = ctx.request
    query = request.query
    if "error" in query:  # the person said no, or the provider refused (RFC 6749 §4.1.2.1)
        reason = str(query.get("error_description") or query.get("error"))[:200]
        return _sign_in_again(ctx, 401, f"The identity provider did not sign you in: {reason}")
    code, state = query.get("code", ""), query.get("state", "")
    binding = request.cookies.get(BINDING_COOKIE, "")
    if not code or not state or not binding or len(code) > 2048 or len(state) > 256:
        return _sign_in_again(
            ctx, 400, "This sign-in link is incomplete or was opened in another browser; start again."
        )
    try:
        done = await accounts.sso_finish(
            request, request.match_info["provider"], code=code, state=state, binding=binding
        )
    except ApiError as exc:
        if exc.status == 404:
            raise
        return _sign_in_again(ctx, exc.status, exc.message)
    if done.outcome == "linked":
        response = redirect("/console/account?done=sso_linked")
    else:
        assert done.auth is not None
        location = done.next_path if done.auth.tenant is not None else "/console/workspaces"
        response = _signed_in(ctx, done.auth.access_token, done.auth.refresh_token, location)
    response.del_cookie(BINDING_COOKIE, path=BINDING_PATH)
    return response


def link_url(ctx: Ctx, provider_id: str) -> str:
    """The account page's "Link" button: starts a link flow carrying the session's CSRF token."""
    token = sess.csrf_token(ctx.request, ctx.signed_in.claims.session_id)
    return f"/console/sso/{quote(provider_id)}?link=1&csrf={quote(token)}"


async def panel(ctx: Ctx) -> dict:
    """What the account page shows about single sign-on."""
    providers = accounts.sso_providers(ctx.request)
    if not providers:
        return {"providers": []}
    identities = (await accounts.sso_call(ctx.request, ctx.session, "list_identities")).identities
    linked = {i.provider for i in identities}
    require = None
    if ctx.tenant_id is not None:
        try:
            require = await accounts.sso_call(ctx.request, ctx.session, "get_require_sso", min_role="admin")
        except ApiError as exc:
            if exc.status != 403:
                raise
    return {
        "providers": [
            {"id": p.id, "label": p.label, "linked": p.id in linked, "link_url": link_url(ctx, p.id)} for p in providers
        ],
        "identities": identities,
        "require": require,
    }


@page("POST", "/console/account/sso/{provider}/unlink", tx=False)
async def unlink(ctx: Ctx):
    await accounts.sso_call(ctx.request, ctx.session, "unlink_identity")
    return redirect("/console/account?done=sso_unlinked")


@page("POST", "/console/account/sso/require", tx=False)
async def require(ctx: Ctx):
    from pyapp.accounts.sso import RequireSsoIn

    body = RequireSsoIn(required=ctx.form.get("required") == "1")
    await accounts.sso_call(ctx.request, ctx.session, "put_require_sso", body=body, min_role="owner")
    return redirect("/console/account?done=sso_required" if body.required else "/console/account?done=sso_optional")
