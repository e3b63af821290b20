"""The console's cookie session: access + refresh token in one HttpOnly cookie scoped to /console.

The cookie never reaches /api (Path=/console), so the JSON API stays bearer-only and has no
CSRF exposure. An expired access token is refreshed transparently with the accounts
refresh rotation; concurrent requests presenting the same refresh token share one rotation
(per process) instead of tripping reuse detection. CSRF tokens are an HMAC of the session
(refresh-token family) id, so they survive refreshes and die with sign-out.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
import uuid
from dataclasses import dataclass

from aiohttp import web

from pyapp.context import SETTINGS, TRUST_PROXY
from pyapp.security import AccessClaims, TokenError, decode_access_token, sha256, sign, verify

COOKIE = "parley_console"
PRE_COOKIE = "parley_console_pre"  # double-submit token for the sign-in form (no session yet)
COOKIE_PATH = "/console"
CSRF_FIELD = "_csrf"
CSRF_HEADER = "X-CSRF-Token"
REFRESH_MARGIN = 30  # seconds before expiry at which the access token is renewed


@dataclass
class Session:
    access_token: str
    refresh_token: str
    claims: AccessClaims
    renewed: bool = False  # the cookie must be written back on the response


def is_https(request: web.Request) -> bool:
    if request.secure:
        return True
    if request.app.get(TRUST_PROXY, False):
        return request.headers.get("X-Forwarded-Proto", "").lower() == "https"
    return False


def encode_cookie(access: str, refresh: str) -> str:
    raw = json.dumps({"a": access, "r": refresh}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cookie(value: str) -> tuple[str, str] | None:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        data = json.loads(raw)
        access, refresh = data["a"], data["r"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    if not isinstance(access, str) or not isinstance(refresh, str) or not access or not refresh:
        return None
    return access, refresh


def set_session_cookie(request: web.Request, response: web.StreamResponse, access: str, refresh: str) -> None:
    ttl = request.app[SETTINGS].refresh_token_ttl
    response.set_cookie(
        COOKIE,
        encode_cookie(access, refresh),
        path=COOKIE_PATH,
        httponly=True,
        secure=is_https(request),
        samesite="Lax",
        max_age=ttl,
    )


def clear_session_cookie(request: web.Request, response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path=COOKIE_PATH)
    response.set_cookie(
        COOKIE, "", path=COOKIE_PATH, httponly=True, secure=is_https(request), samesite="Lax", max_age=0
    )


def token_exp(token: str) -> int:
    """Expiry claim of a JWT we already verified (or are about to discard); 0 if unreadable."""
    try:
        payload = token.split(".")[1]
        return int(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return 0


class _Rotations:
    """Per-process memo of refresh rotations, so parallel requests reuse one new pair."""

    def __init__(self) -> None:
        self.locks: dict[bytes, asyncio.Lock] = {}
        self.done: dict[bytes, tuple[float, str, str]] = {}

    async def rotate(self, request: web.Request, refresh: str) -> tuple[str, str] | None:
        from pyapp.console import accounts_bridge

        key = sha256(refresh)
        now = time.monotonic()
        for k, (at, _, _) in list(self.done.items()):
            if now - at > 60:
                self.done.pop(k, None)
        lock = self.locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key in self.done:
                _, access, new_refresh = self.done[key]
                return access, new_refresh
            pair = await accounts_bridge.refresh(request, refresh)
            if pair is not None:
                self.done[key] = (time.monotonic(), *pair)
        self.locks.pop(key, None)
        return pair


ROTATIONS = _Rotations()


async def load_session(request: web.Request) -> Session | None:
    """The signed-in session from the cookie, refreshed if the access token is (nearly) expired."""
    value = request.cookies.get(COOKIE)
    if not value:
        return None
    pair = decode_cookie(value)
    if pair is None:
        return None
    access, refresh = pair
    secret = request.app[SETTINGS].secret_key
    renewed = False
    if token_exp(access) - REFRESH_MARGIN < time.time():
        rotated = await ROTATIONS.rotate(request, refresh)
        if rotated is None:
            return None
        access, refresh = rotated
        renewed = True
    try:
        claims = decode_access_token(secret, access)
    except TokenError:
        return None
    return Session(access, refresh, claims, renewed)


def csrf_token(request: web.Request, session_id: uuid.UUID) -> str:
    return sign(request.app[SETTINGS].secret_key, "console-csrf", session_id.bytes)


def csrf_ok(request: web.Request, session_id: uuid.UUID, presented: str | None) -> bool:
    if not presented:
        return False
    return verify(request.app[SETTINGS].secret_key, "console-csrf", session_id.bytes, presented)


def pre_csrf(request: web.Request) -> tuple[str, bool]:
    """The sign-in form's double-submit token: (value, whether the cookie must be set)."""
    value = request.cookies.get(PRE_COOKIE, "")
    if len(value) >= 32:
        return value, False
    return secrets.token_urlsafe(32), True


def set_pre_cookie(request: web.Request, response: web.StreamResponse, value: str) -> None:
    response.set_cookie(
        PRE_COOKIE, value, path=COOKIE_PATH, httponly=True, secure=is_https(request), samesite="Lax", max_age=3600
    )


def pre_csrf_ok(request: web.Request, presented: str | None) -> bool:
    cookie = request.cookies.get(PRE_COOKIE, "")
    return bool(presented) and len(cookie) >= 32 and secrets.compare_digest(cookie, presented or "")
