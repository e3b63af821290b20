"""Analytics served from the daily rollup (issue 17, finding 9): the answers from the rollup equal
a count from scratch over the rows (done here in Python), before and after old days change; the
finished days really come from the rollup; the job only recomputes the days it must."""
import random
from datetime import date, timedelta
from statistics import median

from jobs import runner, schedule
from pyapp.db import Actor, tenant_tx
from support.knowledge import make_tenant

HUMAN_KINDS = ("human_requested", "claimed", "assigned")
QUESTIONS = ("where is my order", "refund", "opening hours", "")


async def _history(owner_conn, tenant, other_bot, rng: random.Random) -> None:
    """Conversations over the last 40 days on two chatbots, with human requests, agent replies,
    assistant turns, ratings and thumbs, written straight into the tables."""
    for i in range(80):
        bot = tenant.chatbot_id if i % 3 else other_bot
        age = timedelta(days=rng.randrange(0, 40), hours=rng.randrange(0, 20))
        status = rng.choice(["bot", "closed", "closed", "human"])
        conv = await owner_conn.fetchval(
            "INSERT INTO parley.conversations (tenant_id, chatbot_id, visitor_id, status, created_at, last_activity_at,"
            " closed_at) VALUES ($1, $2, gen_random_uuid(), $3, now() - $4::interval, now() - $4::interval,"
            " CASE WHEN $3 = 'closed' THEN now() - $4::interval + interval '30 minutes' END) RETURNING id",
            tenant.id, bot, status, age)
        if rng.random() < 0.4:
            kind = rng.choice(HUMAN_KINDS)
            await owner_conn.execute(
                "INSERT INTO parley.events (tenant_id, at, kind, conversation_id, actor_kind)"
                " VALUES ($1, now() - $2::interval + interval '2 minutes', $3, $4, 'system')", tenant.id, age, kind, conv)
            if kind == "human_requested" and rng.random() < 0.7:
                await owner_conn.execute(
                    "INSERT INTO parley.messages (tenant_id, conversation_id, author, body, created_at)"
                    " VALUES ($1, $2, 'agent', 'hi', now() - $3::interval + make_interval(secs => 120 + $4))",
                    tenant.id, conv, age, rng.randrange(5, 900))
        for _ in range(rng.randrange(0, 3)):
            await owner_conn.execute(
                "INSERT INTO parley.assistant_turns (tenant_id, chatbot_id, conversation_id, question_norm, outcome,"
                " grounded, created_at) VALUES ($1, $2, $3, $4, $5, $6, now() - $7::interval"
                " + make_interval(secs => $8))",
                tenant.id, bot, conv, rng.choice(QUESTIONS), rng.choice(["answered", "unknown", "quota"]),
                rng.random() < 0.6, age, rng.random() * 600)
        if rng.random() < 0.3:
            await owner_conn.execute(
                "INSERT INTO parley.conversation_ratings (tenant_id, conversation_id, chatbot_id, score, created_at)"
                " VALUES ($1, $2, $3, $4, now() - $5::interval)", tenant.id, conv, bot, rng.randrange(1, 6), age)
        if rng.random() < 0.3:
            await owner_conn.execute(
                "INSERT INTO parley.message_feedback (tenant_id, message_id, conversation_id, chatbot_id, value,"
                " created_at) VALUES ($1, $2, $3, $4, $5, now() - $6::interval)",
                tenant.id, rng.randrange(1, 10**9), conv, bot, rng.choice(["up", "down"]), age)


