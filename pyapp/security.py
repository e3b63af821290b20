"""Tokens and hashes: access JWTs (HS256 pinned), opaque tokens stored as SHA-256, API keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass

import jwt

ACCESS_AUDIENCE = "parley:api"
API_KEY_PREFIX = "prl_"


class TokenError(Exception):
    """Any reason a presented credential is not acceptable; always answered with 401."""


def sha256(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def new_opaque_token(nbytes: int = 32) -> tuple[str, bytes]:
    """A random token for the client and the hash we store instead of it."""
    token = secrets.token_urlsafe(nbytes)
    return token, sha256(token)


def successor_token(secret: str, token: str) -> tuple[str, bytes]:
    """The refresh token that replaces `token` (and its hash): derived, so parallel refreshes agree on it.

    Only the server can compute it (HMAC with its key); it is as long and as random as a new token.
    """
    key = hmac.new(secret.encode(), b"parley:refresh-successor", hashlib.sha256).digest()
    new = base64.urlsafe_b64encode(hmac.new(key, token.encode(), hashlib.sha256).digest()).decode().rstrip("=")
    return new, sha256(new)


def new_api_key() -> tuple[str, str, bytes]:
    """Returns (full key shown once, visible prefix, stored hash)."""
    prefix = secrets.token_hex(4)
    key = f"{API_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    return key, f"{API_KEY_PREFIX}{prefix}", sha256(key)


@dataclass(frozen=True)
class AccessClaims:
    user_id: uuid.UUID
    tenant_id: uuid.UUID | None
    session_id: uuid.UUID
    jti: str


def issue_access_token(secret: str, *, user_id, tenant_id, session_id, ttl: int) -> tuple[str, int]:
    now = int(time.time())
    claims = {
        "sub": str(user_id),
        "tid": str(tenant_id) if tenant_id else None,
        "sid": str(session_id),
        "aud": ACCESS_AUDIENCE,
        "iat": now,
        "exp": now + ttl,
        "jti": secrets.token_urlsafe(12),
    }
    return jwt.encode(claims, secret, algorithm="HS256"), now + ttl


def decode_access_token(secret: str, token: str) -> AccessClaims:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            audience=ACCESS_AUDIENCE,
            options={"require": ["exp", "iat", "sub", "sid", "jti", "aud"]},
        )
        return AccessClaims(
            user_id=uuid.UUID(claims["sub"]),
            tenant_id=uuid.UUID(claims["tid"]) if claims.get("tid") else None,
            session_id=uuid.UUID(claims["sid"]),
            jti=claims["jti"],
        )
    except (jwt.PyJWTError, ValueError, KeyError, TypeError) as exc:
        raise TokenError(str(exc)) from exc


def sign(secret: str, purpose: str, message: bytes) -> str:
    """HMAC for our own short-lived artefacts (CSRF tokens, signed ids); purpose separates keys."""
    key = hmac.new(secret.encode(), purpose.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode().rstrip("=")


def verify(secret: str, purpose: str, message: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(secret, purpose, message), signature)
