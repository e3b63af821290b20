-- Analytics for the days the rollup does not hold yet (issue 17, finding 9: 115-254 ms with the
-- rollup a day behind) read one row per conversation: what the day figures need from the
-- conversation's events and agent messages is kept on the conversation itself, written by
-- triggers (sql/60_statistics.sql), instead of three lookups per conversation on every call.
--   human_at              first human_requested / claimed / assigned event (a human was involved)
--   human_requested_at    first human_requested event
--   first_human_reply_at  first agent message at or after human_requested_at
-- depends: 0029.system_texts

ALTER TABLE parley.conversations
  ADD COLUMN human_at timestamptz,
  ADD COLUMN human_requested_at timestamptz,
  ADD COLUMN first_human_reply_at timestamptz;

-- Existing conversations, from their events and messages (as the owner: RLS is lifted for this
-- transaction only, the table is forced again before it commits).
ALTER TABLE parley.conversations NO FORCE ROW LEVEL SECURITY;
UPDATE parley.conversations c
   SET human_at = e.human_at, human_requested_at = e.requested_at
  FROM (SELECT tenant_id, conversation_id, min(at) AS human_at,
               min(at) FILTER (WHERE kind = 'human_requested') AS requested_at
          FROM parley.events WHERE kind IN ('human_requested', 'claimed', 'assigned')
         GROUP BY tenant_id, conversation_id) e
 WHERE c.tenant_id = e.tenant_id AND c.id = e.conversation_id;
UPDATE parley.conversations c
   SET first_human_reply_at = (SELECT min(m.created_at) FROM parley.messages m
                                WHERE m.tenant_id = c.tenant_id AND m.conversation_id = c.id
                                  AND m.author = 'agent' AND m.created_at >= c.human_requested_at)
 WHERE c.human_requested_at IS NOT NULL;
ALTER TABLE parley.conversations FORCE ROW LEVEL SECURITY;
