"""Conversations for agents: the inbox list, transcripts, and every state change.

Handlers are thin: each opens `call.tx()` and calls one SQL function (sql/41_conversations.sql, 41_inbox.sql,
44_messages.sql, 45_events.sql, 46_leads.sql), which holds the rules (state machine, assignment,
limits, events, NOTIFY). JSON is shaped in SQL (`parley.conversation_json`, `parley.message_json`)
and passed straight through.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from pyapp import metrics, types
from pyapp.api import Call, api
from pyapp.errors import ApiError

TAGS = ("conversations",)

Body = types.MessageBody
ClientId = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:-]+$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MessageIn(Strict):
    body: Body
    client_id: ClientId | None = None


class AssignIn(Strict):
    user_id: UUID


class CodenameIn(Strict):
    codename: str = Field(max_length=64, description="How agents call the visitor; empty removes it")


class LeadCaptureIn(Strict):
    name: types.LeadName | None = None
    email: types.LeadEmail | None = None
    phone: types.LeadPhone | None = None
    custom: types.LeadCustom = Field(default_factory=dict)


def _utc(value: datetime | date | None) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class ConversationQuery(Strict):
    status: Literal["bot", "waiting_human", "human", "closed"] | None = None
    assignee: Literal["me"] | UUID | None = Field(default=None, description="`me` or a member's user id")
    chatbot: UUID | None = None
    date_from: datetime | date | None = Field(
        default=None, alias="from", description="created at or after (ISO date/time, UTC)"
    )
    date_to: datetime | date | None = Field(default=None, alias="to", description="created before (ISO date/time, UTC)")
    q: types.Text200 | None = Field(None, description="full-text search over messages (and notes); websearch syntax")
    before: datetime | None = Field(
        default=None, description="keyset: last_activity_at of the last row of the previous page"
    )
    limit: int = Field(50, ge=1, le=200)


class MessageOut(BaseModel):
    id: int
    conversation_id: UUID
    author: Literal["visitor", "bot", "agent", "system", "note"]
    author_id: UUID | None = None
    author_name: str | None = None
    body: str
    client_id: str | None = None
    created_at: datetime
    citations: list[Any] = []
    stream_id: str | None = None
    meta: dict[str, Any] = {}


class ConversationOut(BaseModel):
    id: UUID
    chatbot_id: UUID
    status: Literal["bot", "waiting_human", "human", "closed"]
    assignee_id: UUID | None = None
    assignee_name: str | None = None
    visitor_id: UUID
    page_url: str | None = None
    referrer: str | None = None
    locale: str | None = None
    country: str | None = None
    created_at: datetime
    last_activity_at: datetime
    closed_at: datetime | None = None
    bot_misses: int = 0
    last_message_id: int | None = None
    codename: str | None = None
    last_message: MessageOut | None = None


class ConversationsOut(BaseModel):
    conversations: list[ConversationOut]
    next_before: datetime | None = Field(default=None, description="pass as `before` for the next page")


class OtherConversationOut(BaseModel):
    id: UUID
    status: str
    created_at: datetime
    last_activity_at: datetime
    messages: int
    preview: str | None = None


class TranscriptOut(BaseModel):
    conversation: ConversationOut
    messages: list[MessageOut]
    lead: dict[str, Any] | None = None
    visitor_conversations: list[OtherConversationOut] = Field(
        default_factory=list, description="the same visitor's other conversations with this chatbot, newest first"
    )


class LimitsOut(BaseModel):
    plan: str
    max_chatbots: int
    max_seats: int
    max_open_conversations: int
    msgs_per_min_chatbot: int
    msgs_per_min_ip: int
    ai_msgs_per_day: int
    retention_days: int
    allow_hide_branding: bool


class UsageQuery(Strict):
    date_from: date | None = Field(default=None, alias="from")
    date_to: date | None = Field(default=None, alias="to")


class UsageDay(BaseModel):
    day: date
    messages: int = 0
    ai_messages: int = 0
    conversations: int = 0
    active_seats: int = 0


class UsageOut(BaseModel):
    days: list[UsageDay]


@api.route("GET", "/api/conversations", query=ConversationQuery, response=ConversationsOut, tags=TAGS)
async def list_conversations(call: Call):
    """The inbox: filter by status, assignee (me or an id), chatbot, creation dates, and full text."""
    q = call.query
    assignee: UUID | None = None
    if q.assignee == "me":
        if call.user_id is None:
            raise ApiError(422, "validation_failed", "assignee=me needs a signed-in person, not an API key.")
        assignee = call.user_id
    elif q.assignee is not None:
        assignee = q.assignee
    async with call.tx() as conn:
        rows = await conn.fetch(
            "SELECT parley.list_conversations($1, $2, $3, $4, $5, $6, $7, $8) AS c",
            q.status,
            assignee,
            q.chatbot,
            _utc(q.date_from),
            _utc(q.date_to),
            q.q,
            q.before,
            q.limit,
        )
    items = [r["c"] for r in rows]
    next_before = items[-1]["last_activity_at"] if len(items) == q.limit else None
    return {"conversations": items, "next_before": next_before}


@api.route("GET", "/api/conversations/{conversation_id}", response=TranscriptOut, tags=TAGS)
async def get_conversation(call: Call):
    """One conversation with its whole transcript (agents see internal notes) and its lead."""
    conversation_id = call.uuid_param("conversation_id")
    async with call.tx() as conn:
        conv = await conn.fetchval(
            "SELECT parley.conversation_json(c) FROM parley.conversations c WHERE c.id = $1", conversation_id
        )
        if conv is None:
            raise ApiError(404, "not_found", "No such conversation.")
        messages = await conn.fetch(
            "SELECT parley.message_json(m) AS m FROM parley.messages m WHERE m.conversation_id = $1 ORDER BY m.id",
            conversation_id,
        )
        lead = await conn.fetchval(
            "SELECT to_jsonb(l) FROM parley.leads l WHERE l.conversation_id = $1", conversation_id
        )
        others = await conn.fetch(
            "SELECT * FROM parley.other_visitor_conversations($1)",
            conversation_id,
        )
    return {
        "conversation": conv,
        "messages": [r["m"] for r in messages],
        "lead": lead,
        "visitor_conversations": [dict(r) for r in others],
    }


async def _transition(call: Call, sql: str, *args) -> dict:
    async with call.tx() as conn:
        return await conn.fetchval(
            f"SELECT parley.conversation_json(c) FROM {sql} c", call.uuid_param("conversation_id"), *args
        )


def _transition_route(action: str, body: type[AssignIn] | None, doc: str) -> None:
    """POST /api/conversations/{conversation_id}/<action>: the state machine's transition of that name
    (a row of parley.conversation_transitions), with the member to assign when the body names one."""

    async def transition(call: Call) -> dict:
        assignee = call.body.user_id if body is not None else None
        return await _transition(call, "parley.transition_conversation($1, $2, $3)", action, assignee)

    transition.__name__ = transition.__qualname__ = action  # the operation id (the client's method name)
    transition.__doc__ = doc
    path = f"/api/conversations/{{conversation_id}}/{action}"
    api.route("POST", path, body=body, response=ConversationOut, tags=TAGS)(transition)


# The transitions members ask for by REST, in the order of the API document.
for _action, _body, _doc in (
    ("claim", None, "Take an unassigned conversation (409 if another agent has it)."),
    ("assign", AssignIn, "Give the conversation to a member."),
    ("release", None, "Hand the conversation back to the bot."),
    ("close", None, "Close the conversation."),
    ("reopen", None, "Reopen a closed conversation (assigned to you when you are signed in)."),
):
    _transition_route(_action, _body, _doc)


@api.route("PUT", "/api/conversations/{conversation_id}/codename", body=CodenameIn, response=ConversationOut, tags=TAGS)
async def codename(call: Call):
    """Name the conversation for agents (never shown to the visitor); its Telegram topic is renamed."""
    return await _transition(call, "parley.set_codename($1, $2)", call.body.codename)


@api.route(
    "POST", "/api/conversations/{conversation_id}/reply", body=MessageIn, response=MessageOut, status=201, tags=TAGS
)
async def reply(call: Call):
    """Reply to the visitor; claims an unassigned conversation. Idempotent on client_id."""
    async with call.tx() as conn:
        message = await conn.fetchval(
            "SELECT parley.message_json(m) FROM parley.agent_reply($1, $2, $3) m",
            call.uuid_param("conversation_id"),
            call.body.body,
            call.body.client_id,
        )
    metrics.MESSAGES.labels("agent").inc()
    return message


@api.route(
    "POST", "/api/conversations/{conversation_id}/notes", body=MessageIn, response=MessageOut, status=201, tags=TAGS
)
async def add_note(call: Call):
    """An internal note, never shown to the visitor. Idempotent on client_id."""
    async with call.tx() as conn:
        return await conn.fetchval(
            "SELECT parley.message_json(m) FROM parley.add_note($1, $2, $3) m",
            call.uuid_param("conversation_id"),
            call.body.body,
            call.body.client_id,
        )


@api.route("POST", "/api/conversations/{conversation_id}/lead", body=LeadCaptureIn, status=201, tags=TAGS)
async def capture_lead(call: Call):
    """Record the visitor's contact details for this conversation (one lead per conversation)."""
    b = call.body
    async with call.tx() as conn:
        return await conn.fetchval(
            "SELECT to_jsonb(l) FROM parley.capture_lead($1, $2, $3, $4, $5) l",
            call.uuid_param("conversation_id"),
            b.name,
            b.email,
            b.phone,
            b.custom,
        )


@api.route("GET", "/api/limits", response=LimitsOut, tags=("limits",))
async def limits(call: Call):
    """The limits in force for this workspace (plan, with any per-workspace overrides; 0 = unlimited)."""
    async with call.tx() as conn:
        row = await conn.fetchrow("SELECT * FROM parley.effective_limits(parley.current_tenant_id())")
    return dict(row)


@api.route("GET", "/api/usage", query=UsageQuery, response=UsageOut, tags=("limits",))
async def usage(call: Call):
    """Daily usage (UTC days, default the last 30)."""
    q = call.query
    async with call.tx() as conn:
        rows = await conn.fetch(
            """SELECT day, messages, ai_messages, conversations, active_seats FROM parley.usage_by_day
                WHERE day >= coalesce($1, current_date - 30) AND day <= coalesce($2, current_date)
                ORDER BY day""",
            q.date_from,
            q.date_to,
        )
    return {"days": [dict(r) for r in rows]}
