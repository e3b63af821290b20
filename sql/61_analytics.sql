-- Analyst views (schema analytics, owned by parley_reporting, across tenants): nothing else
-- lives here.
-- Analysts see counts, scores, timings and the normalised question text; never message
-- bodies, comments, visitor addresses, lead details or knowledge content.

GRANT SELECT ON parley.conversations, parley.events, parley.assistant_turns, parley.conversation_ratings,
  parley.message_feedback, parley.daily_stats, parley.chatbots TO parley_reporting;
GRANT SELECT (tenant_id, id, conversation_id, author, created_at) ON parley.messages TO parley_reporting;

SELECT parley.ensure_view('analytics.conversations_daily', 'security_barrier = true', 'parley_reporting', $$
  SELECT c.tenant_id, c.chatbot_id, c.created_at::date AS day, count(*) AS conversations,
         count(*) FILTER (WHERE c.status = 'closed') AS closed,
         count(*) FILTER (WHERE c.status = 'closed' AND NOT EXISTS (
           SELECT 1 FROM parley.events e WHERE e.tenant_id = c.tenant_id AND e.conversation_id = c.id
              AND e.kind IN ('human_requested', 'claimed', 'assigned'))) AS closed_without_human
    FROM parley.conversations c
   WHERE EXISTS (SELECT 1 FROM parley.messages m
                  WHERE m.tenant_id = c.tenant_id AND m.conversation_id = c.id AND m.author = 'visitor')
   GROUP BY 1, 2, 3$$);
COMMENT ON VIEW analytics.conversations_daily IS 'Conversations in which the visitor said something, per tenant, chatbot and day (of the conversation''s start), with closed and closed-without-a-human counts.';

SELECT parley.ensure_view('analytics.questions', 'security_barrier = true', 'parley_reporting', $$
  SELECT t.tenant_id, t.chatbot_id, t.created_at::date AS day, t.question_norm AS question,
         count(*) AS asked, count(*) FILTER (WHERE NOT t.grounded) AS unanswered
    FROM parley.assistant_turns t
   WHERE t.outcome IN ('answered', 'unknown') AND t.question_norm <> ''
   GROUP BY 1, 2, 3, 4$$);
COMMENT ON VIEW analytics.questions IS 'Normalised visitor questions per day with how often the bot found no grounding (top and unanswered questions).';

SELECT parley.ensure_view('analytics.csat_daily', 'security_barrier = true', 'parley_reporting', $$
  SELECT s.tenant_id, s.chatbot_id, s.day, s.ratings,
         round(s.rating_sum::numeric / nullif(s.ratings, 0), 2) AS avg_score, s.thumbs_up, s.thumbs_down
    FROM parley.daily_stats s$$);
COMMENT ON VIEW analytics.csat_daily IS 'Ratings (count, average 1-5) and thumbs per tenant, chatbot and day, from the daily rollup.';

SELECT parley.ensure_view('analytics.ai_resolution_daily', 'security_barrier = true', 'parley_reporting', $$
  SELECT s.tenant_id, s.chatbot_id, s.day, s.closed, s.closed_without_human,
         round(s.closed_without_human::numeric / nullif(s.closed, 0), 3) AS ai_resolution_rate,
         s.ai_turns, s.ai_unanswered
    FROM parley.daily_stats s$$);
COMMENT ON VIEW analytics.ai_resolution_daily IS 'AI resolution (closed without a human / closed) and assistant turns per tenant, chatbot and day, from the daily rollup.';

SELECT parley.ensure_view('analytics.first_human_response', 'security_barrier = true', 'parley_reporting', $$
  SELECT r.tenant_id, c.chatbot_id, r.conversation_id, r.requested_at,
         extract(epoch FROM (SELECT min(m.created_at) FROM parley.messages m
                              WHERE m.tenant_id = r.tenant_id AND m.conversation_id = r.conversation_id
                                AND m.author = 'agent' AND m.created_at >= r.requested_at) - r.requested_at)
           AS first_response_s
    FROM (SELECT e.tenant_id, e.conversation_id, min(e.at) AS requested_at FROM parley.events e
           WHERE e.kind = 'human_requested' GROUP BY 1, 2) r
    JOIN parley.conversations c ON c.tenant_id = r.tenant_id AND c.id = r.conversation_id$$);
COMMENT ON VIEW analytics.first_human_response IS 'Per conversation that asked for a human: when, and seconds until the first agent reply (NULL while unanswered). Median: percentile_cont(0.5).';

GRANT SELECT ON analytics.conversations_daily, analytics.questions, analytics.csat_daily,
  analytics.ai_resolution_daily, analytics.first_human_response TO parley_analyst;
