"""Conversation tokens: a visitor's credential for one conversation.

An HS256 JWT with its own audience (`parley:visitor`) and its own key (derived from the secret
key), so it can never pass for a member's access token or the other way round.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass

import jwt
from aiohttp import web

from pyapp.context import REQUEST_ID, client_ip
from pyapp.db import Actor
from pyapp.security import TokenError

VISITOR_AUDIENCE = "parley:visitor"
VISITOR_TOKEN_TTL = 900  # seconds; the widget refreshes before it runs out


@dataclass(frozen=True)
class VisitorClaims:
    tenant_id: uuid.UUID
    chatbot_id: uuid.UUID
    conversation_id: uuid.UUID
    public_key: str
    expires_at: int


def _visitor_key(secret: str) -> bytes:
    """A key only for visitor tokens: a leaked or confused token of another kind never verifies."""
    return hmac.new(secret.encode(), b"jwt:parley:visitor", hashlib.sha256).digest()


def issue_visitor_token(secret: str, *, tenant_id, chatbot_id, conversation_id, public_key: str,
                        ttl: int = VISITOR_TOKEN_TTL) -> tuple[str, int]:
    now = int(time.time())
    claims = {"sub": str(conversation_id), "tid": str(tenant_id), "cb": str(chatbot_id), "pk": public_key,
              "aud": VISITOR_AUDIENCE, "iat": now, "exp": now + min(ttl, VISITOR_TOKEN_TTL),
              "jti": secrets.token_urlsafe(9)}
    return jwt.encode(claims, _visitor_key(secret), algorithm="HS256"), claims["exp"]


def decode_visitor_token(secret: str, token: str, *, grace: int = 0) -> VisitorClaims:
    """Verify signature, audience and expiry (an expired token is accepted for `grace` seconds)."""
    try:
        claims = jwt.decode(token, _visitor_key(secret), algorithms=["HS256"], audience=VISITOR_AUDIENCE,
                            leeway=grace, options={"require": ["exp", "iat", "sub", "tid", "cb", "aud"]})
        return VisitorClaims(tenant_id=uuid.UUID(claims["tid"]), chatbot_id=uuid.UUID(claims["cb"]),
                             conversation_id=uuid.UUID(claims["sub"]), public_key=str(claims.get("pk") or ""),
                             expires_at=int(claims["exp"]))
    except (jwt.PyJWTError, ValueError, KeyError, TypeError) as exc:
        raise TokenError(str(exc)) from exc


def visitor_actor(request: web.Request | None, claims: VisitorClaims, ip: str | None = None) -> Actor:
    """The actor of every visitor transaction: the conversation is the visitor's identity."""
    return Actor(tenant_id=claims.tenant_id, kind="visitor", actor_id=str(claims.conversation_id),
                 ip=ip if ip is not None else (client_ip(request) if request is not None else None),
                 request_id=request.get(REQUEST_ID) if request is not None else None, min_role="visitor")
