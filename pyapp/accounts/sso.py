"""Single sign-on with OpenID Connect: the providers on offer, a person's linked identities,
the workspace's "require SSO" switch, and the two steps of a browser sign-in that the console
pages (/console/sso/...) run: `start` (to the provider) and `finish` (back from it).

The protocol is pyapp/accounts/oidc.py; the rules are sql/28_oidc.sql.
"""

from __future__ import annotations

import os
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field

from pyapp.api import Call, api
from pyapp.errors import ApiError
from pyapp.security import new_opaque_token, sha256

from .common import auth_tx
from .models import AuthOut, UserOut
from .oidc import Identity, OidcClient, OidcError, Provider, derived, identify, providers

OIDC = web.AppKey("oidc_client", OidcClient)
OIDC_PROVIDERS: web.AppKey[dict[str, Provider]] = web.AppKey("oidc_providers")
CALLBACK_PATH = "/console/sso/{provider}/callback"
TAGS = ("auth",)


class ProviderOut(BaseModel):
    id: str
    label: str


class ProvidersOut(BaseModel):
    providers: list[ProviderOut]


class IdentityOut(BaseModel):
    provider: str
    issuer: str
    email: str | None
    created_at: datetime
    last_used_at: datetime


class IdentitiesOut(BaseModel):
    identities: list[IdentityOut]


class RequireSsoIn(BaseModel):
    required: bool


class RequireSsoOut(BaseModel):
    required: bool
    this_session_is_sso: bool = Field(description="Whether your own session came through an identity provider.")


def configured(call: Call) -> dict[str, Provider]:
    return call.request.app[OIDC_PROVIDERS]


def provider_of(request: web.Request, provider_id: str) -> Provider:
    provider = request.app[OIDC_PROVIDERS].get(provider_id)
    if provider is None:
        raise ApiError(404, "provider_not_found", "No such sign-in provider on this server.")
    return provider


@api.route("GET", "/api/auth/sso/providers", auth="public", response=ProvidersOut, tags=TAGS)
async def list_providers(call: Call):
    """The identity providers this server offers for signing in (empty when none is configured)."""
    return ProvidersOut(providers=[ProviderOut(id=p.id, label=p.label) for p in configured(call).values()])


@api.route("GET", "/api/me/identities", auth="user", response=IdentitiesOut, tags=("account",))
async def list_identities(call: Call):
    """The identities (provider accounts) that sign you in."""
    async with auth_tx(call, signed_in=True) as conn:
        rows = await conn.fetchval("SELECT parley.list_my_identities()")
    return IdentitiesOut.model_validate({"identities": rows})


@api.route("DELETE", "/api/me/identities/{provider}", auth="user", status=204, tags=("account",))
async def unlink_identity(call: Call):
    """Stop signing in with this provider; refused when it is your only way in (409 last_sign_in_method)."""
    provider = call.param("provider")
    if len(provider) > 40:
        raise ApiError(404, "identity_not_found", "No identity of this provider is linked to your account.")
    async with auth_tx(call, signed_in=True) as conn:
        await conn.execute("SELECT parley.unlink_my_identity($1)", provider)


@api.route("GET", "/api/tenant/sso", min_role="admin", keys=False, response=RequireSsoOut, tags=("tenants",))
async def get_require_sso(call: Call):
    """Whether this workspace requires single sign-on."""
    async with call.tx() as conn:
        return RequireSsoOut.model_validate(await conn.fetchval("SELECT parley.get_require_sso()"))


@api.route(
    "PUT", "/api/tenant/sso", min_role="owner", keys=False, body=RequireSsoIn, response=RequireSsoOut, tags=("tenants",)
)
async def put_require_sso(call: Call):
    """Require single sign-on for this workspace (owners, from a session opened by an identity provider), or stop.

    While required, members signed in with a password get 403 sso_required in this workspace."""
    async with call.tx() as conn:
        out = await conn.fetchval("SELECT parley.set_require_sso($1)", call.body.required)
    return RequireSsoOut.model_validate(out)


# --- the browser flow (driven by the console pages) -------------------------------------------


