"""A visitor's first steps, shared by the session routes and the visitor socket (neither imports the other).

The chatbot by its public key (parley.widget_chatbot, the one lookup), the visitor's country from a
trusted proxy, and starting the conversation of a visitor who speaks for the first time.
"""

from __future__ import annotations

import time
import uuid

import asyncpg
from aiohttp import web

from pyapp.context import POOL, TRUST_PROXY
from pyapp.db import Actor, tenant_tx
from pyapp.widget.tokens import VisitorClaims

CHATBOT_TTL = 10.0  # seconds a chatbot's row is reused for new sockets (config changes show up after this)
_CHATBOTS = web.AppKey("widget_chatbots", dict)


def install(app: web.Application) -> None:
    """The app's chatbot cache (idempotent: the session routes and the socket both call it from setup)."""
    if _CHATBOTS not in app:
        app[_CHATBOTS] = {}


async def chatbot_by_key(app: web.Application, public_key: str, *, max_age: float = CHATBOT_TTL) -> dict | None:
    """parley.widget_chatbot: the one lookup of a chatbot by its public key, for sessions (always
    fresh, max_age=0) and sockets (reused for CHATBOT_TTL, shared by every socket of the chatbot)."""
    cache: dict = app[_CHATBOTS]
    now = time.monotonic()
    hit = cache.get(public_key)
    if hit is not None and now - hit[0] < max_age:
        return hit[1]
    row = await app[POOL].fetchrow("SELECT * FROM parley.widget_chatbot($1)", public_key)
    value = dict(row) if row is not None else None
    if len(cache) > 10_000:
        cache.clear()
    cache[public_key] = (now, value)
    return value


def country_of(request: web.Request) -> str | None:
    """The visitor's country from a trusted proxy's header (Cloudflare's or a generic one), else None."""
    if not request.app.get(TRUST_PROXY, False):
        return None
    value = (request.headers.get("CF-IPCountry") or request.headers.get("X-Country-Code") or "").strip().upper()
    return value if len(value) == 2 and value.isalpha() and value != "XX" else None


async def start_visitor_conversation(
    pool: asyncpg.Pool,
    claims: VisitorClaims,
    *,
    ip: str | None,
    request_id: str | None,
    page_url: str | None,
    referrer: str | None,
    user_agent: str | None,
    locale: str | None,
    country: str | None,
    first: tuple[str, str | None] | None = None,
):
    """Start the conversation of a visitor who has none yet (the limits are start_conversation's).

    With `first` (the body and client_id of the visitor's first message), the message is stored in
    the same transaction (parley.start_with_message): a first message the visitor already sent from
    another tab, or resent, goes to the conversation that holds it; the row then also has `message`
    (the visitor's shape) and `duplicate`."""
    # The visitor has no conversation yet, so no actor id (the event records none).
    actor = Actor(
        tenant_id=claims.tenant_id, kind="visitor", actor_id=None, ip=ip, request_id=request_id, min_role="visitor"
    )
    about = (page_url, referrer, (user_agent or "")[:512] or None, locale, ip, country)
    visitor_id = claims.visitor_id or uuid.uuid4()
    async with tenant_tx(pool, actor) as conn:
        if first is not None:
            return await conn.fetchrow(
                "SELECT * FROM parley.start_with_message($1, $2, $3, $4, $5, $6, $7, $8, $9::inet, $10)",
                claims.chatbot_id,
                visitor_id,
                *first,
                *about,
            )
        return await conn.fetchrow(
            "SELECT c.id, c.status, c.visitor_id"
            "  FROM parley.start_conversation($1, $2, $3, $4, $5, $6, $7::inet, $8) c",
            claims.chatbot_id,
            visitor_id,
            *about,
        )
