"""Channel adapters: how a conversation's events reach agents where they work (Telegram first).

An adapter knows nothing about tenants or the database. The drainer (jobs/outbox.py) hands
``ChannelSender`` a destination (its config and opened secrets) and a delivery (the event's
payload and, when the channel already has one, the conversation's thread); the sender asks the
adapter to ensure a thread, then posts the text, and reports a thread it created in
``Result.extra["thread"]`` for the drainer to remember (parley.record_channel_thread).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Protocol

from pyapp.outbox.senders import Delivery, Destination, Outcome, Progress, Result, elapsed_ms


@dataclass(frozen=True)
class Action:
    """A button under a post: an action of the registry (sql/57_actions.sql) and its label."""

    name: str
    label: str


class ChannelError(Exception):
    """A send the channel refused; ``outcome`` says what the outbox does with the delivery."""

    def __init__(
        self,
        outcome: Outcome,
        message: str,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
        pause_reason: str | None = None,
    ):
        super().__init__(message)
        self.outcome = outcome
        self.status_code = status_code
        self.retry_after = retry_after
        self.pause_reason = pause_reason


@dataclass(frozen=True)
class Inbound:
    """An update from a channel, normalised: a message (text, or a command with its argument) or
    a button press (callback_id, command = the button's action), in a thread of a chat."""

    update_id: int
    chat: str | None
    thread: str | None
    user: str | None
    text: str = ""
    command: str | None = None
    argument: str = ""
    callback_id: str | None = None


# Commands and buttons name actions of the registry (sql/57_actions.sql), which decides what
# exists; a command is any /word. "link" is the one command that is not about a conversation.
LINK_COMMAND = "link"
COMMAND_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class ChannelAdapter(Protocol):
    async def ensure_thread(
        self, destination: Destination, conversation_id: str, title: str, thread: str | None
    ) -> str: ...

    def split(self, text: str) -> list[str]:
        """The parts a text is posted in (the channel's length limit)."""
        ...

    async def post(self, destination: Destination, thread: str, text: str, actions: list[Action] | None) -> str:
        """One part into the thread, with buttons under it when actions are given; the posted message's id."""
        ...

    async def pin(self, destination: Destination, thread: str, message: str) -> None:
        """Pin a posted message in its thread."""
        ...

    async def rename_thread(self, destination: Destination, thread: str, title: str) -> None: ...

    async def close_thread(self, destination: Destination, thread: str) -> None: ...

    async def reopen_thread(self, destination: Destination, thread: str) -> None: ...

    def parse_update(self, update: dict[str, Any], bot_username: str) -> Inbound | None: ...

    async def answer_action(self, destination: Destination, callback_id: str, text: str) -> None: ...

    async def close(self) -> None: ...


AUTHOR = {"visitor": "Visitor", "bot": "Bot", "agent": "Agent", "system": "System"}


def keyboard(data: dict[str, Any]) -> list[Action]:
    """The buttons the event's payload carries (the registry's actions valid now, built in SQL:
    parley.channel_keyboard), none when it carries none."""
    return [
        Action(str(a["key"]), str(a["label"]))
        for a in data.get("actions") or []
        if isinstance(a, dict) and COMMAND_NAME.match(str(a.get("key") or ""))
    ]


def render(payload: dict[str, Any]) -> tuple[str, list[Action]]:
    """The text (and buttons) a conversation event becomes in a channel thread."""
    kind = str(payload.get("type", "")).removeprefix("conversation.")
    data = payload.get("data") or {}
    actions = keyboard(data)
    if kind == "message_added":
        message = data.get("message") or {}
        who = AUTHOR.get(str(message.get("author")), str(message.get("author") or "Someone"))
        return f"{who}: {message.get('body') or ''}", actions
    if kind == "human_requested":
        return "The visitor asked for a person.", actions
    if kind == "codename_set":
        codename = (data.get("details") or {}).get("codename")
        return (f"Codename: {codename}." if codename else "Codename removed."), actions
    if kind == "lead_captured":
        return "The visitor left their contact details.", actions
    return {
        "claimed": "Claimed.",
        "released": "Released: waiting for a person.",
        "closed": "Closed.",
        "reopened": "Reopened.",
    }.get(kind, kind.replace("_", " ").capitalize() + "."), actions


def pinned(payload: dict[str, Any]) -> bool:
    """A system text whose template says pin (its meta, sql/49_system_texts.sql): pinned in the thread."""
    message = (payload.get("data") or {}).get("message") or {}
    return (message.get("meta") or {}).get("pin") is True


def thread_title(payload: dict[str, Any]) -> str:
    """A conversation's thread title: its codename, else the visitor's name (from a lead), else its id."""
    data = payload.get("data") or {}
    name = str(data.get("codename") or data.get("visitor_name") or "").strip()
    return name or f"Conversation {str(data.get('conversation_id') or '')[:8]}"


class ChannelSender:
    """The outbox Sender for a channel kind, through the adapter: the conversation's thread (made, or
    renamed when its title changed), then the text (and buttons) in parts; a closed conversation
    closes its thread after the post, a reopened one reopens it before; a system text marked pin is
    pinned in the thread once posted (its first part; a pin refused is noted on the delivered
    attempt, not retried: the text is there). What it made or renamed is
    reported in ``Result.extra`` (thread, title), and the parts delivered in ``Result.parts_sent``,
    even when a later step fails, so a retry does neither again; and to ``progress`` as each is done,
    so a drainer that dies before the Result does neither again either.

    ``send_post`` sends several deliveries of one conversation as one post (the drainer's
    coalesced messages, parley.take_channel_batch): their lines joined, one Result for all."""

    def __init__(self, adapter: ChannelAdapter):
        self.adapter = adapter

    async def send(self, destination: Destination, delivery: Delivery) -> Result:
        return await self.send_post(destination, [delivery])

    async def send_post(
        self, destination: Destination, deliveries: list[Delivery], progress: Progress | None = None
    ) -> Result:
        first = deliveries[0]
        conversation_id = str((first.payload.get("data") or {}).get("conversation_id") or "")
        if not conversation_id:
            return Result("failed", error="This event belongs to no conversation.")
        started = time.monotonic()
        kind = str(first.payload.get("type", "")).removeprefix("conversation.")
        rendered = [render(d.payload) for d in deliveries]
        text = "\n".join(t for t, _a in rendered)
        actions = rendered[-1][1]
        title = thread_title(deliveries[-1].payload)
        extra: dict[str, Any] = {}
        parts = self.adapter.split(text)
        done = first.parts_sent if len(deliveries) == 1 else 0
        first_posted: str | None = None  # the first part this attempt posted (pinned when asked)
        try:
            thread = first.thread
            if thread is None:
                thread = await self.adapter.ensure_thread(destination, conversation_id, title, None)
                extra.update(thread=thread, title=title)
                if progress is not None:
                    await progress.thread(first, thread, title)
            elif first.thread_title != title:
                await self.adapter.rename_thread(destination, thread, title)
                extra["title"] = title
                if progress is not None:
                    await progress.thread(first, thread, title)
            if kind == "reopened" and done == 0:
                await self.adapter.reopen_thread(destination, thread)
            while done < len(parts):
                last = done == len(parts) - 1
                posted = await self.adapter.post(
                    destination, thread, parts[done], actions if last and actions else None
                )
                first_posted = first_posted or posted
                done += 1
                if progress is not None and done < len(parts) and len(deliveries) == 1:
                    await progress.parts(first, done)
            if kind == "closed":
                await self.adapter.close_thread(destination, thread)
        except ChannelError as exc:
            return Result(
                exc.outcome,
                status_code=exc.status_code,
                latency_ms=elapsed_ms(started),
                error=str(exc)[:1000],
                retry_after=exc.retry_after,
                pause_reason=exc.pause_reason,
                extra=extra,
                parts_sent=done,
            )
        request: dict[str, Any] = {"chars": len(text), "parts": len(parts), "deliveries": len(deliveries)}
        error = None
        if first_posted is not None and any(pinned(d.payload) for d in deliveries):
            try:
                await self.adapter.pin(destination, thread, first_posted)
                request["pinned"] = first_posted
            except ChannelError as exc:
                error = f"posted, not pinned: {exc}"[:1000]
        return Result(
            "delivered",
            status_code=200,
            latency_ms=elapsed_ms(started),
            error=error,
            request=request,
            extra=extra,
            parts_sent=done,
        )

    async def close(self) -> None:
        await self.adapter.close()
