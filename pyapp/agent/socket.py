"""`/ws/agent`: every event of the member's tenant, live, with resume from `last_event_id`.

The first frame carries the credential (a member's access JWT or a tenant API key with the
`read` scope), resolved by `pyapp.auth.resolve_member` as for REST and SSE, then checked by
`parley.begin_request` before anything is sent. The session is
re-checked every `RECHECK_SECONDS`; a removed member, revoked key or ended session closes the socket (4401)
at once through the relay (sql/26_revocation.sql).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from typing import Literal

import asyncpg
from aiohttp import WSMsgType, web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pyapp import metrics
from pyapp.agent.replay import RECHECK_SECONDS, recheck, replay_events
from pyapp.auth import check_member, resolve_member
from pyapp.context import POOL, REQUEST_ID, client_ip, json_dumps
from pyapp.db import Actor
from pyapp.errors import ApiError, from_postgres
from pyapp.inputs import INT64_MAX, parse_json
from pyapp.realtime.failure import close_after, closed_for_outage
from pyapp.realtime.hello import read_hello
from pyapp.realtime.relay import Relay, get_relay
from pyapp.realtime.relay import install as install_relay
from pyapp.realtime.sinks import Sink
from pyapp.realtime.throttle import FrameBucket

HELLO_TIMEOUT = 10.0
HEARTBEAT = 30.0
MAX_FRAME_BYTES = 16 * 1024
MAX_TRACKED = 256  # conversations whose typing/read state one socket remembers


class _Hello(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["hello"]
    token: str = Field(min_length=10, max_length=4096)
    last_event_id: int | None = Field(default=None, ge=0, le=INT64_MAX)


class _Typing(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["typing"]
    conversation_id: uuid.UUID
    on: bool


class _Read(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["read"]
    conversation_id: uuid.UUID
    message_id: int = Field(ge=1, le=INT64_MAX)


def _error(code: str, message: str) -> str:
    return json_dumps({"type": "error", "code": code, "message": message})


def _remember(state: OrderedDict, key, value) -> None:
    """Per-socket state per conversation, bounded: the oldest conversations are forgotten first."""
    state[key] = value
    state.move_to_end(key)
    while len(state) > MAX_TRACKED:
        state.popitem(last=False)


class AgentSession:
    def __init__(
        self,
        app: web.Application,
        ws: web.WebSocketResponse,
        actor: Actor,
        *,
        can_write: bool,
        transport: asyncio.Transport | None = None,
    ) -> None:
        self.app = app
        self.ws = ws
        self.actor = actor
        self.can_write = can_write  # typing and read receipts reach visitors: not for read-only API keys
        self.relay: Relay = get_relay(app)
        self.sink = Sink(actor.tenant_id, self._send, self._close, label=f"agent:{actor.actor_id}", transport=transport)
        self.sink.actor = actor  # a revocation (parley_revoked) closes it at once
        self._typing: OrderedDict[uuid.UUID, tuple[bool, float]] = OrderedDict()
        self._read: OrderedDict[uuid.UUID, int] = OrderedDict()
        self._frames = FrameBucket()

    async def _send(self, text: str) -> None:
        await self.ws.send_str(text)

    async def _close(self, code: int, reason: str) -> None:
        await self.ws.close(code=code, message=reason.encode()[:120])

    async def watch_credential(self) -> None:
        while not self.ws.closed:
            await asyncio.sleep(RECHECK_SECONDS)
            err = await recheck(self.app[POOL], self.actor)
            if err is not None:
                self.sink.push(_error(err.code, err.message))
                await self.sink.flush()
                self.sink.close_soon(4401, err.code)
                return

    async def handle(self, raw: str) -> None:
        if len(raw) > MAX_FRAME_BYTES:
            self.sink.push(_error("frame_too_large", "Frame too large."))
            return
        try:
            data = parse_json(raw)
        except ApiError as exc:
            self.sink.push(_error(exc.code, exc.message))
            return
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "ping":
            self.sink.push('{"type":"pong"}')
            return
        if not self._frames.allow():
            self.sink.push(_error("rate_limited", "Too many frames; slow down."))
            return
        if kind in ("typing", "read") and not self.can_write:
            self.sink.push(_error("insufficient_scope", "This API key lacks the 'write' scope."))
            return
        try:
            if kind == "typing":
                typing = _Typing.model_validate(data)
                now = time.monotonic()
                last_on, last_at = self._typing.get(typing.conversation_id, (False, 0.0))
                if typing.on != last_on or now - last_at >= 3.0:
                    _remember(self._typing, typing.conversation_id, (typing.on, now))
                    await self.relay.signal(
                        "typing",
                        self.actor.tenant_id,
                        typing.conversation_id,
                        "agent",
                        int(typing.on),
                        exclude=self.sink,
                    )
            elif kind == "read":
                read = _Read.model_validate(data)
                if read.message_id > self._read.get(read.conversation_id, 0):
                    _remember(self._read, read.conversation_id, read.message_id)
                    await self.relay.signal(
                        "read", self.actor.tenant_id, read.conversation_id, "agent", read.message_id, exclude=self.sink
                    )
            elif kind == "hello":
                self.sink.push(_error("already_authenticated", "hello was already received."))
            else:
                self.sink.push(_error("unknown_type", "Unknown frame type."))
        except ValidationError as exc:
            err = exc.errors()[0]
            self.sink.push(_error("invalid_frame", f"{'.'.join(map(str, err['loc']))}: {err['msg']}"))


async def agent_socket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=64 * 1024)
    await ws.prepare(request)
    app = request.app
    session: AgentSession | None = None
    watcher: asyncio.Task | None = None
    try:
        hello = await read_hello(ws, _Hello, HELLO_TIMEOUT)
        if hello is None:
            return ws
        try:
            credential = await resolve_member(
                app, hello.token, scope="read", ip=client_ip(request), request_id=request.get(REQUEST_ID)
            )
            actor = credential.member
            await check_member(app[POOL], actor)
        except ApiError as exc:
            await ws.send_str(_error(exc.code, exc.message))
            await ws.close(code=4401 if exc.status == 401 else 4403, message=exc.code.encode())
            return ws
        except asyncpg.PostgresError as exc:
            if await closed_for_outage(ws, exc):
                return ws
            mapped = from_postgres(exc) or ApiError(500, "internal", "Internal error.")
            await ws.send_str(_error(mapped.code, mapped.message))
            await ws.close(
                code=4401 if mapped.status == 401 else 4403 if mapped.status < 500 else 1011,
                message=mapped.code.encode(),
            )
            return ws
        session = AgentSession(
            app,
            ws,
            actor,
            can_write=actor.kind != "api_key" or "write" in credential.scopes,
            transport=request.transport,
        )
        await session.relay.attach(session.sink)
        session.sink.push(json_dumps({"type": "ready", "tenant_id": actor.tenant_id}), bounded=False)
        if hello.last_event_id is not None:
            _, truncated = await replay_events(app[POOL], actor, hello.last_event_id, session.sink)
            if truncated:
                session.sink.push(_error("replay_truncated", "Too many events missed; reload the conversations."))
        session.sink.go_live()
        watcher = asyncio.get_running_loop().create_task(session.watch_credential())
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await session.handle(msg.data)
            elif msg.type == WSMsgType.ERROR:
                break
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as exc:
        await close_after(ws, exc, "agent socket", refused=lambda status: status < 500)
    finally:
        if watcher is not None:
            watcher.cancel()
        if session is not None:
            session.relay.detach(session.sink)
    return ws


def setup(app: web.Application) -> None:
    install_relay(app)
    app.router.add_get("/ws/agent", metrics.tracked("agent", agent_socket))
