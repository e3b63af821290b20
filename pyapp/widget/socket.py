"""`/ws/visitor`: the widget's WebSocket (docs/protocol.md); what plugs into it is in `pyapp.widget.hooks`."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
import uuid

import asyncpg
from aiohttp import WSMsgType, web
from pydantic import BaseModel, ValidationError

from pyapp import logs, metrics, tracing
from pyapp.context import POOL, REQUEST_ID, SETTINGS, client_ip, json_dumps
from pyapp.db import Actor, database_outage, tenant_tx
from pyapp.domains.host import domain_tenant_refuses
from pyapp.errors import ApiError, from_postgres
from pyapp.inputs import check_value, parse_json, storable
from pyapp.realtime.failure import close_after
from pyapp.realtime.hello import read_hello
from pyapp.realtime.relay import get_relay
from pyapp.realtime.relay import install as install_relay
from pyapp.realtime.sinks import VisitorSink
from pyapp.realtime.throttle import FrameBucket
from pyapp.security import TokenError
from pyapp.widget.batch import MessageRefused, Posted, VisitorMessages
from pyapp.widget.frames import (
    FRAME_MODELS,
    FeedbackFrame,
    HelloFrame,
    HumanFrame,
    LeadFrame,
    MessageFrame,
    RatingFrame,
    ReadFrame,
    TypingFrame,
    _validation_message,
    error_frame,
)
from pyapp.widget.hooks import BotTurn, VisitorContext, visitor_hooks
from pyapp.widget.tokens import VisitorClaims, decode_visitor_token, visitor_actor, visitor_token
from pyapp.widget.turns import install as install_turns
from pyapp.widget.turns import turn_runner
from pyapp.widget.visitors import chatbot_by_key, country_of, start_visitor_conversation
from pyapp.widget.visitors import install as install_visitors

log = logging.getLogger("parley.widget.socket")

MAX_FRAME_BYTES = 16 * 1024  # larger frames get an error frame
HARD_FRAME_BYTES = 64 * 1024  # larger frames close the socket (aiohttp's limit)
HELLO_TIMEOUT = 10.0
HEARTBEAT = 30.0
REPLAY_PAGE = 1000  # visible_messages page size on hello
# The language system texts are said in: the chatbot's, picked in SQL from the browser locale ($4).
SPOKEN_LANGUAGE = "parley.spoken_language(b.config, $4)"
NOTICE_EVERY = 60.0  # at most one stored limit notice per code per socket per minute


# --------------------------------------------------------------------------- the socket


class VisitorSession:
    """One visitor WebSocket after hello."""

    __slots__ = (
        "_frames",
        "_notices",
        "_read",
        "_typing",
        "actor",
        "app",
        "chatbot",
        "claims",
        "hello",
        "ip",
        "lead_requested",
        "lead_sent",
        "pool",
        "relay",
        "request",
        "request_id",
        "sink",
        "status",
        "visitor_messages",
        "ws",
    )

    def __init__(
        self,
        app: web.Application,
        ws: web.WebSocketResponse,
        claims: VisitorClaims,
        ip: str | None,
        request_id: str | None,
        chatbot: dict,
        request: web.Request | None = None,
        hello: HelloFrame | None = None,
    ) -> None:
        self.app = app
        self.ws = ws
        self.claims = claims
        self.relay = get_relay(app)
        self.pool = app[POOL]
        self.chatbot = chatbot
        self.actor = visitor_actor(None, claims, ip=ip, request_id=request_id)
        self.sink = VisitorSink(
            claims.tenant_id,
            self._send,
            self._close,
            conversation_id=claims.conversation_id,
            label="visitor",
            transport=request.transport if request is not None else None,
        )
        self.ip = ip
        self.request_id = request_id
        self.request = request
        self.hello = hello
        self.status = "bot" if claims.conversation_id is not None else None
        self.visitor_messages = 0
        self.lead_sent = False
        self.lead_requested = False
        self._typing: tuple[bool, float] = (False, 0.0)
        self._read = 0
        self._notices: dict[str, float] | None = None
        self._frames = FrameBucket()

    async def _send(self, text: str) -> None:
        await self.ws.send_str(text)

    async def _close(self, code: int, reason: str) -> None:
        await self.ws.close(code=code, message=reason.encode()[:120])

    def tx(self):
        return tenant_tx(self.pool, self.actor)

    def send(self, frame: dict) -> None:
        self.sink.frame(frame)

    # Start -------------------------------------------------------------------
    async def start(self, last_seen_id: int) -> bool:
        if self.claims.conversation_id is None:
            # Nobody has spoken yet: nothing to replay and nothing to hear, so no relay feed.
            self.sink.push(json_dumps({"type": "ready", "conversation_id": None, "status": None}), bounded=False)
            return True
        await self.relay.attach(self.sink)
        messages: list[dict] = []
        async with self.tx() as conn:
            conv = await conn.fetchrow(
                "SELECT c.status, c.chatbot_id FROM parley.conversations c WHERE c.id = $1", self.claims.conversation_id
            )
            if conv is None or conv["chatbot_id"] != self.claims.chatbot_id:
                return False
            after = last_seen_id
            while True:
                page = await conn.fetch(
                    "SELECT v.id, v.message FROM parley.visible_messages($1, $2, $3) v",
                    self.claims.conversation_id,
                    after,
                    REPLAY_PAGE,
                )
                messages.extend(r["message"] for r in page)
                if len(page) < REPLAY_PAGE:
                    break
                after = page[-1]["id"]
            if last_seen_id:
                self.visitor_messages = await conn.fetchval(
                    "SELECT count(*) FROM parley.visible_messages($1, 0, 1000) v WHERE v.author = 'visitor'",
                    self.claims.conversation_id,
                )
            # Waiting for a person while nobody of the team is online: said again after a reload.
            nobody = conv["status"] == "waiting_human" and await conn.fetchval("SELECT parley.members_online()") == 0
            if nobody or self._lead_mode() != "never":
                # The visitor's own lead only (RLS): a form already filled in is not asked again.
                self.lead_sent = await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM parley.leads l WHERE l.conversation_id = $1)",
                    self.claims.conversation_id,
                )
        self.status = conv["status"]
        self.sink.push(
            json_dumps({"type": "ready", "conversation_id": self.claims.conversation_id, "status": self.status}),
            bounded=False,
        )
        for msg in messages:
            if not last_seen_id and msg.get("author") == "visitor":
                self.visitor_messages += 1
            self.sink.replayed.add(msg["id"])
            self.sink.push(json_dumps({"type": "message", "message": msg}), bounded=False)
        if nobody:  # after the replay, as when the handoff happened: the widget says it again
            frame = {"type": "status", "status": self.status, "available": False, "lead_sent": self.lead_sent}
            self.sink.push(json_dumps(frame), bounded=False)
        # A lead form that was due and not filled in is asked for again on resume (after a reload).
        self._maybe_request_lead(after_message=True) or self._maybe_request_lead(
            before_handoff=self.status == "waiting_human"
        )
        self.sink.go_live()
        return True

    # Frames ------------------------------------------------------------------
    async def handle(self, raw: str) -> None:
        if len(raw.encode()) > MAX_FRAME_BYTES:
            self.send(error_frame("frame_too_large", f"Frames are limited to {MAX_FRAME_BYTES} bytes."))
            return
        try:
            data = parse_json(raw, check=False)
        except ApiError as exc:
            self.send(error_frame(exc.code, exc.message))
            return
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            self.send(error_frame("invalid_frame", "A frame is a JSON object with a type."))
            return
        kind = data["type"]
        if kind == "ping":
            self.send({"type": "pong"})
            return
        if not self._frames.allow():
            self.send(error_frame("rate_limited", "Too many frames; slow down."))
            return
        if kind == "hello":
            self.send(error_frame("already_authenticated", "hello was already received."))
            return
        model = FRAME_MODELS.get(kind)
        if model is None:
            self.send(error_frame("unknown_type", f"Unknown frame type {kind[:40]!r}."))
            return
        try:
            check_value(data)
            frame = model.model_validate(data)
        except (ValidationError, ApiError) as exc:
            message = exc.message if isinstance(exc, ApiError) else _validation_message(exc)
            self.send(
                error_frame(
                    "invalid_frame",
                    message,
                    **(
                        {"client_id": data["client_id"]}
                        if isinstance(data.get("client_id"), str)
                        and len(data["client_id"]) <= 100
                        and storable(data["client_id"])
                        else {}
                    ),
                )
            )
            return
        try:
            with tracing.frame_span(f"WS visitor {kind}", **{"parley.request_id": self.request_id}):
                await getattr(self, f"on_{kind}")(frame)
        except (asyncpg.PostgresError, MessageRefused) as exc:
            if database_outage(exc):  # not this frame's fault: the socket closes with 1013, the widget resends
                raise
            await self._refused(exc, frame)
        except (UnicodeEncodeError, asyncpg.DataError):
            self.send(error_frame("invalid_encoding", "Text contains characters that cannot be stored."))
        except ApiError as exc:
            self.send(error_frame(exc.code, exc.message))

    async def _refused(self, exc: asyncpg.PostgresError | MessageRefused, frame: BaseModel) -> None:
        mapped = from_postgres(exc)
        if mapped is None:
            log.exception("visitor frame failed", exc_info=exc)
            mapped = ApiError(500, "internal", "Something went wrong; please try again.")
        extra: dict = {"client_id": frame.client_id} if isinstance(frame, MessageFrame) else {}
        if extra and mapped.headers.get("Retry-After"):  # refused for now: the widget sends it again then
            extra["retry_after"] = int(mapped.headers["Retry-After"])
        self.send(error_frame(mapped.code, mapped.message, **extra))
        if mapped.status in (402, 429):
            if self.claims.conversation_id is None:
                await self._limit_reached(mapped)  # the conversation could not start
            else:
                await self._notice(mapped)

    def _limits_tx(self):
        return tenant_tx(self.pool, Actor(self.claims.tenant_id, kind="service", actor_id="limits"))

    async def _notice(self, err: ApiError) -> None:
        """Limits: the visitor must see it in the conversation, so store one system message (throttled)."""
        now = time.monotonic()
        if self._notices is None:
            self._notices = {}
        if now - self._notices.get(err.code, -NOTICE_EVERY) < NOTICE_EVERY:
            return
        self._notices[err.code] = now
        kind = "rate_limited" if err.status == 429 else "message_limit"
        try:
            async with self._limits_tx() as conn:
                said = await conn.fetchval(
                    f"SELECT parley.post_system_text($1, $2, {SPOKEN_LANGUAGE}, $5) FROM parley.chatbots b"
                    " WHERE b.tenant_id = parley.current_tenant_id() AND b.id = $3",
                    self.claims.conversation_id,
                    kind,
                    self.claims.chatbot_id,
                    self.hello.locale if self.hello else None,
                    {"notice": err.code},
                )
        except asyncpg.PostgresError:
            said = None  # could not store it (the limit covers system messages too): show it unstored
        if said is None or (not said["posted"] and said["to_widget"] and not said.get("limited")):
            await self._unstored_system_text(kind, err.code)

    async def _unstored_system_text(self, kind: str, code: str) -> None:
        try:
            async with self._limits_tx() as conn:
                said = await conn.fetchval(
                    f"SELECT parley.system_text($1, {SPOKEN_LANGUAGE}, $2) FROM parley.chatbots b"
                    " WHERE b.tenant_id = parley.current_tenant_id() AND b.id = $3",
                    kind,
                    self.claims.conversation_id,
                    self.claims.chatbot_id,
                    self.hello.locale if self.hello else None,
                )
        except asyncpg.PostgresError as exc:
            log.warning("system text %s unavailable: %s", kind, exc)
            return
        if said["to_widget"]:
            self._unstored_notice(said["body"], code)

    async def _converse(self, *, first: MessageFrame | None = None) -> asyncpg.Record | None:
        """Start the visitor's conversation if it has none; with `first` (a message frame) always (the
        visitor's conversation may have ended), storing that message with it: the row has `message`
        and `duplicate` then (start_visitor_conversation)."""
        if self.claims.conversation_id is not None and first is None:
            return None
        request, hello = self.request, self.hello
        row = await start_visitor_conversation(
            self.pool,
            self.claims,
            ip=self.ip,
            request_id=self.request_id,
            page_url=hello.page_url if hello else None,
            referrer=hello.referrer if hello else None,
            user_agent=request.headers.get("User-Agent") if request is not None else None,
            locale=hello.locale if hello else None,
            country=country_of(request) if request is not None else None,
            first=(first.body, first.client_id) if first is not None else None,
        )
        if self.claims.conversation_id is not None:  # the ended one: this socket follows the new one
            self.relay.detach(self.sink)  # re-attached below under the new conversation
            self.visitor_messages = 0
            self.lead_requested = self.lead_sent = False
        self.claims = dataclasses.replace(self.claims, conversation_id=row["id"], visitor_id=row["visitor_id"])
        self.actor = visitor_actor(None, self.claims, ip=self.ip, request_id=self.request_id)
        self.status = row["status"]
        self.sink.conversation_id = row["id"]
        await self.relay.attach(self.sink)
        token, expires_at = visitor_token(self.app[SETTINGS].secret_key, self.claims)
        self.send(
            {
                "type": "conversation",
                "conversation_id": row["id"],
                "status": row["status"],
                "token": token,
                "expires_at": expires_at,
            }
        )
        if first is not None:  # committed before this socket followed the conversation: sent here, not relayed
            self.sink.replayed.add(row["message"]["id"])
            self.send({"type": "message", "message": row["message"]})
        self.sink.go_live()
        self.relay.wake(self.claims.tenant_id)
        return row

    def _unstored_notice(self, body: str, code: str) -> None:
        """A system notice the visitor sees that is not (or could not be) stored: a message frame
        without an id, shaped like a stored one so the widget shows it the same way."""
        message = {"id": None, "author": "system", "body": body, "client_id": None, "notice": code}
        self.send({"type": "message", "message": {**message, "created_at": dt.datetime.now(dt.UTC).isoformat()}})

    async def _limit_reached(self, err: ApiError) -> None:
        """No conversation could start: say so (unstored, there is nowhere to store it) and offer the form."""
        await self._unstored_system_text(
            "rate_limited" if err.code == "rate_limited" else "conversation_limit", err.code
        )
        if err.code != "rate_limited" and not self.lead_sent:
            lead = (self.chatbot.get("public_config") or {}).get("lead_capture") or {}
            self.send(
                {"type": "lead_request", "fields": list(lead.get("fields") or ["name", "email"]), "reason": err.code}
            )

    async def on_message(self, frame: MessageFrame) -> None:
        # Stored together with whatever other visitors of this tenant sent meanwhile (one
        # statement, one commit; see message_batch), each exactly as post_message would. A
        # resend returns the row stored by an earlier transaction and writes nothing. A first
        # message starts the conversation and is stored with it (already sent to this socket).
        started = None
        if self.claims.conversation_id is None:
            started = await self._converse(first=frame)
        else:
            c, a = self.claims, self.actor
            try:
                posted = await message_batcher(self.app).post(
                    c.tenant_id, c.conversation, frame.body, frame.client_id, a.ip, a.request_id
                )
            except MessageRefused as exc:
                mapped = from_postgres(exc)
                if mapped is None or mapped.code != "conversation_closed":
                    raise
                started = await self._converse(first=frame)  # ended (rated, or closed too long ago): a new one
        if started is not None:
            posted = Posted(started["message"], started["duplicate"], started["status"])
        self.status = posted.status
        msg = posted.message
        if posted.duplicate:
            if started is None:  # no new event will come through the relay: answer the resend directly
                self.send({"type": "message", "message": msg})
            return
        self.relay.wake(self.claims.tenant_id)
        self.visitor_messages += 1
        self._maybe_request_lead(after_message=True)
        if self.status == "bot":
            schedule_bot_turn(
                self.app,
                BotTurn(
                    self.app,
                    self.claims.tenant_id,
                    self.claims.chatbot_id,
                    self.claims.conversation,
                    msg,
                    dict(self.chatbot.get("config") or {}),
                ),
            )

    async def on_typing(self, frame: TypingFrame) -> None:
        if self.claims.conversation_id is None:
            return  # typing is not speaking: nobody to tell yet
        now = time.monotonic()
        last_on, last_at = self._typing
        if frame.on == last_on and now - last_at < 3.0:
            return
        self._typing = (frame.on, now)
        await self.relay.signal(
            "typing", self.claims.tenant_id, self.claims.conversation_id, "visitor", int(frame.on), exclude=self.sink
        )

    async def on_read(self, frame: ReadFrame) -> None:
        if self.claims.conversation_id is None or frame.message_id <= self._read:
            return
        self._read = frame.message_id
        await self.relay.signal(
            "read", self.claims.tenant_id, self.claims.conversation_id, "visitor", frame.message_id, exclude=self.sink
        )

    async def on_human(self, frame: HumanFrame) -> None:
        await self._converse()
        self._maybe_request_lead(before_handoff=True)  # the form is shown; the handoff goes ahead anyway
        async with self.tx() as conn:
            self.status = await conn.fetchval(
                "SELECT c.status FROM parley.transition_conversation($1, 'human') c", self.claims.conversation_id
            )
        self.relay.wake(self.claims.tenant_id)

    async def on_lead(self, frame: LeadFrame) -> None:
        custom = {
            k: v
            for k, v in (frame.model_extra or {}).items()
            if k != "type" and isinstance(v, (str, int, float, bool)) and len(str(k)) <= 64
        }
        if self.claims.conversation_id is None:
            try:
                await self._converse()
            except asyncpg.PostgresError as exc:
                mapped = from_postgres(exc)
                if mapped is None or mapped.code == "rate_limited":
                    raise
                # No conversation can start now (a limit): the lead is kept on its own.
                await self._store_lead(
                    "SELECT parley.leave_lead($1, $2, $3, $4, $5, $6::inet)",
                    self.claims.chatbot_id,
                    frame,
                    custom,
                    self.ip,
                )
                self.send({"type": "lead_saved"})
                return
        await self._store_lead(
            "SELECT l.id FROM parley.capture_lead($1, $2, $3, $4, $5) l", self.claims.conversation_id, frame, custom
        )

    async def _store_lead(self, sql: str, owner: uuid.UUID | None, frame: LeadFrame, custom: dict, *more) -> None:
        """Store the visitor's details with ``sql`` (its arguments: the owner, the fields, ``more``):
        on the conversation, or on their own when none could start."""
        async with self.tx() as conn:
            await conn.execute(sql, owner, frame.name, frame.email, frame.phone, custom, *more)
        self.lead_sent = True

    async def _hooked(self, kind: str, frame: BaseModel) -> None:
        if self.claims.conversation_id is None:
            self.send(error_frame("no_conversation", "There is no conversation to rate yet."))
            return
        handler = visitor_hooks(self.app).frame_handlers.get(kind)
        if handler is None:
            self.send(error_frame("unsupported", f"{kind} is not supported yet."))
            return
        ctx = VisitorContext(self.app, self.claims, self.ip, self.request_id, self.sink)
        reply = await handler(ctx, frame.model_dump())
        if reply:
            self.send(reply)

    async def on_feedback(self, frame: FeedbackFrame) -> None:
        await self._hooked("feedback", frame)

    async def on_rating(self, frame: RatingFrame) -> None:
        await self._hooked("rating", frame)

    def _lead_mode(self) -> str:
        return str(((self.chatbot.get("public_config") or {}).get("lead_capture") or {}).get("mode") or "never")

    def _maybe_request_lead(self, *, after_message: bool = False, before_handoff: bool = False) -> bool:
        lead = (self.chatbot.get("public_config") or {}).get("lead_capture") or {}
        mode = lead.get("mode")
        if self.lead_sent or self.lead_requested:
            return False
        due = (after_message and mode == "after_messages" and self.visitor_messages >= int(lead.get("after") or 1)) or (
            before_handoff and mode == "before_handoff"
        )
        if due:
            self.lead_requested = True
            self.send({"type": "lead_request", "fields": list(lead.get("fields") or ["name", "email"])})
        return due


# --------------------------------------------------------------------------- bot turns


_MESSAGES = web.AppKey("visitor_messages", dict)


def message_batcher(app: web.Application) -> VisitorMessages:
    """The app's visitor message batcher (made on first use: it needs the pool, opened at startup)."""
    holder = app[_MESSAGES]
    if "batcher" not in holder:
        holder["batcher"] = VisitorMessages(app[POOL], get_relay(app).spawn)
    return holder["batcher"]


