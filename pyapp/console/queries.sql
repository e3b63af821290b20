-- The console's reads, one per page need. Each runs inside the page's tenant
-- transaction as parley_app: RLS scopes every table to the tenant, so none of them
-- filters by tenant itself. Writes go through SQL functions (sql/4x, sql/70_console.sql).

-- name: inbox_counts
-- Badge counts for the inbox tabs and the navigation: per tab, plus conversations with unread visitor messages.
SELECT count(*) FILTER (WHERE c.status <> 'closed' AND c.assignee_id IS NULL AND r.user_id IS NULL) AS new,
       count(*) FILTER (WHERE c.status = 'waiting_human') AS waiting,
       count(*) FILTER (WHERE c.status <> 'closed' AND c.assignee_id = parley.current_user_id()) AS mine,
       count(*) FILTER (WHERE c.status <> 'closed') AS "all",
       count(*) FILTER (WHERE c.status <> 'closed' AND EXISTS (
         SELECT 1 FROM parley.messages m
          WHERE m.tenant_id = c.tenant_id AND m.conversation_id = c.id AND m.author = 'visitor'
            AND m.id > coalesce(r.last_read_message_id, 0))) AS unread
  FROM parley.conversations c
  LEFT JOIN parley.conversation_reads r
    ON r.tenant_id = c.tenant_id AND r.conversation_id = c.id AND r.user_id = parley.current_user_id()
 WHERE c.status <> 'closed';

