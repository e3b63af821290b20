"""Sign-up, sign-in, sessions, password reset, workspace switching, joining by invite.

These run before a tenant is chosen, so they call SECURITY DEFINER functions inside
`auth_tx`; the rules (throttle, lockout, rotation, reuse detection) are in sql/22_sessions.sql.
Outcomes that must be committed even though the client gets an error (a failed sign-in, a
reused refresh token) come back as a status and are raised here after the commit.
"""

from __future__ import annotations

import uuid

from pyapp.api import Call, api
from pyapp.errors import ApiError
from pyapp.security import new_opaque_token, sha256, successor_token

from .common import INVITE_PATH, RESET_PATH, access_token, auth_tx, link, passwords, send_later
from .models import (
    AcceptedOut,
    AcceptIn,
    AccessOut,
    AuthOut,
    ForgotIn,
    JoinedOut,
    LoginIn,
    LogoutIn,
    MeOut,
    RefreshIn,
    ResetIn,
    SignupIn,
    SwitchIn,
    TenantsOut,
    TenantsQuery,
)
from .profile import send_verification

TAGS = ("auth",)


def _auth_response(call: Call, session: dict, refresh_token: str) -> AuthOut:
    token, ttl = access_token(call, session)
    return AuthOut(
        access_token=token, refresh_token=refresh_token, expires_in=ttl, user=session["user"], tenant=session["tenant"]
    )


@api.route("POST", "/api/auth/signup", auth="public", body=SignupIn, response=AuthOut, status=201, tags=TAGS)
async def sign_up(call: Call):
    """Create an account, optionally with a new workspace (you become its owner), and sign in.

    A link to verify the email address is mailed; the account works before it is used."""
    body: SignupIn = call.body
    password_hash = await passwords(call).hash(body.password)
    refresh, refresh_hash = new_opaque_token()
    async with auth_tx(call) as conn:
        session = await conn.fetchval(
            "SELECT parley.sign_up($1, $2, $3, $4, $5, $6, $7)",
            body.email,
            password_hash,
            body.name,
            body.tenant_name,
            body.slug,
            refresh_hash,
            call.settings.refresh_token_ttl,
        )
        if body.ref and session["tenant"] is not None:
            await conn.execute("SELECT parley.attribute_referral($1, $2)", session["tenant"]["id"], body.ref)
    # Verification never blocks sign-in; the console shows a banner until the link is used.
    await send_verification(call, uuid.UUID(session["user"]["id"]), uuid.UUID(session["session_id"]))
    return _auth_response(call, session, refresh)


@api.route("POST", "/api/auth/login", auth="public", body=LoginIn, response=AuthOut, tags=TAGS)
async def log_in(call: Call):
    """Sign in with email and password; lands in the workspace used last."""
    body: LoginIn = call.body
    async with auth_tx(call) as conn:
        account = await conn.fetchrow("SELECT user_id, password_hash FROM parley.begin_sign_in($1)", body.email)
    password_hash = account["password_hash"] if account else None
    # Unknown emails are verified against a dummy hash: the same work, the same timing.
    ok = await passwords(call).verify(password_hash, body.password)
    refresh, refresh_hash = new_opaque_token()
    async with auth_tx(call) as conn:
        session = await conn.fetchval(
            "SELECT parley.finish_sign_in($1, $2, $3, $4, $5, $6)",
            body.email,
            account["user_id"] if account else None,
            password_hash,
            ok,
            refresh_hash,
            call.settings.refresh_token_ttl,
        )
    if session["status"] != "ok":
        raise ApiError(401, "invalid_credentials", "Wrong email or password.")
    return _auth_response(call, session, refresh)


@api.route("POST", "/api/auth/refresh", auth="public", body=RefreshIn, response=AuthOut, tags=TAGS)
async def refresh_session(call: Call):
    """Exchange a refresh token for a new access and refresh token (rotation; reuse ends the session).

    Parallel refreshes with one token within a few seconds all get the same new refresh token.
    """
    refresh, refresh_hash = successor_token(call.settings.secret_key, call.body.refresh_token)
    async with auth_tx(call) as conn:
        session = await conn.fetchval(
            "SELECT parley.rotate_session($1, $2, $3)",
            sha256(call.body.refresh_token),
            refresh_hash,
            call.settings.refresh_token_ttl,
        )
    if session["status"] == "reused":
        raise ApiError(401, "refresh_reused", "This refresh token was already used; the session has been ended.")
    if session["status"] != "ok":
        raise ApiError(401, "invalid_refresh_token", "The refresh token is invalid, revoked or expired.")
    return _auth_response(call, session, refresh)


