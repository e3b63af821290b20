"""The console's way into the accounts surface: its handlers, called with a console-built `Call`.

Sign-in, refresh rotation, sign-out, switching and invites stay implemented once (in
pyapp.accounts and sql/22_sessions.sql); the console only carries the tokens in its cookie.
"""

from __future__ import annotations

import contextlib
import uuid

from aiohttp import web

from pyapp.api import Call
from pyapp.context import REQUEST_ID, client_ip
from pyapp.db import Actor
from pyapp.errors import ApiError


def _call(request: web.Request, body=None, *, session=None, min_role: str = "agent", query=None) -> Call:
    call = Call(request=request, body=body, query=query)
    if session is not None:
        claims = session.claims
        call.user_id = claims.user_id
        call.session_id = claims.session_id
        if claims.tenant_id:
            call.actor = Actor(
                tenant_id=claims.tenant_id,
                kind="user",
                actor_id=str(claims.user_id),
                session_id=claims.session_id,
                ip=client_ip(request),
                request_id=request.get(REQUEST_ID),
                min_role=min_role,
            )
    return call


async def sign_in(request: web.Request, email: str, password: str):
    """AuthOut (access + refresh token, user, tenant); raises ApiError 401/429 on failure."""
    from pyapp.accounts import sessions
    from pyapp.accounts.models import LoginIn

    return await sessions.log_in(_call(request, LoginIn(email=email, password=password)))


async def sign_up(request: web.Request, body):
    from pyapp.accounts import sessions

    return await sessions.sign_up(_call(request, body))


async def refresh(request: web.Request, refresh_token: str) -> tuple[str, str] | None:
    """A rotated (access, refresh) pair, or None when the session is over."""
    from pyapp.accounts import sessions
    from pyapp.accounts.models import RefreshIn

    try:
        out = await sessions.refresh_session(_call(request, RefreshIn(refresh_token=refresh_token)))
    except ApiError:
        return None
    return out.access_token, out.refresh_token


async def sign_out(request: web.Request, session) -> None:
    from pyapp.accounts import sessions
    from pyapp.accounts.models import LogoutIn

    with contextlib.suppress(ApiError):  # already over
        await sessions.log_out(_call(request, LogoutIn(everywhere=False), session=session))


async def my_tenants(request: web.Request, session) -> list:
    from pyapp.accounts import sessions

    out = await sessions.list_tenants(_call(request, session=session))
    return list(out.tenants)


async def switch(request: web.Request, session, tenant_id: uuid.UUID) -> str:
    """A new access token for another workspace (the session's refresh token keeps working there)."""
    from pyapp.accounts import sessions
    from pyapp.accounts.models import SwitchIn

    out = await sessions.switch_tenant(_call(request, SwitchIn(tenant_id=tenant_id), session=session))
    return out.access_token


async def accept_invite(request: web.Request, session, token: str):
    from pyapp.accounts import sessions
    from pyapp.accounts.models import AcceptIn

    return await sessions.accept_invite(_call(request, AcceptIn(token=token), session=session))


async def forgot(request: web.Request, email: str) -> None:
    from pyapp.accounts import sessions
    from pyapp.accounts.models import ForgotIn

    await sessions.forgot_password(_call(request, ForgotIn(email=email)))


async def reset(request: web.Request, token: str, password: str) -> None:
    from pyapp.accounts import sessions
    from pyapp.accounts.models import ResetIn

    await sessions.reset_password(_call(request, ResetIn(token=token, password=password)))


async def workspace_call(
    request: web.Request, session, handler: str, *, body=None, query=None, min_role: str = "admin"
):
    """Run one of pyapp.accounts.workspace's handlers (invites, members, keys, settings, audit).

    Path parameters (user_id, invite_id, key_id) are the console route's own, same names."""
    from pyapp.accounts import workspace

    call = _call(request, body, session=session, min_role=min_role, query=query)
    return await getattr(workspace, handler)(call)


async def account_call(request: web.Request, session, handler: str, *, body=None):
    """Run one of pyapp.accounts.profile's handlers (profile, verification, password, deletion) as the session's person."""
    from pyapp.accounts import profile

    return await getattr(profile, handler)(_call(request, body, session=session))


async def verify_email(request: web.Request, token: str):
    from pyapp.accounts import profile
    from pyapp.accounts.models import VerifyIn

    return await profile.verify_email(_call(request, VerifyIn(token=token)))


async def me(request: web.Request, session):
    from pyapp.accounts import sessions

    return await sessions.get_me(_call(request, session=session))


def session_call(request: web.Request, session) -> Call:
    """A handler call as the session's person (for handlers in other packages: GDPR restore)."""
    return _call(request, session=session)


def sso_providers(request: web.Request) -> list:
    """The identity providers on offer, as (id, label) objects, for the sign-in and account pages."""
    from pyapp.accounts import sso

    return list(request.app[sso.OIDC_PROVIDERS].values())


async def sso_call(request: web.Request, session, handler: str, *, body=None, min_role: str = "agent"):
    """Run one of pyapp.accounts.sso's handlers (identities, the workspace's require-SSO switch)."""
    from pyapp.accounts import sso

    return await getattr(sso, handler)(_call(request, body, session=session, min_role=min_role))


async def sso_start(request: web.Request, session, provider_id: str, *, next_path: str, link: bool):
    """(authorization URL, browser binding) for a sign-in, or for linking an identity to the session's person."""
    from pyapp.accounts import sso

    call = _call(request, session=session)
    return await sso.start(call, sso.provider_of(request, provider_id), next_path=next_path, link=link)


async def sso_finish(request: web.Request, provider_id: str, *, code: str, state: str, binding: str):
    from pyapp.accounts import sso

    provider = sso.provider_of(request, provider_id)
    return await sso.finish(_call(request), provider, code=code, state=state, binding=binding)