def sign_up_allowed(call: Call) -> bool:
    """Whether an identity with no account creates one (PARLEY_OIDC_SIGN_UP=0 turns it off)."""
    if "oidc_sign_up" in call.settings.extra:
        return bool(call.settings.extra["oidc_sign_up"])
    return os.environ.get("PARLEY_OIDC_SIGN_UP", "1") != "0"


def redirect_uri(call: Call, provider: Provider) -> str:
    return call.settings.base_url + CALLBACK_PATH.format(provider=provider.id)


def _bound_to(call: Call, provider: Provider, state: str) -> dict[str, str]:
    """What a sign-in's state binds, the same when it starts and when it comes back: the nonce, the
    PKCE verifier (both derived from the state, never stored) and the redirect URI."""
    secret_key = call.settings.secret_key
    return {
        "nonce": derived(secret_key, "nonce", state),
        "verifier": derived(secret_key, "pkce", state),
        "redirect_uri": redirect_uri(call, provider),
    }


async def start(call: Call, provider: Provider, *, next_path: str, link: bool) -> tuple[str, str]:
    """Begin a sign-in (or, with `link`, add an identity to the signed-in person).

    Returns (the provider's authorization URL, the browser-binding value for a cookie)."""
    state = secrets.token_urlsafe(32)
    binding, binding_hash = new_opaque_token()
    client = call.request.app[OIDC]
    try:
        url = await client.authorization_url(
            provider,
            state=state,
            **_bound_to(call, provider, state),
        )
    except OidcError as exc:
        raise ApiError(502, exc.code, exc.message) from None
    async with auth_tx(call, signed_in=link) as conn:
        await conn.execute(
            "SELECT parley.oidc_begin($1, $2, $3, $4, $5)", sha256(state), provider.id, binding_hash, next_path, link
        )
    return url, binding


@dataclass
class Finished:
    outcome: Literal["signed_in", "linked"]
    next_path: str
    auth: AuthOut | None = None
    user: UserOut | None = None


async def finish(call: Call, provider: Provider, *, code: str, state: str, binding: str) -> Finished:
    """Back from the provider: spend the state, check the id_token, sign in (or link).

    Raises ApiError: 400 invalid_state, 502 for a provider that failed, 403 for an identity
    that may not sign in (unverified email, no account and no sign-up, no email)."""
    from .sessions import _auth_response

    async with auth_tx(call) as conn:
        login = await conn.fetchval(
            "SELECT parley.oidc_take_login($1, $2, $3)", sha256(state), provider.id, sha256(binding)
        )
    if login["status"] != "ok":
        raise ApiError(
            400,
            "invalid_state",
            "This sign-in link is unknown, used or expired, or was started in another browser; start again.",
        )
    try:
        identity: Identity = await identify(
            call.request.app[OIDC],
            provider,
            code=code,
            **_bound_to(call, provider, state),
        )
    except OidcError as exc:
        status = 401 if exc.code == "invalid_id_token" else 502
        raise ApiError(status, exc.code, exc.message) from None
    link_user = uuid.UUID(login["link_user_id"]) if login["link_user_id"] else None
    refresh, refresh_hash = new_opaque_token()
    async with auth_tx(call) as conn:
        session = await conn.fetchval(
            "SELECT parley.oidc_sign_in($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            provider.id,
            identity.issuer,
            identity.subject,
            identity.email,
            identity.email_verified,
            identity.name,
            link_user,
            sign_up_allowed(call),
            refresh_hash,
            call.settings.refresh_token_ttl,
        )
    status = session["status"]
    if status == "linked":
        return Finished("linked", login["next"], user=UserOut.model_validate(session["user"]))
    if status == "unverified_email":
        raise ApiError(
            403,
            "email_not_verified",
            "An account with this email exists, but the identity provider does not vouch for the address; "
            "sign in with your password and link the provider from your profile.",
        )
    if status in ("no_account", "no_email"):
        raise ApiError(
            403, "no_account", "No Parley account belongs to this identity, and this server does not create one."
        )
    return Finished("signed_in", login["next"], auth=_auth_response(call, session, refresh))


def setup(app: web.Application) -> None:
    from pyapp.context import SETTINGS

    app[OIDC_PROVIDERS] = providers(app[SETTINGS])
    app[OIDC] = OidcClient()

    async def close(app: web.Application) -> None:
        await app[OIDC].close()

    app.on_cleanup.append(close)
