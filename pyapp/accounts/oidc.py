"""OpenID Connect, the relying party's side: provider configuration, discovery, the
authorization request (code flow with PKCE S256, state and nonce), the token exchange, and the
id_token checked against the provider's JWKS.

Providers are configured by the operator of the installation, never by a tenant:
``PARLEY_OIDC_ISSUER`` / ``_CLIENT_ID`` / ``_CLIENT_SECRET`` / ``_LABEL`` for one generic
provider (id ``oidc``), ``PARLEY_OIDC_GOOGLE_CLIENT_ID`` / ``_CLIENT_SECRET`` for the Google
preset (id ``google``), or ``Settings.extra["oidc_providers"]`` (a list of dicts with the same
keys and an ``id``). An issuer must be https; plain http only on a loopback address (a
provider on the same machine, as in tests).

Nothing here stores anything: the rules (a state used once, by the browser that started it;
which account an identity may sign in to) are in sql/28_oidc.sql. The PKCE verifier and the
nonce are derived from the state with the server's key, so the database keeps only the
state's hash.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
import jwt

TIMEOUT = aiohttp.ClientTimeout(total=10)
MAX_DOCUMENT = 256 * 1024  # a discovery document, JWKS or token answer is a few KB
DISCOVERY_TTL = 3600.0
JWKS_REFRESH_MIN = 30.0  # an unknown kid refreshes the keys at most this often
CLOCK_SKEW = 60  # seconds of leeway on exp/iat/nbf
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384")
GOOGLE_ISSUER = "https://accounts.google.com"
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


class OidcError(Exception):
    """The provider's answer could not be used; `code` is stable, the message is for people."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Provider:
    id: str
    label: str
    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    scopes: str = "openid email profile"


def _issuer_allowed(issuer: str) -> bool:
    parts = urlsplit(issuer)
    if parts.scheme == "https" and parts.hostname:
        return True
    return parts.scheme == "http" and (parts.hostname or "") in LOOPBACK


def providers(settings) -> dict[str, Provider]:
    """The providers this installation offers, by id (empty when none is configured)."""
    found: list[dict] = list(settings.extra.get("oidc_providers") or [])
    env = os.environ
    if env.get("PARLEY_OIDC_ISSUER") and env.get("PARLEY_OIDC_CLIENT_ID"):
        found.append(
            {
                "id": "oidc",
                "label": env.get("PARLEY_OIDC_LABEL") or "SSO",
                "issuer": env["PARLEY_OIDC_ISSUER"],
                "client_id": env["PARLEY_OIDC_CLIENT_ID"],
                "client_secret": env.get("PARLEY_OIDC_CLIENT_SECRET", ""),
            }
        )
    if env.get("PARLEY_OIDC_GOOGLE_CLIENT_ID"):
        found.append(
            {
                "id": "google",
                "label": "Google",
                "issuer": GOOGLE_ISSUER,
                "client_id": env["PARLEY_OIDC_GOOGLE_CLIENT_ID"],
                "client_secret": env.get("PARLEY_OIDC_GOOGLE_CLIENT_SECRET", ""),
            }
        )
    out: dict[str, Provider] = {}
    for item in found:
        issuer = str(item["issuer"]).rstrip("/")
        if not _issuer_allowed(issuer):
            raise ValueError(f"OIDC issuer {issuer!r} must be https (http only on a loopback address)")
        provider = Provider(
            id=str(item["id"]),
            label=str(item.get("label") or item["id"]),
            issuer=issuer,
            client_id=str(item["client_id"]),
            client_secret=str(item.get("client_secret") or ""),
            scopes=str(item.get("scopes") or "openid email profile"),
        )
        out[provider.id] = provider
    return out


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def derived(secret_key: str, purpose: str, state: str) -> str:
    """The PKCE verifier or nonce belonging to a state: 43 url-safe characters only the server can compute."""
    key = hmac.new(secret_key.encode(), f"parley:oidc:{purpose}".encode(), hashlib.sha256).digest()
    return _b64url(hmac.new(key, state.encode(), hashlib.sha256).digest())


def code_challenge(verifier: str) -> str:
    return _b64url(hashlib.sha256(verifier.encode()).digest())


@dataclass
class _Cached:
    value: dict
    fetched: float


