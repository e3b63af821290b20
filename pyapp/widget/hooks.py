"""What plugs into the visitor socket: the bot responder and handlers of the frames it only routes.

Hooks belong to one application (`visitor_hooks(app)`), set by the surfaces' `setup(app)`;
nothing is installed process-wide at import, so two apps in one process can differ.
- `visitor_hooks(app).set_bot_responder(fn)`: `async fn(turn: BotTurn)` runs as a background task on the instance
  holding the visitor's socket, after a visitor message is stored while the conversation is
  with the bot, or on any instance that picks the turn up after its server died
  (pyapp/widget/turns.py, sql/53_bot_turns.sql). It may stream chunks with `turn.stream(...)`
  (local sockets only, never NOTIFY) and ends the turn with what it says, in that transaction:
  `await turn.reply(body, meta=...)`, `await turn.say(kind, locale)` (a system text), or its own
  writes in `async with turn.ending() as conn`. A responder that returns having said nothing ends
  the turn silently; one that raises leaves it to be picked up again. It should stop when
  `turn.lost` (another run has the turn). Turns of one conversation run one after another. The
  turn's first transaction (`service_tx`, `ending`, `reply`, `say`) first asks SQL whether the turn is
  still this run's (`turn.admit`, set by the runner); when it is not, it raises `TurnLost` before
  anything is read or written, and the run ends silently (a responder lets it through); so a
  responder begins with a transaction before it calls out or streams (the assistant's reads its
  state). The default posts a short placeholder reply.
- `visitor_hooks(app).set_frame_handler("feedback" | "rating", fn)`: `async fn(ctx: VisitorContext, frame: dict)`
  stores a CSAT frame (in `ctx.tx()`, the visitor's own transaction) and may return a frame to
  send back. Without a handler the visitor gets `{"type":"error","code":"unsupported"}`.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
from aiohttp import web

from pyapp import metrics
from pyapp.context import POOL, SETTINGS
from pyapp.db import Actor, tenant_tx
from pyapp.realtime.relay import Relay, get_relay
from pyapp.realtime.sinks import VisitorSink
from pyapp.widget.tokens import VisitorClaims, visitor_actor


class TurnLost(Exception):
    """The turn is not this run's to run (ended elsewhere, or another server's): say nothing."""


Admit = Callable[[asyncpg.Connection], Awaitable[None]]


@dataclass
class BotTurn:
    """What a bot responder gets: the conversation, the visitor's message, and ways to answer."""

    app: web.Application
    tenant_id: uuid.UUID
    chatbot_id: uuid.UUID
    conversation_id: uuid.UUID
    message: dict
    chatbot_config: dict = field(default_factory=dict)
    lost: bool = False  # the turn is no longer this run's (ended elsewhere, or picked up by another server)
    ended: bool = False  # the turn ended in this run's transaction (committed)
    ended_here: bool = True  # ...and was still open then (False: another run had ended it)
    # The runner's check that the turn is this run's, run first in the turn's first transaction
    # (raises TurnLost when it is not); None once it passed, or for a turn run outside the runner.
    admit: Admit | None = None

    @property
    def question_id(self) -> int | None:
        """The visitor message the turn answers (its parley.bot_turns row)."""
        value = self.message.get("id")
        return int(value) if value is not None else None

    @property
    def key(self) -> str | None:
        """The client_id of what the turn ends with: one per question, so of two runs of one turn
        (a slow first run and a pick-up) only the first to store says anything."""
        return f"bot:{self.question_id}" if self.question_id is not None else None

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

    @contextlib.asynccontextmanager
    async def service_tx(self) -> AsyncIterator[asyncpg.Connection]:
        """A transaction in the tenant as the server itself; the turn's first one begins with
        `admit` (TurnLost when the turn is not this run's, before anything else runs)."""
        async with tenant_tx(self.pool, self.service_actor) as conn:
            if self.admit is not None:
                await self.admit(conn)
                self.admit = None
            yield conn

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

    @contextlib.asynccontextmanager
    async def ending(self) -> AsyncIterator[asyncpg.Connection]:
        """A service transaction that ends the turn (parley.end_bot_turn) with what it writes, so the
        claim and the answer commit together. `ended_here` is then whether this run ended it (False:
        another run had, and what this one stored under `key` was a resend of that one's)."""
        async with self.service_tx() as conn:
            yield conn
            if self.question_id is not None:
                self.ended_here = bool(await conn.fetchval("SELECT parley.end_bot_turn($1)", self.question_id))
        self.ended = True
        self.relay.wake(self.tenant_id)

    async def end(self) -> None:
        """End the turn saying nothing (a person has the conversation, nothing to answer)."""
        async with self.ending():
            pass

    async def reply(
        self, body: str, *, meta: dict | None = None, author: str = "bot", client_id: str | None = None
    ) -> dict:
        """Store the bot's answer (one post_message) and end the turn with it; everyone gets it through
        the relay. Idempotent under its client_id (default: the turn's key): storing it again returns
        the stored row (post_message)."""
        async with self.ending() as conn:
            message = await conn.fetchval(
                "SELECT parley.message_json(m) FROM parley.post_message($1, $2, $3, $4, $5) m",
                self.conversation_id,
                author,
                body,
                client_id or self.key,
                meta or {},
            )
        metrics.MESSAGES.labels(author).inc()
        return message

    async def say(self, kind: str, locale: str | None, meta: dict | None = None) -> None:
        """End the turn with a system text (assistant_unavailable, ai_quota, ...), stored under the
        turn's key as the tenant's template for it asks (parley.post_system_text)."""
        async with self.ending() as conn:
            await conn.fetchval(
                "SELECT parley.post_system_text($1, $2, $3, $4, $5)",
                self.conversation_id,
                kind,
                locale,
                meta or {},
                self.key,
            )


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
