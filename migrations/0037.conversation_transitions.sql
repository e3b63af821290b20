-- The conversation state machine as data (issue 11: one home per rule): one row per transition
-- a member or the visitor asks for by name (request a human, claim, assign, release, close,
-- reopen), read by the one function that applies them, parley.transition_conversation. The rows
-- are seeded by sql/41_conversations.sql on every migrate, where the rules that read them live.
-- depends: 0033.conversation_actions

-- Product data, the same for every tenant (a reference table, like conversation_action_catalog).
CREATE TABLE parley.conversation_transitions (
  name           text PRIMARY KEY CHECK (name ~ '^[a-z][a-z_]{1,31}$'),
  from_states    text[] NOT NULL,   -- the statuses it leaves; any other: 409 invalid_transition
  to_status      text NOT NULL CHECK (to_status IN ('bot', 'waiting_human', 'human', 'closed')),
  assignee       text NOT NULL CHECK (assignee IN ('kept', 'none', 'actor', 'member')),
                                    -- kept; none; the acting person; the member the caller names
  event          text NOT NULL,     -- the event it writes
  staff_only     boolean NOT NULL,  -- members only (parley.require_staff), not the visitor
  needs_person   boolean NOT NULL,  -- a signed-in person, not an API key
  assignee_only  boolean NOT NULL,  -- an assigned conversation: its assignee or an admin
  counts_seat    boolean NOT NULL,  -- the acting person counts as an active seat today
  repeat_is_noop boolean NOT NULL,  -- already in to_status with that assignee: returned unchanged
  refusal        text NOT NULL      -- the 409 message from any other status (%s: that status)
);