def schedule_bot_turn(app: web.Application, turn: BotTurn) -> asyncio.Task:
    """Run the bot responder on a stored question's turn in the background (pyapp/widget/turns.py:
    leased, so another server answers it should this one die); turns of one conversation run in order."""
    return turn_runner(app).schedule(turn)


# --------------------------------------------------------------------------- handler


async def visitor_socket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=HARD_FRAME_BYTES)
    await ws.prepare(request)
    app = request.app
    session: VisitorSession | None = None
    try:
        hello = await read_hello(ws, HelloFrame, HELLO_TIMEOUT)
        if hello is None:
            return ws
        try:
            claims = decode_visitor_token(app[SETTINGS].secret_key, hello.token)
        except TokenError:
            await ws.send_json(error_frame("invalid_token", "The conversation token is invalid or expired."))
            await ws.close(code=4401, message=b"invalid token")
            return ws
        logs.bind(tenant_id=claims.tenant_id, conversation_id=claims.conversation_id)
        chatbot = await chatbot_by_key(app, claims.public_key)
        if (
            chatbot is None
            or chatbot["chatbot_id"] != claims.chatbot_id
            or domain_tenant_refuses(request, chatbot["tenant_id"])  # another workspace's custom domain
        ):
            await ws.send_json(error_frame("unknown_chatbot", "This chatbot no longer exists."))
            await ws.close(code=4403, message=b"unknown chatbot")
            return ws
        session = VisitorSession(app, ws, claims, client_ip(request), request.get(REQUEST_ID), chatbot, request, hello)
        if not await session.start(hello.last_seen_id):
            session.sink.push(json_dumps(error_frame("not_found", "No such conversation.")))
            await session.sink.flush()
            await ws.close(code=4403, message=b"no such conversation")
            return ws
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await session.handle(msg.data)
            elif msg.type == WSMsgType.BINARY:
                session.send(error_frame("invalid_frame", "Frames are JSON text."))
            elif msg.type == WSMsgType.ERROR:
                break
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as exc:
        await close_after(ws, exc, "visitor socket", refused=lambda status: status in (401, 403, 404))
    finally:
        if session is not None:
            session.relay.detach(session.sink)
    return ws


def setup(app: web.Application) -> None:
    install_relay(app)
    install_visitors(app)
    visitor_hooks(app)
    install_turns(app)
    app[_MESSAGES] = {}
    app.router.add_get("/ws/visitor", metrics.tracked("visitor", visitor_socket))
