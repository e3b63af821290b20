"""Analytics for members: tenant-scoped SQL functions (SECURITY INVOKER, so RLS scopes them)
served as JSON. The cross-tenant analyst views live in schema `analytics` (sql/61_analytics.sql);
the member statistics are in sql/60_statistics.sql."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, Field, field_validator

from pyapp.api import Call, api, row, rows


class Window(BaseModel):
    days: int = 30
    chatbot_id: uuid.UUID | None = None

    @field_validator("days")
    @classmethod
    def _window(cls, v: int) -> int:
        if v not in (7, 30, 90):
            raise ValueError("days is 7, 30 or 90")
        return v


class QuestionsQuery(Window):
    limit: int = Field(20, ge=1, le=100)
    unanswered: bool = False


# The day figures each chart reads: every day of the window, from parley.stats_per_day.
CONVERSATIONS_PER_DAY = "SELECT day, conversations, closed, closed_without_human FROM parley.stats_per_day($1, $2)"
CSAT_PER_DAY = "SELECT day, ratings, avg_score, thumbs_up, thumbs_down FROM parley.stats_per_day($1, $2)"


async def _per_day(call: Call, query: str) -> list[dict]:
    async with call.tx() as conn:
        return rows(await conn.fetch(query, call.query.days, call.query.chatbot_id))


@api.route("GET", "/api/analytics/summary", query=Window, tags=("analytics",))
async def summary(call: Call):
    """Headline figures: conversations, AI resolution rate, misses, ratings, median first human response."""
    async with call.tx() as conn:
        return row(
            await conn.fetchrow("SELECT * FROM parley.stats_summary($1, $2)", call.query.days, call.query.chatbot_id)
        )


@api.route("GET", "/api/analytics/conversations", query=Window, tags=("analytics",))
async def conversations_per_day(call: Call):
    """Conversations per day (every day of the window), closed and closed without a human."""
    return await _per_day(call, CONVERSATIONS_PER_DAY)


@api.route("GET", "/api/analytics/questions", query=QuestionsQuery, tags=("analytics",))
async def questions(call: Call):
    """Top (normalised) questions, or with unanswered=true the ones the bot could not ground."""
    q: QuestionsQuery = call.query
    async with call.tx() as conn:
        return rows(
            await conn.fetch(
                "SELECT * FROM parley.stats_top_questions($1, $2, $3, $4)", q.days, q.chatbot_id, q.limit, q.unanswered
            )
        )


@api.route("GET", "/api/analytics/csat", query=Window, tags=("analytics",))
async def csat_per_day(call: Call):
    """Ratings (count and average) and thumbs per day."""
    return await _per_day(call, CSAT_PER_DAY)
