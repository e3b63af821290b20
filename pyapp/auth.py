"""Who is calling: one way to turn a credential into an actor, for REST, `/ws/agent` and SSE.

A member presents either a person's access JWT (which names the tenant) or a tenant API key.
`resolve_member` checks what Python can check up front (signature and expiry of the JWT; the
key's hash, expiry, revocation and scopes through `parley.authenticate_api_key`), and returns the
actor. Whether the session is still alive and the person still a member with the route's role
is decided in SQL by `parley.begin_request`, which every tenant transaction runs first;
`check_member` runs it alone for streams that open no transaction of their own before they start.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from aiohttp import web

from pyapp.context import POOL, SETTINGS
from pyapp.db import Actor, tenant_tx
from pyapp.errors import ApiError
from pyapp.security import API_KEY_PREFIX, TokenError, decode_access_token, sha256


def no_tenant() -> ApiError:
    """A person's token that names no workspace, where a member of one is needed."""
    return ApiError(401, "no_tenant", "Choose a workspace first (POST /api/auth/switch).")


@dataclass(frozen=True)
class Credential:
    """A resolved caller: the actor in its tenant (None: a person who chose no workspace yet)."""

    actor: Actor | None
    user_id: uuid.UUID | None = None
    session_id: uuid.UUID | None = None
    scopes: tuple[str, ...] = ()

    @property
    def member(self) -> Actor:
        """The actor of a caller that must be in a workspace (resolve_member guarantees one)."""
        if self.actor is None:
            raise no_tenant()
        return self.actor


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return None


def resolve_user(
    app: web.Application,
    token: str | None,
    *,
    min_role: str = "agent",
    ip: str | None = None,
    request_id: str | None = None,
) -> Credential:
    """A signed-in person (access JWT); the tenant is optional (no actor without one)."""
    if not token or token.startswith(API_KEY_PREFIX):
        raise ApiError(401, "unauthenticated", "Sign in with a user access token.")
    try:
        claims = decode_access_token(app[SETTINGS].secret_key, token)
    except TokenError:
        raise ApiError(401, "invalid_token", "The access token is invalid or expired.") from None
    actor = None
    if claims.tenant_id:
        actor = Actor(
            tenant_id=claims.tenant_id,
            kind="user",
            actor_id=str(claims.user_id),
            session_id=claims.session_id,
            ip=ip,
            request_id=request_id,
            min_role=min_role,
        )
    return Credential(actor, claims.user_id, claims.session_id)


async def resolve_member(
    app: web.Application,
    token: str | None,
    *,
    scope: str = "read",
    min_role: str = "agent",
    keys: bool = True,
    ip: str | None = None,
    request_id: str | None = None,
) -> Credential:
    """A member of a tenant: a person's access JWT carrying a tenant, or a tenant API key with `scope`.

    Raises ApiError 401 (no, bad or revoked credential; no workspace chosen) or 403 (API keys
    not allowed here, or the key lacks the scope). The caller's first tenant transaction (or
    `check_member`) then lets SQL check the session and the role.
    """
    if token and token.startswith(API_KEY_PREFIX):
        if not keys:
            raise ApiError(403, "api_key_not_allowed", "API keys cannot use this endpoint; sign in as a person.")
        row = await app[POOL].fetchrow("SELECT * FROM parley.authenticate_api_key($1)", sha256(token))
        if row is None:
            raise ApiError(401, "invalid_api_key", "The API key is invalid, revoked or expired.")
        scopes = tuple(row["scopes"] or ())
        if scope not in scopes:
            raise ApiError(403, "insufficient_scope", f"This API key lacks the '{scope}' scope.")
        return Credential(
            Actor(
                tenant_id=row["tenant_id"],
                kind="api_key",
                actor_id=str(row["key_id"]),
                ip=ip,
                request_id=request_id,
                min_role=min_role,
            ),
            scopes=scopes,
        )
    if not token:
        raise ApiError(
            401,
            "unauthenticated",
            "Sign in with a user access token or an API key." if keys else "Sign in with a user access token.",
        )
    credential = resolve_user(app, token, min_role=min_role, ip=ip, request_id=request_id)
    if credential.actor is None:
        raise no_tenant()
    return credential


async def check_member(pool, actor: Actor) -> None:
    """parley.begin_request alone: the session is alive (or the key live) and the member still holds the role."""
    async with tenant_tx(pool, actor):
        pass
