"""`GET /api/events`: the tenant's event stream as Server-Sent Events, for members.

`id:` is the event id; a reconnecting EventSource sends `Last-Event-ID` (or pass
`?last_event_id=N`) and gets every event after it from the table first. Without either the
stream starts live. A comment line every `KEEPALIVE` seconds keeps proxies from timing out.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from pyapp.agent.replay import RECHECK_SECONDS, recheck, replay_events
from pyapp.api import Call, api
from pyapp.auth import check_member
from pyapp.context import SETTINGS
from pyapp.db import outage_error
from pyapp.errors import ApiError
from pyapp.inputs import INT64_MAX
from pyapp.realtime.relay import get_relay
from pyapp.realtime.relay import install as install_relay
from pyapp.realtime.sinks import SseSink

KEEPALIVE = 15.0


class EventsQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    last_event_id: int | None = Field(default=None, ge=0)


@api.route(
    "GET",
    "/api/events",
    auth="member",
    query=EventsQuery,
    summary="The tenant's events as Server-Sent Events",
    tags=("events",),
    media="text/event-stream",
)
async def stream_events(call: Call):
    """The tenant's events as Server-Sent Events (resume with Last-Event-ID)."""
    request = call.request
    after = call.query.last_event_id
    header = request.headers.get("Last-Event-ID", "").strip()
    if header:
        if not header.isascii() or not header.isdigit() or len(header) > 19 or int(header) > INT64_MAX:
            raise ApiError(422, "validation_failed", "Last-Event-ID must be an event id.")
        after = int(header)
    await check_member(call.pool, call.member)  # before anything streams
    response = web.StreamResponse(
        status=200,
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache, no-transform",
            "X-Accel-Buffering": "no",
            "Connection": "keep-alive",
        },
    )
    await response.prepare(request)

    async def send(data: bytes) -> None:
        await response.write(data)

    async def close(code: int, reason: str) -> None:
        pass  # the handler returns once the sink is closed

    relay = get_relay(request.app)
    sink = SseSink(call.member.tenant_id, send, close, label="sse", transport=request.transport)
    sink.actor = call.member  # a revocation (parley_revoked) ends the stream at once
    try:
        await relay.attach(sink)
        sink.push(b"retry: 2000\n\n", bounded=False)
        if after is not None:
            _, truncated = await replay_events(call.pool, call.member, after, sink)
            if truncated:
                sink.push(b'event: error\ndata: {"code":"replay_truncated"}\n\n', bounded=False)
        sink.go_live()
        keepalive = float(request.app[SETTINGS].extra.get("sse_keepalive", KEEPALIVE))
        last_check = asyncio.get_running_loop().time()
        while not await sink.wait_closed(keepalive):
            sink.push(b": keep-alive\n\n")
            now = asyncio.get_running_loop().time()
            if now - last_check >= RECHECK_SECONDS:
                last_check = now
                err = await recheck(call.pool, call.member)
                if err is not None:
                    sink.push(f'event: error\ndata: {{"code":"{err.code}"}}\n\n'.encode())
                    await sink.flush()
                    break
            if request.transport is None or request.transport.is_closing():
                break
    except Exception as exc:
        # The tenant's events cannot be read now (an outage, or no pooled connection free in time, as
        # the relay or the replay met it): say which, as the sockets do before closing 1013, and the
        # client reconnects after `retry`. Else the client went away, or the relay is shutting down.
        err = outage_error(exc)
        if err is not None:
            with contextlib.suppress(ConnectionError):
                await response.write(f'retry: 2000\n\nevent: error\ndata: {{"code":"{err.code}"}}\n\n'.encode())
        elif not isinstance(exc, ConnectionError):
            raise
    finally:
        relay.detach(sink)
    return response


def setup(app: web.Application) -> None:
    install_relay(app)