class OidcClient:
    """One per server: fetches and caches each provider's discovery document and keys."""

    def __init__(self) -> None:
        self._discovery: dict[str, _Cached] = {}
        self._jwks: dict[str, _Cached] = {}
        self._forced: dict[str, float] = {}  # when an unknown kid last made us re-read the keys
        self._locks: dict[str, asyncio.Lock] = {}
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=TIMEOUT)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _json(self, method: str, url: str, **kwargs) -> tuple[int, Any]:
        if not _issuer_allowed(url):
            raise OidcError("provider_unusable", "The identity provider named an endpoint that is not https.")
        try:
            async with self._http().request(method, url, allow_redirects=False, **kwargs) as resp:
                raw = await resp.content.read(MAX_DOCUMENT + 1)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise OidcError(
                "provider_unreachable", f"The identity provider did not answer ({type(exc).__name__})."
            ) from None
        if len(raw) > MAX_DOCUMENT:
            raise OidcError("provider_unusable", "The identity provider's answer is too large.")
        try:
            return status, json.loads(raw)
        except ValueError:
            raise OidcError(
                "provider_unusable", f"The identity provider answered HTTP {status} without JSON."
            ) from None

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def discovery(self, provider: Provider) -> dict:
        cached = self._discovery.get(provider.id)
        if cached and time.monotonic() - cached.fetched < DISCOVERY_TTL:
            return cached.value
        async with self._lock("d:" + provider.id):
            cached = self._discovery.get(provider.id)
            if cached and time.monotonic() - cached.fetched < DISCOVERY_TTL:
                return cached.value
            status, doc = await self._json("GET", provider.issuer + "/.well-known/openid-configuration")
            if status != 200 or not isinstance(doc, dict):
                raise OidcError("provider_unusable", f"The identity provider's discovery answered HTTP {status}.")
            # The document must be the issuer's own (OpenID Connect Discovery §4.3).
            if str(doc.get("issuer", "")).rstrip("/") != provider.issuer:
                raise OidcError("provider_unusable", "The discovery document names another issuer.")
            for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(doc.get(key), str) or not _issuer_allowed(doc[key]):
                    raise OidcError("provider_unusable", f"The discovery document has no usable {key}.")
            self._discovery[provider.id] = _Cached(doc, time.monotonic())
            return doc

    async def authorization_url(
        self, provider: Provider, *, state: str, nonce: str, verifier: str, redirect_uri: str
    ) -> str:
        doc = await self.discovery(provider)
        query = urlencode(
            {
                "response_type": "code",
                "client_id": provider.client_id,
                "redirect_uri": redirect_uri,
                "scope": provider.scopes,
                "state": state,
                "nonce": nonce,
                "code_challenge": code_challenge(verifier),
                "code_challenge_method": "S256",
            }
        )
        endpoint = doc["authorization_endpoint"]
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"

    async def _keys(self, provider: Provider, *, refresh: bool) -> dict:
        """The provider's JWKS, cached for an hour; `refresh` (an unknown kid) re-reads it, at
        most once per JWKS_REFRESH_MIN, so tokens with made-up kids cannot make us hammer the provider."""
        now = time.monotonic()
        cached = self._jwks.get(provider.id)
        if cached and now - cached.fetched < DISCOVERY_TTL and not refresh:
            return cached.value
        async with self._lock("k:" + provider.id):
            cached = self._jwks.get(provider.id)
            if cached and refresh and now - self._forced.get(provider.id, -JWKS_REFRESH_MIN) < JWKS_REFRESH_MIN:
                return cached.value
            if cached and not refresh and time.monotonic() - cached.fetched < DISCOVERY_TTL:
                return cached.value  # fetched by whoever held the lock before us
            doc = await self.discovery(provider)
            status, jwks = await self._json("GET", doc["jwks_uri"])
            if status != 200 or not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
                raise OidcError("provider_unusable", f"The identity provider's keys answered HTTP {status}.")
            self._jwks[provider.id] = _Cached(jwks, time.monotonic())
            if refresh:
                self._forced[provider.id] = now
            return jwks

    async def _signing_key(self, provider: Provider, kid: str | None, alg: str):
        for refresh in (False, True):  # an unknown kid: the provider may have rotated its keys
            jwks = await self._keys(provider, refresh=refresh)
            for entry in jwks["keys"]:
                if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                    continue
                if kid is not None and entry.get("kid") != kid:
                    continue
                if entry.get("alg") not in (None, alg):
                    continue
                try:
                    return jwt.PyJWK(entry, algorithm=alg).key
                except (jwt.PyJWTError, ValueError, TypeError, KeyError):
                    continue
        raise OidcError("invalid_id_token", "The id_token is signed with a key the identity provider does not publish.")

    async def exchange(self, provider: Provider, *, code: str, verifier: str, redirect_uri: str) -> dict:
        """The token endpoint's answer for an authorization code (client_secret_basic)."""
        doc = await self.discovery(provider)
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        headers = {"Accept": "application/json"}
        if provider.client_secret:  # client_secret_basic, each part form-encoded first (RFC 6749 §2.3.1)
            pair = f"{quote(provider.client_id, safe='')}:{quote(provider.client_secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:  # a public client: PKCE alone
            form["client_id"] = provider.client_id
        status, answer = await self._json("POST", doc["token_endpoint"], data=form, headers=headers)
        if status != 200 or not isinstance(answer, dict) or not isinstance(answer.get("id_token"), str):
            error = answer.get("error") if isinstance(answer, dict) else None
            raise OidcError(
                "token_exchange_failed", f"The identity provider refused the code (HTTP {status}, {error})."
            )
        return answer

    async def verify_id_token(self, provider: Provider, id_token: str, *, nonce: str) -> dict:
        """The id_token's claims, once signature, issuer, audience, times and nonce all hold."""
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError:
            raise OidcError("invalid_id_token", "The id_token is not a JWT.") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:  # never "none", never an HMAC keyed with something public
            raise OidcError("invalid_id_token", f"The id_token's algorithm {alg!r} is not accepted.")
        key = await self._signing_key(provider, header.get("kid"), alg)
        try:
            claims = jwt.decode(
                id_token,
                key,
                algorithms=[alg],
                audience=provider.client_id,
                issuer=provider.issuer,
                leeway=CLOCK_SKEW,
                options={"require": ["iss", "sub", "aud", "exp", "iat"]},
            )
        except jwt.PyJWTError as exc:
            raise OidcError("invalid_id_token", f"The id_token was refused: {exc}.") from None
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != provider.client_id:
            raise OidcError("invalid_id_token", "The id_token was issued to another party (azp).")
        if not isinstance(claims.get("nonce"), str) or not hmac.compare_digest(claims["nonce"], nonce):
            raise OidcError("invalid_id_token", "The id_token's nonce does not belong to this sign-in.")
        return claims

    async def userinfo(self, provider: Provider, access_token: str) -> dict:
        doc = await self.discovery(provider)
        endpoint = doc.get("userinfo_endpoint")
        if not isinstance(endpoint, str):
            return {}
        status, info = await self._json("GET", endpoint, headers={"Authorization": f"Bearer {access_token}"})
        return info if status == 200 and isinstance(info, dict) else {}