@api.route("POST", "/api/auth/logout", auth="user", body=LogoutIn, status=204, tags=TAGS)
async def log_out(call: Call):
    """End this session (or every session with `everywhere`); its access tokens stop working at once."""
    async with auth_tx(call, signed_in=True) as conn:
        await conn.execute("SELECT parley.end_session($1)", call.body.everywhere)


@api.route("POST", "/api/auth/forgot", auth="public", body=ForgotIn, response=AcceptedOut, status=202, tags=TAGS)
async def forgot_password(call: Call):
    """Email a password-reset link if the account exists; the answer is the same either way."""
    token, token_hash = new_opaque_token()
    async with auth_tx(call) as conn:
        target = await conn.fetchval("SELECT parley.request_password_reset($1, $2)", call.body.email, token_hash)
    if target is not None:
        url = link(call, RESET_PATH, token)
        send_later(
            call,
            target["email"],
            "Reset your Parley password",
            f"Hello {target['name'] or target['email']},\n\n"
            f"Someone asked to reset the password of your Parley account. To choose a new one, open\n\n"
            f"  {url}\n\n"
            f"The link works once, for one hour. If it wasn't you, ignore this email.\n",
            url,
        )
    return AcceptedOut()


@api.route("POST", "/api/auth/reset", auth="public", body=ResetIn, status=204, tags=TAGS)
async def reset_password(call: Call):
    """Set a new password with an emailed reset token; every session of the account is ended."""
    password_hash = await passwords(call).hash(call.body.password)
    async with auth_tx(call) as conn:
        await conn.execute("SELECT parley.reset_password($1, $2)", sha256(call.body.token), password_hash)


@api.route("POST", "/api/auth/switch", auth="user", body=SwitchIn, response=AccessOut, tags=TAGS)
async def switch_tenant(call: Call):
    """A new access token for another workspace you belong to; the session (and refreshes) move there."""
    async with auth_tx(call, signed_in=True) as conn:
        session = await conn.fetchval("SELECT parley.switch_tenant($1)", call.body.tenant_id)
    token, ttl = access_token(call, session)
    return AccessOut(access_token=token, expires_in=ttl, user=session["user"], tenant=session["tenant"])


@api.route("GET", "/api/me", auth="user", response=MeOut, tags=TAGS)
async def get_me(call: Call):
    """Who the access token belongs to and which workspace it is for."""
    async with auth_tx(call, signed_in=True) as conn:
        me = await conn.fetchval("SELECT parley.get_me($1)", call.member.tenant_id if call.actor else None)
    return MeOut.model_validate(me)


@api.route("GET", "/api/tenants", auth="user", query=TenantsQuery, response=TenantsOut, tags=("tenants",))
async def list_tenants(call: Call):
    """The workspaces you belong to, with your role in each; with `ids`, those workspaces (a batch
    fetch for proxies that map chatbot → workspace → plan: staff any, others their own)."""
    try:
        ids = call.query.id_list() if call.query is not None else None  # the console asks without a query
    except ValueError as exc:
        raise ApiError(422, "invalid_ids", str(exc)) from None
    async with auth_tx(call, signed_in=True) as conn:
        if ids is None:
            tenants = await conn.fetchval("SELECT parley.list_my_tenants()")
        else:
            tenants = await conn.fetchval("SELECT parley.tenants_by_ids($1::uuid[])", ids)
    return TenantsOut(tenants=tenants)


@api.route("POST", "/api/invites/accept", auth="user", body=AcceptIn, response=JoinedOut, tags=("invites",))
async def accept_invite(call: Call):
    """Join a workspace with an invite token sent to your email address; then switch to it."""
    async with auth_tx(call, signed_in=True) as conn:
        joined = await conn.fetchval("SELECT parley.accept_invite($1)", sha256(call.body.token))
    return JoinedOut.model_validate(joined)


def invite_link(call: Call, token: str) -> str:
    return link(call, INVITE_PATH, token)
