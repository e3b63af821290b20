"""Widget sessions: the public REST calls a visitor's browser makes before opening /ws/visitor.

`POST /api/widget/sessions` checks the page's Origin against the chatbot's allowed origins and
returns a short-lived visitor token: an HS256 JWT with its own audience (`parley:visitor`) and
its own key (derived from the secret key), so it can never pass for a member's access token or
the other way round. A page view writes nothing: the token names only the chatbot and the
visitor until the visitor speaks (first message, lead form, "talk to a person" on the socket,
which then starts the conversation), or resumes the conversation the browser kept. API clients
that speak at once may ask for the conversation now (`start: true`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

import asyncpg
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from pyapp.api import Call, api
from pyapp.context import REQUEST_ID, client_ip
from pyapp.db import tenant_tx
from pyapp.domains.host import domain_tenant_refuses
from pyapp.errors import ApiError
from pyapp.security import TokenError
from pyapp.widget.tokens import VisitorClaims, decode_visitor_token, visitor_actor, visitor_token
from pyapp.widget.visitors import chatbot_by_key, country_of, start_visitor_conversation
from pyapp.widget.visitors import install as install_visitors

REFRESH_GRACE = 3600  # an expired token may still be refreshed this long after it expired
CORS_ORIGIN = web.RequestKey("cors_origin", str)


# --------------------------------------------------------------------------- routes


class SessionIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    chatbot_key: str = Field(min_length=3, max_length=100)
    conversation_id: uuid.UUID | None = None
    visitor_id: uuid.UUID | None = None  # kept in the page's storage; a new one when absent
    start: bool = False  # start the conversation now instead of when the visitor first speaks
    page_url: str | None = Field(default=None, max_length=2048)
    referrer: str | None = Field(default=None, max_length=2048)
    locale: str | None = Field(default=None, max_length=35)


class RefreshIn(BaseModel):
    token: str = Field(min_length=10, max_length=4096)


class SessionOut(BaseModel):
    token: str
    expires_at: str
    tenant_id: uuid.UUID  # for proxies that map chatbot -> customer -> plan
    chatbot_id: uuid.UUID
    conversation_id: uuid.UUID | None  # None until the visitor speaks
    visitor_id: uuid.UUID | None  # None only for a conversation token of version 1 being refreshed
    status: str | None  # the conversation's status; None without a conversation
    config: dict[str, Any]


async def _chatbot(call: Call, public_key: str) -> dict:
    chatbot = await chatbot_by_key(call.request.app, public_key, max_age=0)
    if chatbot is None or domain_tenant_refuses(call.request, chatbot["tenant_id"]):
        raise ApiError(404, "unknown_chatbot", "No chatbot has this key.")
    return chatbot


async def _check_origin(call: Call, chatbot) -> None:
    """The origin rule is parley.origin_allowed (sql/40_chatbots.sql), also used by the install check."""
    origin = call.request.headers.get("Origin")
    if not await call.pool.fetchval(
        "SELECT parley.origin_allowed($1::text[], $2)", list(chatbot["allowed_origins"] or []), origin
    ):
        raise ApiError(403, "origin_not_allowed", "This site is not allowed to use this chatbot.")
    if origin:
        call.request[CORS_ORIGIN] = origin


async def _conversation(conn: asyncpg.Connection, conversation_id: uuid.UUID, chatbot_id: uuid.UUID):
    """Status and visitor of the visitor's own conversation if it belongs to this chatbot, else None."""
    row = await conn.fetchrow(
        "SELECT c.status, c.chatbot_id, c.visitor_id FROM parley.conversations c WHERE c.id = $1", conversation_id
    )
    if row is None or row["chatbot_id"] != chatbot_id:
        return None
    return row


async def _localized(call: Call, chatbot, locale: str | None) -> dict:
    """The widget config in the visitor's language (sql/40_chatbots.sql: localize_widget_config), with
    the visitor's buttons from the actions registry (sql/57_actions.sql: widget_actions)."""
    return await call.pool.fetchval(
        "SELECT CASE WHEN $3::text IS NULL THEN $1::jsonb ELSE parley.localize_widget_config($1, $2, $3) END"
        " || jsonb_build_object('actions', parley.widget_actions($2, $3))",
        chatbot["public_config"],
        chatbot["config"],
        locale or None,
    )


def _session_body(call: Call, claims: VisitorClaims, status: str | None, chatbot, config: dict | None = None) -> dict:
    token, expires_at = visitor_token(call.settings.secret_key, claims)
    return {
        "token": token,
        "expires_at": expires_at,
        "tenant_id": claims.tenant_id,
        "chatbot_id": claims.chatbot_id,
        "conversation_id": claims.conversation_id,
        "visitor_id": claims.visitor_id,
        "status": status,
        "config": chatbot["public_config"] if config is None else config,
    }