def _clean(value: Any, limit: int) -> str | None:
    if not isinstance(value, str) or "\x00" in value or len(value) > limit:
        return None
    return value


@dataclass(frozen=True)
class Identity:
    issuer: str
    subject: str
    email: str | None
    email_verified: bool
    name: str | None


async def identify(
    client: OidcClient, provider: Provider, *, code: str, verifier: str, nonce: str, redirect_uri: str
) -> Identity:
    """Code → verified identity: exchange, id_token checks, and the userinfo endpoint for an email the token lacks."""
    tokens = await client.exchange(provider, code=code, verifier=verifier, redirect_uri=redirect_uri)
    claims = await client.verify_id_token(provider, tokens["id_token"], nonce=nonce)
    subject = _clean(claims.get("sub"), 255)
    if not subject:
        raise OidcError("invalid_id_token", "The id_token has no usable subject.")
    email, verified = claims.get("email"), claims.get("email_verified")
    if not isinstance(email, str) and isinstance(tokens.get("access_token"), str):
        info = await client.userinfo(provider, tokens["access_token"])
        if info.get("sub") == claims.get("sub"):  # OpenID Connect Core §5.3.2
            email, verified = info.get("email"), info.get("email_verified")
    # Some providers send "true" as a string.
    is_verified = verified is True or (isinstance(verified, str) and verified.lower() == "true")
    return Identity(
        issuer=provider.issuer,
        subject=subject,
        email=_clean(email, 320),
        email_verified=is_verified,
        name=_clean(claims.get("name"), 200),
    )
