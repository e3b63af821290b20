"""The Telegram adapter: a forum topic per conversation in the tenant's support group, posted to
through the Bot API with the bot's token (an opened channel secret, never logged: it is part of
every API URL, so errors name the method only).

Text goes as plain text (no parse mode, nothing to escape) in parts of at most 4096 UTF-16 code
units, Telegram's limit. Answers: 429 → retry after exactly ``parameters.retry_after``; 403
(bot removed from the group) → failed and the channel paused; other 4xx → failed; 5xx and
network errors → retried.
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp

from pyapp.channels.adapter import COMMAND_NAME, Action, ChannelError, Inbound
from pyapp.net import request_spans
from pyapp.outbox.senders import Destination

API_ENV = "PARLEY_TELEGRAM_API"
DEFAULT_API = "https://api.telegram.org"
MAX_UNITS = 4096
TOPIC_NAME_MAX = 128


def api_base() -> str:
    return os.environ.get(API_ENV, DEFAULT_API).rstrip("/")


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int = MAX_UNITS) -> list[str]:
    """Parts of at most ``limit`` UTF-16 code units, cut at a line break or space when one is near,
    never inside a character (astral characters count two units)."""
    parts: list[str] = []
    rest = text
    while utf16_units(rest) > limit:
        units = 0
        cut = 0
        for i, ch in enumerate(rest):
            units += 2 if ord(ch) > 0xFFFF else 1
            if units > limit:
                cut = i
                break
        soft = max(rest.rfind("\n", 0, cut), rest.rfind(" ", 0, cut))
        if soft > cut // 2:
            cut = soft + 1
        parts.append(rest[:cut])
        rest = rest[cut:]
    if rest or not parts:
        parts.append(rest)
    return parts


class TelegramApi:
    """A minimal Bot API client; ``call`` raises ChannelError classified for the outbox."""

    def __init__(self, base: str | None = None, timeout: float = 15.0):
        self.base = base
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def call(self, token: str, method: str, params: dict[str, Any]) -> Any:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout), trace_configs=request_spans()
            )
        url = f"{self.base or api_base()}/bot{token}/{method}"
        try:
            async with self._session.post(url, json=params, allow_redirects=False) as resp:
                status = resp.status
                try:
                    body = await resp.json(content_type=None)
                except ValueError:
                    body = {}
        except TimeoutError:
            raise ChannelError("retry", f"Telegram {method}: no answer in time") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ChannelError("retry", f"Telegram {method}: {type(exc).__name__}") from None
        if not isinstance(body, dict):
            body = {}
        if status == 200 and body.get("ok"):
            return body.get("result")
        description = str(body.get("description") or f"HTTP {status}")[:300].replace(token, "…")
        message = f"Telegram {method}: {status} {description}"
        if status == 429:
            retry_after = (body.get("parameters") or {}).get("retry_after")
            raise ChannelError(
                "retry",
                message,
                status_code=status,
                retry_after=float(retry_after) if isinstance(retry_after, int | float) else None,
            )
        if status == 403:
            raise ChannelError(
                "failed",
                message,
                status_code=status,
                pause_reason=f"The bot cannot post in the group (removed or not an admin): {description}",
            )
        if status == 401:
            raise ChannelError(
                "failed",
                message,
                status_code=status,
                pause_reason="Telegram refuses the bot token (revoked?): connect the bot again.",
            )
        if 400 <= status < 500:
            raise ChannelError("failed", message, status_code=status)
        raise ChannelError("retry", message, status_code=status)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class TelegramAdapter:
    """Forum topics in the destination's group (config chat_id), the bot token its one secret."""

    def __init__(self, api: TelegramApi | None = None):
        self.api = api or TelegramApi()

    def _token(self, destination: Destination) -> str:
        if not destination.secrets:
            raise ChannelError("retry", "The bot token cannot be opened (key-encryption key missing?).")
        return destination.secrets[0]

    async def ensure_thread(
        self, destination: Destination, conversation_id: str, title: str, thread: str | None
    ) -> str:
        if thread is not None:
            return thread
        topic = await self.api.call(
            self._token(destination),
            "createForumTopic",
            {"chat_id": destination.config["chat_id"], "name": title[:TOPIC_NAME_MAX]},
        )
        return str(topic["message_thread_id"])

    async def rename_thread(self, destination: Destination, thread: str, title: str) -> None:
        await self._topic(destination, "editForumTopic", thread, name=title[:TOPIC_NAME_MAX])

    async def close_thread(self, destination: Destination, thread: str) -> None:
        await self._topic(destination, "closeForumTopic", thread)

    async def reopen_thread(self, destination: Destination, thread: str) -> None:
        await self._topic(destination, "reopenForumTopic", thread)

    async def _topic(self, destination: Destination, method: str, thread: str, **params: Any) -> None:
        """A topic change; Telegram's 400 TOPIC_NOT_MODIFIED (already so) counts as done."""
        try:
            await self.api.call(
                self._token(destination),
                method,
                {"chat_id": destination.config["chat_id"], "message_thread_id": int(thread), **params},
            )
        except ChannelError as exc:
            if exc.status_code != 400 or "NOT_MODIFIED" not in str(exc).upper():
                raise

    def split(self, text: str) -> list[str]:
        return split_text(text)

    async def post(self, destination: Destination, thread: str, text: str, actions: list[Action] | None) -> str:
        markup = None
        if actions:
            markup = {"inline_keyboard": [[{"text": a.label, "callback_data": a.name} for a in actions]]}
        return await self._send(destination, thread, text, markup)

    async def pin(self, destination: Destination, thread: str, message: str) -> None:
        """pinChatMessage: a message sent in a forum topic is pinned in that topic (quietly)."""
        await self.api.call(
            self._token(destination),
            "pinChatMessage",
            {"chat_id": destination.config["chat_id"], "message_id": int(message), "disable_notification": True},
        )

    async def _send(self, destination: Destination, thread: str, text: str, markup: dict | None) -> str:
        params: dict[str, Any] = {
            "chat_id": destination.config["chat_id"],
            "message_thread_id": int(thread),
            "text": text,
            "disable_web_page_preview": True,
        }
        if markup is not None:
            params["reply_markup"] = markup
        sent = await self.api.call(self._token(destination), "sendMessage", params)
        return str(sent["message_id"]) if isinstance(sent, dict) and "message_id" in sent else ""

    def parse_update(self, update: dict[str, Any], bot_username: str) -> Inbound | None:
        """A message (text or /command[@bot] argument) or a button press; None for anything else
        (edits, joins, another bot's command)."""
        update_id = update.get("update_id")
        if not isinstance(update_id, int) or isinstance(update_id, bool):
            return None
        query = update.get("callback_query")
        if isinstance(query, dict):
            message = query.get("message")
            if not isinstance(message, dict):
                message = {}
            data = query.get("data")
            return Inbound(
                update_id,
                _id(message.get("chat")),
                _thread(message),
                _id(query.get("from")),
                command=data if isinstance(data, str) and COMMAND_NAME.match(data) else None,
                callback_id=str(query.get("id") or ""),
            )
        message = update.get("message")
        if not isinstance(message, dict) or not isinstance(message.get("text"), str):
            return None
        text = message["text"]
        base = Inbound(update_id, _id(message.get("chat")), _thread(message), _id(message.get("from")), text=text)
        if not text.startswith("/"):
            return base
        head, _, argument = text.partition(" ")
        name, _, addressed = head[1:].partition("@")
        if addressed and addressed.lower() != bot_username.lower():
            return None  # a command for another bot in the group
        name = name.lower()
        if not COMMAND_NAME.match(name):
            return None
        return Inbound(update_id, base.chat, base.thread, base.user, text=text, command=name, argument=argument.strip())

    async def answer_action(self, destination: Destination, callback_id: str, text: str) -> None:
        await self.api.call(
            self._token(destination), "answerCallbackQuery", {"callback_query_id": callback_id, "text": text[:200]}
        )

    async def set_webhook(self, token: str, url: str, secret_token: str) -> None:
        await self.api.call(
            token,
            "setWebhook",
            {"url": url, "secret_token": secret_token, "allowed_updates": ["message", "callback_query"]},
        )

    async def delete_webhook(self, token: str) -> None:
        """Before long polling: getUpdates answers 409 while a webhook is set (pending updates are kept)."""
        await self.api.call(token, "deleteWebhook", {"drop_pending_updates": False})

    async def get_updates(self, token: str, offset: int, timeout: int) -> list[dict[str, Any]]:
        """Long polling: updates from ``offset`` on (confirming the ones before it), waiting up to
        ``timeout`` seconds for one to arrive."""
        updates = await self.api.call(
            token,
            "getUpdates",
            {"offset": offset, "timeout": timeout, "allowed_updates": ["message", "callback_query"]},
        )
        return [u for u in updates if isinstance(u, dict)] if isinstance(updates, list) else []

    async def get_me(self, token: str) -> dict[str, Any]:
        return await self.api.call(token, "getMe", {})

    async def close(self) -> None:
        await self.api.close()


def _id(obj: Any) -> str | None:
    return str(obj["id"]) if isinstance(obj, dict) and isinstance(obj.get("id"), int) else None


def _thread(message: dict[str, Any]) -> str | None:
    thread = message.get("message_thread_id")
    return str(thread) if isinstance(thread, int) and message.get("is_topic_message", True) else None