async def _expected(owner_conn, tenant_id, days: int, chatbot_id) -> dict:
    """The figures counted from scratch over the rows (every rule written out again here)."""
    today = await owner_conn.fetchval("SELECT current_date")
    first = today - timedelta(days=days - 1)

    def keep(row, day: date) -> bool:
        return day >= first and (chatbot_id is None or row["chatbot_id"] == chatbot_id)

    per_day = {first + timedelta(days=i): [0, 0, 0, 0, 0, 0] for i in range(days)}  # conv closed cwh up down ratings
    summary = {"conversations": 0, "closed": 0, "closed_without_human": 0, "human_requests": 0, "ai_turns": 0,
               "ai_unanswered": 0, "ratings": 0, "rating_sum": 0}
    responses = []
    for c in await owner_conn.fetch(
            "SELECT c.id, c.chatbot_id, c.created_at::date AS day, c.status,"
            " (SELECT array_agg(e.kind) FROM parley.events e WHERE e.tenant_id = c.tenant_id"
            "   AND e.conversation_id = c.id) AS kinds,"
            " (SELECT min(e.at) FROM parley.events e WHERE e.tenant_id = c.tenant_id AND e.conversation_id = c.id"
            "   AND e.kind = 'human_requested') AS requested"
            " FROM parley.conversations c WHERE c.tenant_id = $1", tenant_id):
        if not keep(c, c["day"]):
            continue
        human = bool(set(c["kinds"] or ()) & set(HUMAN_KINDS))
        closed = c["status"] == "closed"
        per_day[c["day"]][0] += 1
        per_day[c["day"]][1] += closed
        per_day[c["day"]][2] += closed and not human
        summary["conversations"] += 1
        summary["closed"] += closed
        summary["closed_without_human"] += closed and not human
        if c["requested"] is not None:
            summary["human_requests"] += 1
            replies = [m["created_at"] for m in await owner_conn.fetch(
                "SELECT created_at FROM parley.messages WHERE tenant_id = $1 AND conversation_id = $2"
                " AND author = 'agent'", tenant_id, c["id"]) if m["created_at"] >= c["requested"]]
            if replies:
                responses.append(round((min(replies) - c["requested"]).total_seconds()))
    questions: dict[str, list] = {}
    for t in await owner_conn.fetch("SELECT chatbot_id, created_at::date AS day, created_at, outcome, grounded,"
                                    " question_norm FROM parley.assistant_turns WHERE tenant_id = $1", tenant_id):
        if keep(t, t["day"]) and t["outcome"] in ("answered", "unknown"):
            summary["ai_turns"] += 1
            summary["ai_unanswered"] += not t["grounded"]
            if t["question_norm"]:
                q = questions.setdefault(t["question_norm"], [0, 0, t["created_at"]])
                q[0] += 1
                q[1] += not t["grounded"]
                q[2] = max(q[2], t["created_at"])
    for r in await owner_conn.fetch("SELECT chatbot_id, created_at::date AS day, score"
                                    " FROM parley.conversation_ratings WHERE tenant_id = $1", tenant_id):
        if keep(r, r["day"]):
            summary["ratings"] += 1
            summary["rating_sum"] += r["score"]
            per_day[r["day"]][5] += 1
    for f in await owner_conn.fetch("SELECT chatbot_id, created_at::date AS day, value"
                                    " FROM parley.message_feedback WHERE tenant_id = $1", tenant_id):
        if keep(f, f["day"]):
            per_day[f["day"]][3 if f["value"] == "up" else 4] += 1
    summary["median"] = float(median(responses)) if responses else None
    top = sorted((k, a, u, last) for k, (a, u, last) in questions.items())
    return {"summary": summary, "per_day": per_day, "questions": top,
            "unanswered": [q for q in top if q[2] > 0]}


async def _served(pool, tenant_id, days: int, chatbot_id) -> dict:
    async with tenant_tx(pool, Actor(tenant_id=tenant_id, kind="service", min_role="agent")) as conn:
        s = await conn.fetchrow("SELECT * FROM parley.stats_summary($1, $2)", days, chatbot_id)
        conv = csat = await conn.fetch("SELECT * FROM parley.stats_per_day($1, $2)", days, chatbot_id)
        top = {only: sorted(tuple(r) for r in await conn.fetch(
            "SELECT * FROM parley.stats_top_questions($1, $2, 100, $3)", days, chatbot_id, only))
            for only in (False, True)}
    summary = {k: s[k] for k in ("conversations", "closed", "closed_without_human", "human_requests", "ai_turns",
                                 "ai_unanswered", "ratings")}
    summary["rating_sum"] = round(float(s["avg_rating"] or 0) * s["ratings"])
    summary["median"] = None if s["median_first_human_response_s"] is None else float(s["median_first_human_response_s"])
    per_day = {c["day"]: [c["conversations"], c["closed"], c["closed_without_human"], r["thumbs_up"],
                          r["thumbs_down"], r["ratings"]] for c, r in zip(conv, csat, strict=True)}
    return {"summary": summary, "per_day": per_day, "questions": top[False], "unanswered": top[True]}


async def _agree(owner_conn, pool, tenant, other_bot) -> None:
    for days in (7, 30, 90):
        for bot in (None, tenant.chatbot_id, other_bot):
            assert await _served(pool, tenant.id, days, bot) == await _expected(owner_conn, tenant.id, days, bot), \
                (days, bot)


async def _run_rollup(owner_conn, jobs_pool) -> None:
    await schedule.register(owner_conn)
    await owner_conn.execute("UPDATE parley.job_schedules SET next_run_at = now() - interval '1 second'"
                             " WHERE name = 'rollup_daily_stats'")
    assert await runner.run_due_jobs(jobs_pool, "test", only=["rollup_daily_stats"]) == ["rollup_daily_stats"]


