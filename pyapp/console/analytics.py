"""Analytics: server-rendered SVG charts (conversations per day, AI resolution rate, CSAT, first
response time), ranked top and unanswered questions linking to their conversations, and the
CSAT negative-feedback triage list.

Figures come from the analytics SQL functions (sql/60_statistics.sql, sql/55_feedback.sql);
the per-day first response time is the console's own read (queries.sql).
"""

from __future__ import annotations

import uuid
from urllib.parse import urlencode

from pyapp.console import charts, queries
from pyapp.console.web import Ctx, json_ok, page, redirect, safe_query
from pyapp.errors import ApiError

WINDOWS = (7, 30, 90)


def _window(ctx: Ctx) -> tuple[int, uuid.UUID | None]:
    try:
        days = int(ctx.request.query.get("days", "30"))
    except ValueError:
        days = 30
    if days not in WINDOWS:
        days = 30
    chatbot = None
    if ctx.request.query.get("chatbot"):
        try:
            chatbot = uuid.UUID(ctx.request.query["chatbot"])
        except ValueError:
            chatbot = None
    return days, chatbot


def _label(day) -> str:
    return day.strftime("%b %d")


@page("GET", "/console/analytics")
async def analytics(ctx: Ctx):
    days, chatbot = _window(ctx)
    conn = ctx.conn
    summary = await conn.fetchrow("SELECT * FROM parley.stats_summary($1, $2)", days, chatbot)
    per_day = await conn.fetch("SELECT * FROM parley.stats_per_day($1, $2)", days, chatbot)
    frt = await queries.fetch(conn, "first_response_per_day", days, chatbot)
    top = await conn.fetch("SELECT * FROM parley.stats_top_questions($1, $2, 15, false)", days, chatbot)
    unanswered = await conn.fetch("SELECT * FROM parley.stats_top_questions($1, $2, 15, true)", days, chatbot)
    include_triaged = ctx.request.query.get("triaged") == "1"
    negative = await conn.fetch("SELECT * FROM parley.negative_feedback($1, $2, 50, NULL)", chatbot, include_triaged)
    bots = await queries.fetch(conn, "chatbots")

    labels = [_label(r["day"]) for r in per_day]
    rate = [(r["closed_without_human"] / r["closed"]) if r["closed"] else None for r in per_day]
    figures = [
        charts.bar_chart(
            "Conversations per day",
            labels,
            [r["conversations"] for r in per_day],
            overlay=[r["closed_without_human"] for r in per_day],
        ),
        charts.line_chart("AI resolution rate (closed without a human / closed)", labels, rate, unit="%", vmax=1.0),
        charts.line_chart(
            "CSAT: average rating (1-5)",
            labels,
            [float(r["avg_score"]) if r["avg_score"] is not None else None for r in per_day],
            vmax=5.0,
        ),
        charts.line_chart(
            "First human response (median)",
            [_label(r["day"]) for r in frt],
            [float(r["median_s"]) if r["median_s"] is not None else None for r in frt],
            unit="s",
        ),
    ]
    thumbs = {"up": sum(r["thumbs_up"] for r in per_day), "down": sum(r["thumbs_down"] for r in per_day)}
    keep = {"days": days, **({"chatbot": str(chatbot)} if chatbot else {})}
    flash = {"triaged": "Marked as triaged.", "reopened": "Back on the list."}.get(ctx.request.query.get("done", ""))
    return ctx.render(
        "analytics.html",
        days=days,
        windows=WINDOWS,
        chatbot=chatbot,
        bots=bots,
        summary=summary,
        figures=figures,
        top=top,
        unanswered=unanswered,
        negative=negative,
        thumbs=thumbs,
        include_triaged=include_triaged,
        keep=urlencode(keep),
        flash=flash,
    )


@page("GET", "/console/analytics/question")
async def question(ctx: Ctx):
    """The conversations in which a (normalised) question was asked."""
    days, chatbot = _window(ctx)
    text = (ctx.request.query.get("q") or "").strip()[:500]
    if not text:
        raise ApiError(404, "not_found", "No such question.")
    rows = await queries.fetch(ctx.conn, "question_conversations", text, days, chatbot)
    return ctx.render("question.html", question=text, rows=rows, days=days)


@page("POST", "/console/feedback/{message_id}/triage")
async def triage(ctx: Ctx):
    try:
        message_id = int(ctx.request.match_info["message_id"])
    except ValueError:
        raise ApiError(404, "not_found", "No such feedback.") from None
    done = str(ctx.form.get("done", "1")) != "0"
    if not await ctx.conn.fetchval("SELECT parley.triage_feedback($1, $2)", message_id, done):
        raise ApiError(404, "not_found", "No such feedback.")
    if ctx.wants_json:
        return json_ok({"ok": True, "triaged": done})
    back = safe_query(ctx.form.get("back"))
    back = back if back.startswith("days=") else "days=30"
    return redirect(f"/console/analytics?{back}&done={'triaged' if done else 'reopened'}#feedback")
