"""Visitor tokens: a visitor's credential for one chatbot and, once the visitor has spoken, one conversation.

An HS256 JWT with its own audience (`parley:visitor`) and its own key (derived from the secret
key), so it can never pass for a member's access token or the other way round.

Claims: `tid` tenant, `cb` chatbot, `pk` widget key, `vid` visitor id (version 2), `sub` the
conversation. Version 2 tokens (`ver: 2`) may lack `sub`: a visitor who has not spoken yet
has no conversation. Version 1 tokens (no `ver`, no `vid`, always a `sub`) stay valid.
"""

from __future__ import annotations

import datetime as dt
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
    conversation_id: uuid.UUID | None
    public_key: str
    expires_at: int
    visitor_id: uuid.UUID | None = None  # None only in version 1 tokens

    @property
    def conversation(self) -> uuid.UUID:
        """The conversation, for code that runs once there is one (it starts when the visitor speaks)."""
        if self.conversation_id is None:
            raise RuntimeError("the visitor has no conversation yet")
        return self.conversation_id


def _visitor_key(secret: str) -> bytes:
    """A key only for visitor tokens: a leaked or confused token of another kind never verifies."""
    return hmac.new(secret.encode(), b"jwt:parley:visitor", hashlib.sha256).digest()


def issue_visitor_token(
    secret: str,
    *,
    tenant_id,
    chatbot_id,
    conversation_id,
    public_key: str,
    visitor_id=None,
    ttl: int = VISITOR_TOKEN_TTL,
) -> tuple[str, int]:
    now = int(time.time())
    exp = now + min(ttl, VISITOR_TOKEN_TTL)
    claims: dict[str, str | int] = {
        "ver": 2,
        "tid": str(tenant_id),
        "cb": str(chatbot_id),
        "pk": public_key,
        "aud": VISITOR_AUDIENCE,
        "iat": now,
        "exp": exp,
        "jti": secrets.token_urlsafe(9),
    }
    if conversation_id is not None:
        claims["sub"] = str(conversation_id)
    if visitor_id is not None:
        claims["vid"] = str(visitor_id)
    return jwt.encode(claims, _visitor_key(secret), algorithm="HS256"), exp


def decode_visitor_token(secret: str, token: str, *, grace: int = 0) -> VisitorClaims:
    """Verify signature, audience and expiry (an expired token is accepted for `grace` seconds)."""
    try:
        claims = jwt.decode(
            token,
            _visitor_key(secret),
            algorithms=["HS256"],
            audience=VISITOR_AUDIENCE,
            leeway=grace,
            options={"require": ["exp", "iat", "tid", "cb", "aud"]},
        )
        version = claims.get("ver", 1)
        if version not in (1, 2) or (version == 1 and "sub" not in claims) or (version == 2 and "vid" not in claims):
            raise ValueError("unsupported visitor token")
        sub, vid = claims.get("sub"), claims.get("vid")
        return VisitorClaims(
            tenant_id=uuid.UUID(claims["tid"]),
            chatbot_id=uuid.UUID(claims["cb"]),
            conversation_id=uuid.UUID(sub) if sub is not None else None,
            public_key=str(claims.get("pk") or ""),
            expires_at=int(claims["exp"]),
            visitor_id=uuid.UUID(vid) if vid is not None else None,
        )
    except (jwt.PyJWTError, ValueError, KeyError, TypeError) as exc:
        raise TokenError(str(exc)) from exc


def visitor_actor(
    request: web.Request | None, claims: VisitorClaims, ip: str | None = None, request_id: str | None = None
) -> Actor:
    """The actor of every visitor transaction: the conversation is the visitor's identity (none yet: no id)."""
    conversation = str(claims.conversation_id) if claims.conversation_id is not None else None
    return Actor(
        tenant_id=claims.tenant_id,
        kind="visitor",
        actor_id=conversation,
        ip=ip if ip is not None else (client_ip(request) if request is not None else None),
        request_id=request_id if request_id is not None else (request.get(REQUEST_ID) if request is not None else None),
        min_role="visitor",
    )


def visitor_token(settings_secret: str, claims: VisitorClaims) -> tuple[str, str]:
    """A fresh token for these claims and its expiry as ISO-8601."""
    token, exp = issue_visitor_token(
        settings_secret,
        tenant_id=claims.tenant_id,
        chatbot_id=claims.chatbot_id,
        conversation_id=claims.conversation_id,
        public_key=claims.public_key,
        visitor_id=claims.visitor_id,
    )
    return token, dt.datetime.fromtimestamp(exp, dt.UTC).isoformat()
