"""What plugs into the visitor socket: the bot responder and handlers of the frames it only routes.

Hooks belong to one application (`visitor_hooks(app)`), set by the surfaces' `setup(app)`;
nothing is installed process-wide at import, so two apps in one process can differ.
- `visitor_hooks(app).set_bot_responder(fn)`: `async fn(turn: BotTurn)` runs as a background task on the instance
  holding the visitor's socket, after a visitor message is stored while the conversation is
  with the bot. It may stream chunks with `turn.stream(...)` (local sockets only, never NOTIFY)
  and stores its answer with `await turn.reply(body, meta=...)`. Turns of one conversation run
  one after another on this instance. The default posts a short placeholder reply.
- `visitor_hooks(app).set_frame_handler("feedback" | "rating", fn)`: `async fn(ctx: VisitorContext, frame: dict)`
  stores a CSAT frame (in `ctx.tx()`, the visitor's own transaction) and may return a frame to
  send back. Without a handler the visitor gets `{"type":"error","code":"unsupported"}`.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
from aiohttp import web

from pyapp import metrics
from pyapp.context import POOL, SETTINGS
from pyapp.db import Actor, tenant_fetchval, tenant_tx
from pyapp.realtime.relay import Relay, get_relay
from pyapp.realtime.sinks import VisitorSink
from pyapp.widget.tokens import VisitorClaims, visitor_actor


@dataclass
class BotTurn:
    """What a bot responder gets: the conversation, the visitor's message, and ways to answer."""

    app: web.Application
    tenant_id: uuid.UUID
    chatbot_id: uuid.UUID
    conversation_id: uuid.UUID
    message: dict
    chatbot_config: dict = field(default_factory=dict)

    @property
    def pool(self) -> asyncpg.Pool:
        return self.app[POOL]

    @property
    def relay(self) -> Relay:
        return get_relay(self.app)

    @property
    def settings(self):
        return self.app[SETTINGS]

    @property
    def service_actor(self) -> Actor:
        """The server itself acting in the tenant (actor kind `service`)."""
        return Actor(self.tenant_id, kind="service", actor_id="bot")

    def service_tx(self):
        """A transaction in the tenant as the server itself."""
        return tenant_tx(self.pool, self.service_actor)

    def stream(self, stream_id: str, delta: str) -> None:
        """A chunk of the reply being generated: local visitor + local agents only."""
        self.relay.broadcast_local(
            self.tenant_id, self.conversation_id, {"type": "stream", "stream_id": stream_id, "delta": delta}
        )

    def to_visitor(self, frame: dict) -> None:
        """A frame for the visitor's socket(s) on this instance only (e.g. lead_request)."""
        self.relay.broadcast_local(self.tenant_id, self.conversation_id, frame, agents=False)

    def typing(self, on: bool = True) -> None:
        self.relay.broadcast_local(
            self.tenant_id, self.conversation_id, {"type": "typing", "author": "bot", "on": bool(on)}
        )

    async def reply(
        self, body: str, *, meta: dict | None = None, author: str = "bot", client_id: str | None = None
    ) -> dict:
        """Store the bot's answer (one post_message); everyone gets it through the relay. With a
        client_id it is idempotent: storing it again returns the stored row (post_message)."""
        message = await tenant_fetchval(
            self.pool,
            self.service_actor,
            "SELECT parley.message_json(m) FROM parley.post_message($1, $2, $3, $4, $5) m",
            self.conversation_id,
            author,
            body,
            client_id,
            meta or {},
        )
        metrics.MESSAGES.labels(author).inc()
        self.relay.wake(self.tenant_id)
        return message


BotResponder = Callable[[BotTurn], Awaitable[None]]
FrameHandler = Callable[["VisitorContext", dict], Awaitable[dict | None]]

PLACEHOLDER_REPLY = (
    "Thanks for your message! Our assistant is not set up yet. "
    "If you'd like to talk to a person, choose \u201cTalk to a human\u201d."
)


async def placeholder_responder(turn: BotTurn) -> None:
    """Until the assistant lands: a short reply offering a human."""
    await turn.reply(PLACEHOLDER_REPLY, meta={"placeholder": True, "offer_human": True})


ROUTED_FRAMES = ("feedback", "rating")  # frame types the socket only routes to a handler


class VisitorHooks:
    """One application's bot responder and routed-frame handlers."""

    __slots__ = ("bot_responder", "frame_handlers")

    def __init__(self) -> None:
        self.bot_responder: BotResponder = placeholder_responder
        self.frame_handlers: dict[str, FrameHandler] = {}

    def set_bot_responder(self, responder: BotResponder | None) -> None:
        """Install the bot (None restores the placeholder)."""
        self.bot_responder = responder or placeholder_responder

    def set_frame_handler(self, frame_type: str, handler: FrameHandler | None) -> None:
        """Handle a visitor frame type the socket only routes (`feedback`, `rating`); None removes it."""
        if frame_type not in ROUTED_FRAMES:
            raise ValueError(f"frame type {frame_type!r} is handled by the visitor socket itself")
        if handler is None:
            self.frame_handlers.pop(frame_type, None)
        else:
            self.frame_handlers[frame_type] = handler


HOOKS = web.AppKey("visitor_hooks", VisitorHooks)


def visitor_hooks(app: web.Application) -> VisitorHooks:
    """The app's hooks (made on first use, which is some surface's `setup`, before the app starts)."""
    hooks = app.get(HOOKS)
    if hooks is None:
        hooks = app[HOOKS] = VisitorHooks()
    return hooks


@dataclass
class VisitorContext:
    """One visitor socket as hooks see it."""

    app: web.Application
    claims: VisitorClaims
    ip: str | None
    request_id: str | None
    sink: VisitorSink

    @property
    def tenant_id(self) -> uuid.UUID:
        return self.claims.tenant_id

    @property
    def chatbot_id(self) -> uuid.UUID:
        return self.claims.chatbot_id

    @property
    def conversation_id(self) -> uuid.UUID:
        """Frame handlers run only once the visitor has a conversation (the socket checks)."""
        return self.claims.conversation

    def tx(self):
        """The visitor's own tenant transaction (actor kind `visitor`, actor id = conversation id)."""
        return tenant_tx(self.app[POOL], visitor_actor(None, self.claims, ip=self.ip, request_id=self.request_id))

    def send(self, frame: dict) -> None:
        self.sink.frame(frame)
