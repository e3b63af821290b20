"""CSAT: the visitor's thumbs (`feedback` frame) and rating (`rating` frame), and the
members' negative-feedback triage list. Storage rules live in sql/55_feedback.sql."""

from __future__ import annotations

import datetime as dt
import uuid

from aiohttp import web
from pydantic import BaseModel, Field

from pyapp.api import Call, api, rows
from pyapp.errors import not_found
from pyapp.widget.hooks import VisitorContext, visitor_hooks


def _stored_frame(sql: str, fields: tuple[str, ...], saved: str):
    """A visitor frame handler: ``sql`` stores the frame for the visitor's own conversation (its
    arguments: the conversation, the frame's ``fields``, the comment), then the ``saved`` frame echoes
    the fields back."""

    async def handler(ctx: VisitorContext, frame: dict) -> dict:
        values = [frame[f] for f in fields]
        async with ctx.tx() as conn:
            await conn.fetchrow(sql, ctx.conversation_id, *values, frame.get("comment") or "")
        return {"type": saved, **dict(zip(fields, values, strict=True))}

    return handler


# Thumbs up/down on one bot reply of the visitor's own conversation.
on_feedback = _stored_frame(
    "SELECT * FROM parley.record_feedback($1, $2, $3, $4)", ("message_id", "value"), "feedback_saved"
)
# The 1-5 end-of-chat rating (one per conversation; a new one replaces it).
on_rating = _stored_frame("SELECT * FROM parley.rate_conversation($1, $2, $3)", ("score",), "rating_saved")


def setup(app: web.Application) -> None:
    hooks = visitor_hooks(app)
    hooks.set_frame_handler("feedback", on_feedback)
    hooks.set_frame_handler("rating", on_rating)


class NegativeQuery(BaseModel):
    chatbot_id: uuid.UUID | None = None
    include_triaged: bool = False
    limit: int = Field(50, ge=1, le=200)
    before: dt.datetime | None = None


class TriageIn(BaseModel):
    done: bool = True


@api.route("GET", "/api/feedback/negative", query=NegativeQuery, tags=("feedback",))
async def negative_feedback(call: Call):
    """Thumbs-down replies to triage, newest first, with the question before each."""
    q: NegativeQuery = call.query
    async with call.tx() as conn:
        return rows(
            await conn.fetch(
                "SELECT * FROM parley.negative_feedback($1, $2, $3, $4)",
                q.chatbot_id,
                q.include_triaged,
                q.limit,
                q.before,
            )
        )


@api.route("POST", "/api/feedback/{message_id}/triage", body=TriageIn, status=204, tags=("feedback",))
async def triage_feedback(call: Call):
    """Mark one feedback item triaged (done=false reopens it)."""
    message_id = call.int_param("message_id", "feedback")
    async with call.tx() as conn:
        if not await conn.fetchval("SELECT parley.triage_feedback($1, $2)", message_id, call.body.done):
            raise not_found("feedback")
    return None
