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


async def on_feedback(ctx: VisitorContext, frame: dict) -> dict:
    """Thumbs up/down on one bot reply of the visitor's own conversation."""
    async with ctx.tx() as conn:
        await conn.fetchrow(
            "SELECT * FROM parley.record_feedback($1, $2, $3, $4)",
            ctx.conversation_id,
            frame["message_id"],
            frame["value"],
            frame.get("comment") or "",
        )
    return {"type": "feedback_saved", "message_id": frame["message_id"], "value": frame["value"]}


async def on_rating(ctx: VisitorContext, frame: dict) -> dict:
    """The 1-5 end-of-chat rating (one per conversation; a new one replaces it)."""
    async with ctx.tx() as conn:
        await conn.fetchrow(
            "SELECT * FROM parley.rate_conversation($1, $2, $3)",
            ctx.conversation_id,
            frame["score"],
            frame.get("comment") or "",
        )
    return {"type": "rating_saved", "score": frame["score"]}


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