async def test_rollup_answers_equal_a_count_from_scratch(settings, owner_conn):
    rng = random.Random(17)
    tenant = await make_tenant(settings, owner_conn)
    try:
        other_bot = await owner_conn.fetchval(
            "INSERT INTO parley.chatbots (tenant_id, name) VALUES ($1, 'Other') RETURNING id", tenant.id)
        await _history(owner_conn, tenant, other_bot, rng)
        app, jobs = await tenant.pool("app"), await tenant.pool("jobs")
        # Before any rollup every day is counted from the rows.
        await _agree(owner_conn, app, tenant, other_bot)

        await _run_rollup(owner_conn, jobs)
        rolled = await owner_conn.fetchval("SELECT rolled_at FROM parley.daily_stats_state WHERE tenant_id = $1",
                                           tenant.id)
        assert rolled is not None
        await _agree(owner_conn, app, tenant, other_bot)

        # The finished days are served from the rollup: a figure changed there shows in the answer.
        day = await owner_conn.fetchval(
            "SELECT day FROM parley.daily_stats WHERE tenant_id = $1 AND day < current_date AND conversations > 0"
            " ORDER BY day LIMIT 1", tenant.id)
        await owner_conn.execute("UPDATE parley.daily_stats SET conversations = conversations + 1000"
                                 " WHERE tenant_id = $1 AND day = $2", tenant.id, day)
        served = await _served(app, tenant.id, 90, None)
        assert served["summary"]["conversations"] == (await _expected(owner_conn, tenant.id, 90, None))[
            "summary"]["conversations"] + 1000
        await owner_conn.execute("UPDATE parley.daily_stats SET conversations = conversations - 1000"
                                 " WHERE tenant_id = $1 AND day = $2", tenant.id, day)
        qday = await owner_conn.fetchval("SELECT max(day) FROM parley.daily_questions WHERE tenant_id = $1"
                                         " AND day < current_date", tenant.id)
        await owner_conn.execute("UPDATE parley.daily_questions SET asked = asked + 1000 WHERE tenant_id = $1"
                                 " AND day = $2", tenant.id, qday)
        served = await _served(app, tenant.id, 90, None)
        assert max(q[1] for q in served["questions"]) > 1000
        await owner_conn.execute("UPDATE parley.daily_questions SET asked = asked - 1000 WHERE tenant_id = $1"
                                 " AND day = $2", tenant.id, qday)
        computed = dict(await owner_conn.fetch("SELECT DISTINCT day, computed_at FROM parley.daily_stats"
                                               " WHERE tenant_id = $1", tenant.id))

        # Old days change after the run: an old conversation closed, another asks for a human and
        # is answered, a rating today. The next (incremental) run puts the rollup right again.
        old_open = await owner_conn.fetchval(
            "SELECT id FROM parley.conversations WHERE tenant_id = $1 AND status <> 'closed'"
            " AND created_at < current_date - 3 ORDER BY created_at LIMIT 1", tenant.id)
        await owner_conn.execute("UPDATE parley.conversations SET status = 'closed', closed_at = now(),"
                                 " last_activity_at = now() WHERE tenant_id = $1 AND id = $2", tenant.id, old_open)
        asked = await owner_conn.fetchval(
            "SELECT c.id FROM parley.conversations c WHERE c.tenant_id = $1 AND c.id <> $2"
            " AND c.created_at < current_date - 3 AND NOT EXISTS (SELECT 1 FROM parley.events e"
            "   WHERE e.tenant_id = c.tenant_id AND e.conversation_id = c.id) ORDER BY c.created_at DESC LIMIT 1",
            tenant.id, old_open)
        await owner_conn.execute("INSERT INTO parley.events (tenant_id, at, kind, conversation_id, actor_kind)"
                                 " VALUES ($1, now() - interval '5 minutes', 'human_requested', $2, 'system')",
                                 tenant.id, asked)
        await owner_conn.execute("INSERT INTO parley.messages (tenant_id, conversation_id, author, body)"
                                 " VALUES ($1, $2, 'agent', 'here')", tenant.id, asked)
        await owner_conn.execute("UPDATE parley.conversations SET last_activity_at = now()"
                                 " WHERE tenant_id = $1 AND id = $2", tenant.id, asked)
        await owner_conn.execute(
            "INSERT INTO parley.conversation_ratings (tenant_id, conversation_id, chatbot_id, score)"
            " SELECT tenant_id, id, chatbot_id, 2 FROM parley.conversations WHERE tenant_id = $1 AND id = $2"
            " ON CONFLICT DO NOTHING", tenant.id, asked)
        await _run_rollup(owner_conn, jobs)
        await _agree(owner_conn, app, tenant, other_bot)
        # Incremental: besides the days since the last run, the run rewrote only the days of the
        # conversations that changed.
        today = await owner_conn.fetchval("SELECT current_date")
        touched = {r["day"] for r in await owner_conn.fetch(
            "SELECT created_at::date AS day FROM parley.conversations WHERE tenant_id = $1 AND id = ANY ($2)",
            tenant.id, [old_open, asked])}
        rewritten = {r["day"] for r in await owner_conn.fetch(
            "SELECT day, computed_at FROM parley.daily_stats WHERE tenant_id = $1", tenant.id)
            if computed.get(r["day"]) != r["computed_at"]}
        recent = {today, today - timedelta(days=1)}
        assert rewritten - recent == touched - recent and touched - recent
    finally:
        await tenant.close()
