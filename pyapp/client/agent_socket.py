"""The agent socket (`/ws/agent`, docs/protocol.md) as a client follows it: hello with the last event id
seen, so a reconnect resumes where the previous connection ended, then every event to a callback.
Imports nothing from the server (only aiohttp), like the rest of the client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp


class AgentFeed:
    """The tenant's events over the agent socket; `last_event_id` is where the next connection resumes
    (None: start live; 0 once a connection was ready, so a reconnect replays what it missed)."""

    def __init__(self, token: str):
        self.token = token
        self.last_event_id: int | None = None

    async def follow(
        self,
        http: aiohttp.ClientSession,
        base_url: str,
        on_event: Callable[[dict[str, Any]], None],
        ready: asyncio.Event | None = None,
        **ws_options: Any,
    ) -> None:
        """One connection: every event frame's event to `on_event`, in order, until the socket closes;
        `ready` is set once the server said ready. Connection errors are the caller's."""
        url = base_url.replace("http", "ws", 1) + "/ws/agent"
        async with http.ws_connect(url, **ws_options) as ws:
            hello: dict[str, Any] = {"type": "hello", "token": self.token}
            if self.last_event_id is not None:
                hello["last_event_id"] = self.last_event_id
            await ws.send_str(json.dumps(hello))
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                frame = json.loads(msg.data)
                if frame.get("type") == "ready":
                    if ready is not None:
                        ready.set()
                    if self.last_event_id is None:
                        self.last_event_id = 0
                event = frame.get("event") or {}
                if frame.get("type") == "event" and event.get("id"):
                    self.last_event_id = max(self.last_event_id or 0, event["id"])
                    on_event(event)