-- name: inbox_closed_count
-- How many conversations are closed (the closed tab's badge; separate so the open counts stay cheap).
SELECT count(*) FROM parley.conversations WHERE status = 'closed';

-- name: inbox_list
-- One inbox tab (parley.inbox_conversations: $1 status, 'open' or 'new', $2 assignee or NULL), newest activity first, with the last visible message and unread flag; $3 = search text or NULL (the messages by parley.search_inbox, as the REST inbox, or the lead's name or email), $4 = limit.
SELECT c.id, c.chatbot_id, b.name AS chatbot_name, c.status, c.assignee_id,
       coalesce(nullif(u.name, ''), u.email) AS assignee_name,
       c.visitor_id, c.page_url, c.locale, c.country, c.created_at, c.last_activity_at, c.closed_at,
       lm.id AS last_message_id, lm.author AS last_author, left(lm.body, 200) AS last_body,
       l.name AS lead_name, l.email AS lead_email,
       EXISTS (SELECT 1 FROM parley.messages m
                WHERE m.tenant_id = c.tenant_id AND m.conversation_id = c.id AND m.author = 'visitor'
                  AND m.id > coalesce(r.last_read_message_id, 0)) AS unread
  FROM parley.inbox_conversations($1::text, $2::uuid) c
  JOIN parley.chatbots b ON b.tenant_id = c.tenant_id AND b.id = c.chatbot_id
  LEFT JOIN parley.users u ON u.id = c.assignee_id
  LEFT JOIN parley.leads l ON l.tenant_id = c.tenant_id AND l.conversation_id = c.id
  LEFT JOIN parley.conversation_reads r
    ON r.tenant_id = c.tenant_id AND r.conversation_id = c.id AND r.user_id = parley.current_user_id()
  LEFT JOIN LATERAL (
    SELECT m.id, m.author, m.body FROM parley.messages m
     WHERE m.tenant_id = c.tenant_id AND m.conversation_id = c.id AND m.author <> 'note'
     ORDER BY m.id DESC LIMIT 1) lm ON true
 WHERE $3::text IS NULL
    OR c.id IN (SELECT unnest(parley.search_inbox($3::text, $4::int, $1::text, $2::uuid)))
    OR l.email ILIKE '%' || $3::text || '%' OR l.name ILIKE '%' || $3::text || '%'
 ORDER BY c.last_activity_at DESC, c.id
 LIMIT $4;

-- name: conversation
-- One conversation with its chatbot, assignee, visitor details and lead, for the conversation pane.
SELECT c.id, c.chatbot_id, b.name AS chatbot_name, c.status, c.assignee_id,
       coalesce(nullif(u.name, ''), u.email) AS assignee_name,
       c.visitor_id, c.page_url, c.referrer, c.user_agent, c.locale, c.country, c.created_at,
       c.last_activity_at, c.closed_at, c.bot_misses, c.codename,
       l.id AS lead_id, l.name AS lead_name, l.email AS lead_email, l.phone AS lead_phone,
       l.custom AS lead_custom, l.status AS lead_status,
       r.last_read_message_id
  FROM parley.conversations c
  JOIN parley.chatbots b ON b.tenant_id = c.tenant_id AND b.id = c.chatbot_id
  LEFT JOIN parley.users u ON u.id = c.assignee_id
  LEFT JOIN parley.leads l ON l.tenant_id = c.tenant_id AND l.conversation_id = c.id
  LEFT JOIN parley.conversation_reads r
    ON r.tenant_id = c.tenant_id AND r.conversation_id = c.id AND r.user_id = parley.current_user_id()
 WHERE c.id = $1;

-- name: transcript
-- Messages of a conversation after id $2 (0 = from the start), private notes included, with the author's display name.
SELECT m.id, m.created_at, m.author, m.author_id, m.body, m.meta,
       CASE WHEN m.author IN ('agent', 'note') THEN coalesce(nullif(u.name, ''), u.email)
            WHEN m.author = 'bot' THEN b.name END AS author_name
  FROM parley.messages m
  JOIN parley.conversations c ON c.tenant_id = m.tenant_id AND c.id = m.conversation_id
  JOIN parley.chatbots b ON b.tenant_id = c.tenant_id AND b.id = c.chatbot_id
  LEFT JOIN parley.users u ON u.id = m.author_id
 WHERE m.conversation_id = $1 AND m.id > $2
 ORDER BY m.id
 LIMIT 1000;

-- name: members
-- Members of the workspace with their name, email and role, for assignment and the team page.
SELECT m.user_id, u.email, u.name, coalesce(nullif(u.name, ''), u.email) AS display_name, m.role, m.created_at
  FROM parley.members m JOIN parley.users u ON u.id = m.user_id
 ORDER BY parley.role_rank(m.role) DESC, lower(u.email);

-- name: me
-- The signed-in person (name and email) for the header.
SELECT id, email, name FROM parley.users WHERE id = parley.current_user_id();

-- name: canned_replies
-- The workspace's canned replies, by shortcut.
SELECT id, shortcut, body, created_by, updated_at FROM parley.canned_replies ORDER BY shortcut;

-- name: canned_reply
-- One canned reply for the edit form.
SELECT id, shortcut, body FROM parley.canned_replies WHERE id = $1;

-- name: chatbots
-- The workspace's chatbots (not deleted), for filters and pickers.
SELECT id, name, public_key, allowed_origins, config, created_at, updated_at
  FROM parley.chatbots WHERE deleted_at IS NULL ORDER BY created_at;

-- name: other_visitor_conversations
-- The open conversation's visitor's other conversations with the same chatbot ($1: the conversation).
SELECT * FROM parley.other_visitor_conversations($1);

-- name: chatbot_templates
-- The chatbot templates (key, title, description, config) in display order.
SELECT * FROM parley.list_chatbot_templates();

-- name: chatbot
-- One chatbot (not deleted).
SELECT id, name, public_key, allowed_origins, config, created_at, updated_at
  FROM parley.chatbots WHERE id = $1 AND deleted_at IS NULL;

-- name: leads
-- Leads filtered by search text ($1: name, email, phone), status ($2), chatbot ($3), created from ($4) / before ($5); newest first, limit $6.
SELECT l.id, l.chatbot_id, b.name AS chatbot_name, l.conversation_id, l.name, l.email, l.phone, l.custom,
       l.status, l.created_at, l.updated_at
  FROM parley.leads l
  LEFT JOIN parley.chatbots b ON b.tenant_id = l.tenant_id AND b.id = l.chatbot_id
 WHERE ($1::text IS NULL OR l.name ILIKE '%' || $1::text || '%' OR l.email ILIKE '%' || $1::text || '%'
        OR l.phone ILIKE '%' || $1::text || '%')
   AND ($2::text IS NULL OR l.status = $2::text)
   AND ($3::uuid IS NULL OR l.chatbot_id = $3::uuid)
   AND ($4::timestamptz IS NULL OR l.created_at >= $4::timestamptz)
   AND ($5::timestamptz IS NULL OR l.created_at < $5::timestamptz)
 ORDER BY l.created_at DESC
 LIMIT $6;

-- name: lead_status_counts
-- How many leads are in each status (the workflow summary above the table).
SELECT status, count(*) AS n FROM parley.leads GROUP BY status;

-- name: audit_actions
-- Distinct audit action names of the workspace, for the filter menu.
SELECT DISTINCT action FROM parley.audit_log ORDER BY action LIMIT 200;

-- name: invites
-- Pending (not accepted, not revoked, not expired) invitations.
SELECT id, email, role, invited_by, created_at, expires_at
  FROM parley.invites
 WHERE accepted_at IS NULL AND revoked_at IS NULL AND expires_at > now()
 ORDER BY created_at DESC;

-- name: api_keys
-- API keys of the workspace (never the hash), newest first.
SELECT k.id, k.name, k.prefix, k.scopes, k.created_at, k.last_used_at, k.expires_at, k.revoked_at,
       coalesce(nullif(u.name, ''), u.email) AS created_by_name
  FROM parley.api_keys k LEFT JOIN parley.users u ON u.id = k.created_by
 ORDER BY k.revoked_at IS NOT NULL, k.created_at DESC;

-- name: usage_30_days
-- Daily usage of the last 30 days (UTC), newest first, from the sharded counters.
SELECT day, messages, ai_messages, conversations, active_seats
  FROM parley.usage_by_day
 WHERE day >= current_date - 30
 ORDER BY day DESC;

-- name: knowledge_sources
-- Knowledge sources with status, progress, document and chunk counts and the last import, newest first: a chatbot's ($1), or one source ($2: progress polling, finding its chatbot).
SELECT s.id, s.chatbot_id, s.kind, s.title, s.url, s.filename, s.status, s.progress, s.error,
       s.created_at, s.updated_at, s.last_imported_at,
       n.documents, n.chunks, n.chunks_embedded, cardinality(s.frontier) AS pages_left
  FROM parley.knowledge_sources s CROSS JOIN LATERAL parley.knowledge_source_counts(s.tenant_id, s.id) n
 WHERE s.chatbot_id = $1::uuid OR s.id = $2::uuid
 ORDER BY s.created_at DESC;

-- name: first_response_per_day
-- Per day of the last $1 days (chatbot $2 or all): median seconds from a human request to the first agent reply, and how many requests.
WITH days AS (
  SELECT d::date AS day FROM generate_series(current_date - ($1::int - 1), current_date, interval '1 day') d),
req AS (
  SELECT e.conversation_id, min(e.at) AS requested_at
    FROM parley.events e
    JOIN parley.conversations c ON c.tenant_id = e.tenant_id AND c.id = e.conversation_id
   WHERE e.kind = 'human_requested' AND e.at >= current_date - ($1::int - 1)
     AND ($2::uuid IS NULL OR c.chatbot_id = $2::uuid)
   GROUP BY e.conversation_id),
resp AS (
  SELECT req.requested_at::date AS day,
         extract(epoch FROM (SELECT min(m.created_at) FROM parley.messages m
                              WHERE m.conversation_id = req.conversation_id AND m.author = 'agent'
                                AND m.created_at >= req.requested_at) - req.requested_at) AS s
    FROM req)
SELECT d.day,
       (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY r.s) FROM resp r WHERE r.day = d.day AND r.s IS NOT NULL) AS median_s,
       (SELECT count(*) FROM resp r WHERE r.day = d.day) AS requests
  FROM days d
 ORDER BY d.day;

-- name: question_conversations
-- Conversations in which the normalised question $1 was asked in the last $2 days (chatbot $3 or all), newest first.
SELECT t.conversation_id, max(t.created_at) AS asked_at, count(*) AS times,
       bool_or(NOT t.grounded) AS unanswered, c.status
  FROM parley.assistant_turns t
  JOIN parley.conversations c ON c.tenant_id = t.tenant_id AND c.id = t.conversation_id
 WHERE t.question_norm = $1 AND t.created_at >= now() - make_interval(days => $2::int)
   AND ($3::uuid IS NULL OR t.chatbot_id = $3::uuid)
 GROUP BY t.conversation_id, c.status
 ORDER BY max(t.created_at) DESC
 LIMIT 100;