@api.route(
    "POST", "/api/widget/sessions", auth="public", body=SessionIn, response=SessionOut, status=201, tags=("widget",)
)
async def create_session(call: Call):
    """A visitor token: resumes the visitor's conversation, or none until the visitor speaks (or `start`)."""
    request, body = call.request, call.body
    chatbot = await _chatbot(call, body.chatbot_key)
    await _check_origin(call, chatbot)
    claims = VisitorClaims(
        chatbot["tenant_id"], chatbot["chatbot_id"], None, body.chatbot_key, 0, body.visitor_id or uuid.uuid4()
    )
    config = await _localized(call, chatbot, body.locale)
    if body.conversation_id is not None:
        mine = dataclasses.replace(claims, conversation_id=body.conversation_id)
        async with tenant_tx(call.pool, visitor_actor(request, mine)) as conn:
            row = await _conversation(conn, body.conversation_id, claims.chatbot_id)
        if row is not None:
            return _session_body(
                call, dataclasses.replace(mine, visitor_id=row["visitor_id"]), row["status"], chatbot, config
            )
        # a stale id from the page's storage: carry on as a visitor without a conversation
    if not body.start:
        return _session_body(call, claims, None, chatbot, config)
    row = await start_visitor_conversation(
        call.pool,
        claims,
        ip=client_ip(request),
        request_id=request.get(REQUEST_ID),
        page_url=body.page_url,
        referrer=body.referrer,
        user_agent=request.headers.get("User-Agent"),
        locale=body.locale,
        country=country_of(request),
    )
    return _session_body(
        call,
        dataclasses.replace(claims, conversation_id=row["id"], visitor_id=row["visitor_id"]),
        row["status"],
        chatbot,
        config,
    )


async def _token_chatbot(call: Call, *, grace: int, expired: str) -> tuple[VisitorClaims, dict]:
    """The body's visitor token, its chatbot (which must still exist) and the origin check."""
    try:
        claims = decode_visitor_token(call.settings.secret_key, call.body.token, grace=grace)
    except TokenError:
        raise ApiError(401, "invalid_token", expired) from None
    chatbot = await _chatbot(call, claims.public_key)
    if chatbot["chatbot_id"] != claims.chatbot_id or chatbot["tenant_id"] != claims.tenant_id:
        raise ApiError(401, "invalid_token", "The chatbot of this token no longer exists.")
    await _check_origin(call, chatbot)
    return claims, chatbot


@api.route(
    "POST",
    "/api/widget/sessions/refresh",
    auth="public",
    body=RefreshIn,
    response=SessionOut,
    status=201,
    tags=("widget",),
)
async def refresh_widget_session(call: Call):
    """A fresh visitor token for a current (or recently expired) one."""
    claims, chatbot = await _token_chatbot(
        call, grace=REFRESH_GRACE, expired="The conversation token is invalid or expired too long ago."
    )
    status = None
    if claims.conversation_id is not None:
        async with tenant_tx(call.pool, visitor_actor(call.request, claims)) as conn:
            row = await _conversation(conn, claims.conversation_id, claims.chatbot_id)
        if row is None:
            raise ApiError(404, "not_found", "No such conversation; start a new session.")
        status = row["status"]
        claims = dataclasses.replace(claims, visitor_id=row["visitor_id"])
    return _session_body(call, claims, status, chatbot)


class VisitorConversationOut(BaseModel):
    id: uuid.UUID
    status: str
    created_at: dt.datetime
    last_activity_at: dt.datetime
    preview: str | None


class VisitorConversationsOut(BaseModel):
    conversations: list[VisitorConversationOut]


@api.route(
    "POST",
    "/api/widget/conversations",
    auth="public",
    body=RefreshIn,
    response=VisitorConversationsOut,
    tags=("widget",),
)
async def visitor_conversations(call: Call):
    """The visitor's conversations with this chatbot (the token's visitor), newest first."""
    claims, _chatbot_row = await _token_chatbot(call, grace=0, expired="The visitor token is invalid or expired.")
    if claims.visitor_id is None:
        return {"conversations": []}
    async with tenant_tx(call.pool, visitor_actor(call.request, claims)) as conn:
        rows = await conn.fetch(
            "SELECT * FROM parley.visitor_conversations($1, $2)", claims.chatbot_id, claims.visitor_id
        )
    return {"conversations": [dict(r) for r in rows]}


# --------------------------------------------------------------------------- CORS


_CORS_PATHS = ("/api/widget/sessions", "/api/widget/sessions/refresh", "/api/widget/conversations")


async def _preflight(request: web.Request) -> web.Response:
    """Answer CORS preflight for any origin; the POST itself enforces the chatbot's list."""
    origin = request.headers.get("Origin")
    headers = {
        "Access-Control-Allow-Methods": "POST, OPTIONS",
        "Access-Control-Allow-Headers": "Content-Type, X-Request-Id",
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }
    if origin:
        headers["Access-Control-Allow-Origin"] = origin
    return web.Response(status=204, headers=headers)


async def _add_cors(request: web.Request, response: web.StreamResponse) -> None:
    origin = request.get(CORS_ORIGIN)
    if origin and request.path in _CORS_PATHS:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
        response.headers["Access-Control-Expose-Headers"] = "X-Request-Id"


def setup(app: web.Application) -> None:
    install_visitors(app)
    for path in _CORS_PATHS:
        app.router.add_route("OPTIONS", path, _preflight)
    app.on_response_prepare.append(_add_cors)
