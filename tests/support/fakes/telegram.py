"""A fake Telegram Bot API on 127.0.0.1, speaking Telegram's HTTP API (POST /bot<token>/<method>,
JSON in, {"ok": ..., "result"|"description", "parameters"} out).

Methods: getMe, createForumTopic, editForumTopic, closeForumTopic, reopenForumTopic, sendMessage
(with message_thread_id; 400 "message is too long" past 4096 UTF-16 code units, 400 when the
topic does not exist), pinChatMessage (a message of the chat, pinned in the forum topic it was
sent in: ``pinned[(chat, thread)]``; 400 when the message is not there), answerCallbackQuery,
setWebhook, deleteWebhook, getUpdates (409 while a
webhook is set; with a timeout it waits for ``push_update``). Scripted answers: ``fail_next(method, status, retry_after=...)`` answers the
next call of a method with that status (429 with ``parameters.retry_after``); ``remove_bot(chat)``
answers 403 for that chat from then on. ``hold_next(method, event, after=n)``: the call of a method
after the next n waits for the event before it is answered (counted in ``held`` meanwhile). Unknown tokens get 401.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

# The bots and the forum group the channel tests use (tests/channels/conftest.py: the tg fixture).
TOKEN = "123456789:AAH-fake-token-for-tests-0123456789abcd"
OTHER_TOKEN = "987654321:BBH-other-token-for-tests-987654321xy"
CHAT = -1001234567890


@dataclass
class Call:
    at: float
    token: str
    method: str
    params: dict[str, Any]
    status: int


@dataclass
class Topic:
    chat_id: int
    thread_id: int
    name: str
    closed: bool = False


class FakeTelegram:
    def __init__(self):
        self.bots: dict[str, dict[str, Any]] = {}
        self.calls: list[Call] = []
        self.topics: dict[tuple[int, int], Topic] = {}
        self.messages: list[dict[str, Any]] = []
        self.updates: dict[str, list[dict[str, Any]]] = {}  # per bot token, until confirmed by an offset
        self.webhooks: dict[str, dict[str, Any]] = {}
        self.removed: set[int] = set()
        self.scripted: dict[str, list[tuple[int, int | None, str | None]]] = {}
        self.answered_callbacks: list[dict[str, Any]] = []
        self.pinned: dict[tuple[int, int | None], list[int]] = {}  # (chat, topic) → message ids, pinned order
        self.commands: dict[str, list[dict[str, Any]]] = {}  # setMyCommands, per bot token
        self.polls: list[dict[str, Any]] = []  # getUpdates parameters, as each call arrives
        self.holds: dict[str, list[asyncio.Event | None]] = {}  # per method, per call (None: not held)
        self.held = 0  # calls that waited for (or wait for) a hold
        self._next_thread = 100
        self._next_message = 1000
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""

    def add_bot(self, token: str, bot_id: int, username: str) -> None:
        self.bots[token] = {"id": bot_id, "is_bot": True, "first_name": username, "username": username}

    def fail_next(self, method: str, status: int, *, retry_after: int | None = None,
                  description: str | None = None) -> None:
        self.scripted.setdefault(method, []).append((status, retry_after, description))

    def hold_next(self, method: str, event: asyncio.Event, *, after: int = 0) -> None:
        self.holds.setdefault(method, []).extend([None] * after + [event])

    async def push_update(self, token: str, update: dict[str, Any]) -> None:
        """Queue an update for the bot's getUpdates (a waiting long poll returns it at once)."""
        self.updates.setdefault(token, []).append(update)
        async with self._changed:
            self._changed.notify_all()

    def remove_bot(self, chat_id: int) -> None:
        self.removed.add(chat_id)

    def sent(self, chat_id: int, thread_id: int | None = None) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["chat"]["id"] == chat_id
                and (thread_id is None or m.get("message_thread_id") == thread_id)]

    async def wait_for(self, predicate, timeout: float = 10.0):
        """Wait until predicate() is truthy (re-checked on every API call); returns its value."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                while not (value := predicate()):
                    await self._changed.wait()
                return value

    async def start(self) -> FakeTelegram:
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self._handle)
        # A long poll whose client went away ends with it (as at Telegram), so closing the fake
        # never waits out a getUpdates timeout.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        token, method = request.match_info["token"], request.match_info["method"]
        try:
            params = await request.json() if request.can_read_body else {}
        except ValueError:
            params = {}
        params = params if isinstance(params, dict) else {}
        if method == "getUpdates":
            self.polls.append(params)  # as it arrives (a long poll is answered later)
            async with self._changed:
                self._changed.notify_all()
        if method == "getUpdates" and token in self.bots and token not in self.webhooks:
            await self._long_poll(token, params)
        hold = self.holds[method].pop(0) if self.holds.get(method) else None
        if hold is not None:
            async with self._changed:
                self.held += 1
                self._changed.notify_all()
            await hold.wait()
        status, body = self._answer(token, method, params)
        self.calls.append(Call(time.monotonic(), token, method, params, status))
        async with self._changed:
            self._changed.notify_all()
        return web.json_response(body, status=status)

    def _pending(self, token: str, p: dict[str, Any]) -> list[dict[str, Any]]:
        """Updates from offset on; the ones before it are confirmed and dropped, as Telegram does."""
        offset = int(p.get("offset") or 0)
        self.updates[token] = [u for u in self.updates.get(token, []) if u["update_id"] >= offset]
        return list(self.updates[token])

    async def _long_poll(self, token: str, p: dict[str, Any]) -> None:
        """getUpdates with a timeout waits until an update is there (or the timeout passes)."""
        timeout = float(p.get("timeout") or 0)
        if timeout <= 0 or self.scripted.get("getUpdates"):
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout), self._changed:
                while not self._pending(token, p):
                    await self._changed.wait()

    def _answer(self, token: str, method: str, p: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        bot = self.bots.get(token)
        if bot is None:
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        if self.scripted.get(method):
            status, retry_after, description = self.scripted[method].pop(0)
            body: dict[str, Any] = {"ok": False, "error_code": status, "description": description or f"scripted {status}"}
            if retry_after is not None:
                body["parameters"] = {"retry_after": retry_after}
                body["description"] = f"Too Many Requests: retry after {retry_after}"
            return status, body
        chat_id = p.get("chat_id")
        if chat_id in self.removed:
            return 403, {"ok": False, "error_code": 403, "description": "Forbidden: bot was kicked from the supergroup chat"}
        ok = lambda result: (200, {"ok": True, "result": result})  # noqa: E731
        bad = lambda text: (400, {"ok": False, "error_code": 400, "description": f"Bad Request: {text}"})  # noqa: E731
        if method == "getMe":
            return ok(bot)
        if method == "createForumTopic":
            if not p.get("name") or len(p["name"]) > 128:
                return bad("invalid topic name")
            self._next_thread += 1
            topic = Topic(chat_id, self._next_thread, p["name"])
            self.topics[(chat_id, topic.thread_id)] = topic
            return ok({"message_thread_id": topic.thread_id, "name": topic.name, "icon_color": 7322096})
        if method in ("editForumTopic", "closeForumTopic", "reopenForumTopic"):
            topic = self.topics.get((chat_id, p.get("message_thread_id")))
            if topic is None:
                return bad("message thread not found")
            if method == "editForumTopic" and p.get("name"):
                topic.name = p["name"]
            topic.closed = {"closeForumTopic": True, "reopenForumTopic": False}.get(method, topic.closed)
            return ok(True)
        if method == "sendMessage":
            text = p.get("text")
            if not isinstance(text, str) or not text:
                return bad("message text is empty")
            if len(text.encode("utf-16-le")) // 2 > 4096:
                return bad("message is too long")
            thread = p.get("message_thread_id")
            if thread is not None and (chat_id, thread) not in self.topics:
                return bad("message thread not found")
            self._next_message += 1
            message = {"message_id": self._next_message, "date": int(time.time()), "chat": {"id": chat_id},
                       "from": bot, "text": text, "message_thread_id": thread,
                       "reply_markup": p.get("reply_markup")}
            self.messages.append(message)
            return ok(message)
        if method == "pinChatMessage":
            # A message sent in a forum topic is pinned in that topic (Telegram keeps a topic's pins apart).
            found = [m for m in self.messages if m["chat"]["id"] == chat_id and m["message_id"] == p.get("message_id")]
            if not found:
                return bad("message to pin not found")
            self.pinned.setdefault((chat_id, found[0].get("message_thread_id")), []).append(found[0]["message_id"])
            return ok(True)
        if method == "setMyCommands":
            commands = p.get("commands")
            if not isinstance(commands, list) or not all(
                isinstance(c, dict) and isinstance(c.get("command"), str) and 1 <= len(c["command"]) <= 32
                and isinstance(c.get("description"), str) and 1 <= len(c["description"]) <= 256 for c in commands
            ):
                return bad("invalid commands")
            self.commands[token] = commands
            return ok(True)
        if method == "answerCallbackQuery":
            self.answered_callbacks.append(p)
            return ok(True)
        if method == "setWebhook":
            self.webhooks[token] = {"url": p.get("url"), "secret_token": p.get("secret_token")}
            return ok(True)
        if method == "deleteWebhook":
            self.webhooks.pop(token, None)
            return ok(True)
        if method == "getUpdates":
            if token in self.webhooks:
                return 409, {"ok": False, "error_code": 409,
                             "description": "Conflict: can't use getUpdates method while webhook is active"}
            return ok(self._pending(token, p))
        return 404, {"ok": False, "error_code": 404, "description": "Not Found"}


def message_update(update_id: int, text: str, chat: int, thread: int | None = None, user: int = 5550001):
    """An update as Telegram sends it: a text message from ``user`` in ``chat`` (in a topic when thread)."""
    msg: dict[str, Any] = {"message_id": update_id, "date": 0, "chat": {"id": chat, "type": "supergroup", "is_forum": True},
                           "from": {"id": user, "is_bot": False, "first_name": "Ana"}, "text": text}
    if thread is not None:
        msg |= {"message_thread_id": thread, "is_topic_message": True}
    return {"update_id": update_id, "message": msg}


def press_update(update_id: int, data: str, chat: int, thread: int, user: int = 5550001):
    """An update as Telegram sends it: ``user`` pressed the inline button ``data`` under a post in a topic."""
    return {"update_id": update_id, "callback_query": {
        "id": f"cb-{update_id}", "from": {"id": user, "is_bot": False, "first_name": "Ana"}, "data": data,
        "chat_instance": "1", "message": {"message_id": 1, "date": 0, "chat": {"id": chat, "type": "supergroup"},
                                          "message_thread_id": thread, "is_topic_message": True}}}
